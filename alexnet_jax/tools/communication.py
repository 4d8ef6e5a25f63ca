r"""What crosses the 'model' axis per training step, against the paper's split in theory.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m alexnet_jax.tools.communication \
      [--batch=128] [--image_size=227] [--width=1.0]

Compiles train.jit_train_step on a (data=1, model=2) mesh and prints every collective of the
optimized HLO with its bytes, beside the exchange the paper's split needs in theory (each device
sends the half of an activation it computed, and the gradient back).
"""
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import collectives
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.model import alexnet
from alexnet_jax.tools import cli

_BATCH = flags.DEFINE_integer('batch', 128, 'Global batch (the paper: 128).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 227, 'Input crop size.')
_WIDTH = flags.DEFINE_float('width', 1.0, 'Channel multiplier (1.0: the paper\'s net).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Classes.')


def compiled_step_hlo(model, batch: int, image_size: int, mesh) -> str:
  """The optimized HLO text of the paper's SGD step of `model` on `mesh` (shapes only: nothing
  is allocated)."""
  opt = ml_collections.ConfigDict(dict(name='sgd', lr=0.01, momentum=0.9, weight_decay=5e-4,
                                       schedule='constant', lr_scaling='none'))
  with jax.set_mesh(mesh):
    state = jax.eval_shape(lambda: train.create_train_state(
        model, optim.create_optimizer(opt, 1, 1), jax.random.PRNGKey(0), image_size, mesh))
    batch_shapes = {'image': jax.ShapeDtypeStruct((batch, image_size, image_size, 3),
                                                  jnp.float32),
                    'label': jax.ShapeDtypeStruct((batch,), jnp.int32)}
    return train.jit_train_step(state, mesh).lower(state, batch_shapes).compile().as_text()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if jax.device_count() < 2:
    print('error: needs 2 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=2',
          file=sys.stderr)
    sys.exit(2)
  batch, image_size = _BATCH.value, _IMAGE_SIZE.value
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': 1, 'model': 2}),
                              jax.devices()[:2])
  model = alexnet.AlexNet(width=_WIDTH.value, num_classes=_NUM_CLASSES.value)
  hlo = compiled_step_hlo(model, batch, image_size, mesh)
  print(f'train step, batch {batch}, {image_size}px, mesh data=1 x model=2, float32')
  # A reduce-scatter's elements are its input's (each device keeps 1/n of the sum).
  print(f'{"collective":<14}{"elements":>14}{"MB sent/device":>16}  op')
  total = 0.0
  for c in collectives.collectives(hlo):
    if c.group_size < 2:
      continue
    total += c.bytes_sent_per_device()
    print(f'{c.kind:<14}{sum(c.input_elements()):>14,}{c.bytes_sent_per_device() / 1e6:>16.3f}  '
          f'{c.op_name[-60:]}')
  theory = 0.0
  print('\nthe paper\'s split, in theory (each device sends the half it computed):')
  for name, n in collectives.paper_exchange(model, batch, image_size).items():
    directions = 1 if name.startswith('logits') else 2  # activations forward, gradients back
    sent = n / 2 * 4 * directions
    theory += sent
    print(f'  {name:<24}{n:>12,} elements x {directions} -> {sent / 1e6:9.3f} MB')
  print(f'\ncompiled step: {total / 1e6:.3f} MB sent per device per step; '
        f'theory: {theory / 1e6:.3f} MB; ratio {total / theory:.2f}')


if __name__ == '__main__':
  cli.run(main)
