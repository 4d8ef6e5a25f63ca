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
backward pass reduce-scatters the input gradients of those same layers (each device sums and
keeps its own half: as many bytes as the forward gather, the paper's exchange in theory).

conv3 and the FC layers run under shard_map with their input gathered inside (an explicit
all_gather, whose transpose is the reduce-scatter), and so do the grouped convolutions over the
group axis: every device runs the same
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
  # A one-device mesh is run as no mesh: shard_map over axes of size 1 would still compile its
  # collectives (each a copy on one device: the gradients' all-reduce alone copies every
  # parameter's gradient each step) for the same values.
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or mesh.size == 1 else mesh


def constrain(x: jax.Array, role: str) -> jax.Array:
  """Pins an activation to its role's layout when a mesh is in context; else returns x."""
  if _context_mesh() is None:
    return x
  return jax.lax.with_sharding_constraint(x, ACTIVATION_RULES[role])


def _gathered(fn: Callable[..., jax.Array], axis: int) -> Callable[..., jax.Array]:
  """fn with its first argument all-gathered over 'model' along `axis` first: each device
  receives the other's half (the paper's exchange, section 3.2). The transpose of a tiled
  all_gather is psum_scatter, so backward each device sums and keeps only the input gradient
  of its own half: a reduce-scatter, the same bytes as the forward gather, where the
  gather that GSPMD inserts for a constrained layout would all-reduce the whole gradient."""
  def gathered(x, *args):
    return fn(jax.lax.all_gather(x, 'model', axis=axis, tiled=True), *args)
  return gathered


def per_group(fn: Callable[..., jax.Array], layout: str) -> Callable[..., jax.Array]:
  """fn(x, kernel_GxKxKxIxO, bias_GxO) run on each device's own groups; the result is 'grouped'.

  layout 'grouped': x is G x B x ... and group g sees only x[g] (conv2, conv4, conv5);
  'shared': x is 'batch' (B x ...), every group sees all of it (conv1, on the image);
  'gathered': x is 'grouped' and every group sees all of it, so fn receives the whole
  G x B x ... gathered over 'model' (the paper's conv3 exchange).
  """
  if _context_mesh() is None:
    return fn
  if layout == 'gathered':
    fn = _gathered(fn, axis=0)
  x_spec = ACTIVATION_RULES['batch' if layout == 'shared' else 'grouped']
  return jax.shard_map(fn, in_specs=(x_spec, P('model'), P('model')),
                       out_specs=ACTIVATION_RULES['grouped'])


def split_units(fn: Callable[..., jax.Array], input_role: str, kernel_name: str,
                kernel_shape: tuple[int, ...], n_extra: int = 0) -> Callable[..., jax.Array]:
  """fn(x, kernel, bias, *extras) of an FC layer run on each device's own output units (the
  paper's split of fc6-fc8, section 3.2): x ('grouped' pool5, or 'units' of the layer below)
  is gathered whole over 'model' inside, the kernel's columns and the bias are this device's
  (PARAM_RULES), each extra (a dropout mask of the gathered input) is split over 'data' only.
  The result is 'units'. A kernel that PARAM_RULES keeps whole (classes that do not split
  evenly) runs fn on the whole layer everywhere, its result 'batch'."""
  mesh = _context_mesh()
  if mesh is None:
    return fn
  kernel_spec = param_spec(kernel_name, kernel_shape, mesh)
  if kernel_spec == P():
    return lambda *args: constrain(fn(*args), 'batch')
  x_spec = ACTIVATION_RULES[input_role]
  gather_axis = 0 if input_role == 'grouped' else 1
  return jax.shard_map(_gathered(fn, gather_axis),
                       in_specs=(x_spec, kernel_spec, P('model'), *[P('data')] * n_extra),
                       out_specs=ACTIVATION_RULES['units'])
