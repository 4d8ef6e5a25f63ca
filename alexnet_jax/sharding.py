"""The paper's two-GPU split (section 3.2) and data parallelism, with jax.sharding.

A 2-D mesh ('data', 'model'): the batch is split over 'data'; the paper's two channel groups
are split over 'model'. One table says where every parameter lives, one where every activation
lives; the model only names an activation's role, and with no mesh in context nothing changes.

With model=2 (the paper): each device holds one half of conv1, conv2, conv4, conv5 (their
leading group axis), runs its own LRNs (or batch norms: its group's channels, statistics over
the global batch) and pools, and holds half of the output units of conv3 (192+192) and of fc6,
fc7, fc8 (2048+2048, and half the classes). Activations cross the
'model' axis only where the paper's GPUs talked: conv3 and fc6 gather both halves of their
input, fc7 and fc8 the other device's units, and the logits are gathered for the loss; the
backward pass sums the input gradients of those same layers.

The grouped convolutions run under shard_map over the group axis: every device runs the same
code on the groups it holds (one with model=2, both with model=1), so a convolution can never
reach into the other half, and each device runs plain convolutions (XLA's feature_group_count
backward is a slow path on CPU).
"""
import re
from typing import Any, Callable

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from alexnet_jax.errors import UserError

MESH_AXES = ('data', 'model')

# Where each parameter lives: the first rule whose pattern matches the parameter's path
# ('conv1/kernel', ...; optimizer state leaves end in the same path) wins.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r'conv\d/(kernel|bias)$', P('model')),  # leading group axis: one half per device
    # Batch norm (model.norm): scale, bias and running mean / var are G x C/G, one group each.
    (r'bn\d/(scale|bias|mean|var)$', P('model')),
    (r'fc\d/kernel$', P(None, 'model')),  # output units split: 2048 + 2048
    (r'fc\d/bias$', P('model')),
    (r'.*', P()),  # step, rng, learning rate: replicated
)

# Where each activation lives, by role.
ACTIVATION_RULES: dict[str, P] = {
    'batch': P('data'),  # images, labels, per-example values: split over 'data' only
    'grouped': P('model', 'data'),  # G x B x H x W x C/G: each group on its own device
    'units': P('data', 'model'),  # B x N outputs of conv3 / an FC layer: units split
}


def create_mesh(mesh_config, devices=None) -> Mesh:
  """A ('data', 'model') mesh; mesh_config.data = -1 takes all the devices 'model' leaves."""
  devices = jax.devices() if devices is None else devices
  model = mesh_config.model
  if model < 1 or len(devices) % model:
    raise UserError(f'config.mesh.model={model} does not divide the {len(devices)} devices')
  data = mesh_config.data if mesh_config.data > 0 else len(devices) // model
  if data * model != len(devices):
    raise UserError(f'config.mesh data={mesh_config.data} x model={model} does not match the '
                    f'{len(devices)} devices')
  grid = np.asarray(devices).reshape(data, model)
  return Mesh(grid, MESH_AXES)


def path_name(path) -> str:
  """'conv1/kernel' from a pytree key path (dict keys, attributes and indices alike)."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P:
  """The table's spec for a parameter, replicated where a split would not be even."""
  for pattern, spec in PARAM_RULES:
    if re.search(pattern, name):
      break
  for dim, axis in enumerate(spec):
    if axis is not None and (dim >= len(shape) or shape[dim] % mesh.shape[axis]):
      return P()  # e.g. 7 classes over 2 devices: keep fc8 whole on each
  return spec


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a pytree of params / train state, from PARAM_RULES."""
  def sharding(path, leaf):
    return NamedSharding(mesh, param_spec(path_name(path), np.shape(leaf), mesh))
  return jax.tree_util.tree_map_with_path(sharding, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, ACTIVATION_RULES['batch'])


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's part of a batch -> one global array per key, split over 'data'."""
  placement = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(placement, v)
          for k, v in local_batch.items()}


class BoundArgument:
  """A jitted f(state, batch, extra) called, and lowered, as f(state, batch): the extra
  argument (device augmentation's statistics) is placed once and passed on every call."""

  def __init__(self, jitted, extra):
    self.jitted, self.extra = jitted, extra

  @classmethod
  def jit(cls, fn, mesh: Mesh, in_shardings: tuple, extra, **jit_kwargs) -> 'BoundArgument':
    """fn(state, batch, extra) jitted with in_shardings for (state, batch) and `extra`
    replicated on every device of the mesh."""
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(fn, in_shardings=(*in_shardings, replicated), **jit_kwargs)
    return cls(jitted, jax.device_put(extra, replicated))

  def __call__(self, state, batch):
    return self.jitted(state, batch, self.extra)

  def lower(self, state, batch):
    return self.jitted.lower(state, batch, self.extra)


def _context_mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def constrain(x: jax.Array, role: str) -> jax.Array:
  """Pins an activation to its role's layout when a mesh is in context; else returns x."""
  if _context_mesh() is None:
    return x
  return jax.lax.with_sharding_constraint(x, ACTIVATION_RULES[role])


def per_group(fn: Callable[..., jax.Array], shared_input: bool) -> Callable[..., jax.Array]:
  """fn(x, kernel_GxKxKxIxO, bias_GxO) run on each device's own groups.

  x is 'grouped' (G x B x ...) or, with shared_input, 'batch' (B x ..., every group sees all of
  it, so a split input is gathered first: the paper's conv3 exchange). The result is 'grouped'.
  """
  if _context_mesh() is None:
    return fn
  x_spec = ACTIVATION_RULES['batch'] if shared_input else ACTIVATION_RULES['grouped']
  return jax.shard_map(fn, in_specs=(x_spec, P('model'), P('model')),
                       out_specs=ACTIVATION_RULES['grouped'])


def check_batch(global_batch: int, mesh: Mesh, what: str = 'config.train.batch_size') -> None:
  data = mesh.shape['data']
  if global_batch % data:
    raise UserError(f'{what}={global_batch} does not divide over the {data} devices of the '
                    "mesh's 'data' axis")
