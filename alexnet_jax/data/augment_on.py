"""Where the paper's augmentation and test crops run (config.input.augment_on): the one owner of
that choice.

'host': numpy in the Grain workers (preprocessing.py, pipeline.py); 'device': JAX inside the
jitted steps (device_preprocessing.py), the workers only decode; 'auto': the device on an
accelerator, where decoding alone keeps the host's cores busy, and the host on a CPU, where the
same cores run both: there the two paths measured level end to end, each feeding the step as
fast as synthetic batches within the VM's noise, and every CPU result in the docs was measured
on the host path (docs/input_pipeline.md).

A run resolves it once (`on_device`, in train.py and evaluation.py) and hands the answer to
everything that depends on it: the training and evaluation loaders (what a batch holds) and
the jitted steps (whether they crop and augment). Those take the answer as an argument; where a
caller passes none (a test, a benchmark), they ask `on_device` themselves, so every part of a
run reads the same resolution.
"""
import jax

from alexnet_jax.errors import UserError

CHOICES = ('auto', 'device', 'host')


def resolve(value: str, platform: str) -> str:
  """'device' or 'host' for a config.input.augment_on value on a backend ('cpu', 'gpu', 'tpu')."""
  if value not in CHOICES:
    raise UserError(f"config.input.augment_on must be one of {', '.join(CHOICES)}, got "
                    f'{value!r}')
  if value != 'auto':
    return value
  return 'host' if platform == 'cpu' else 'device'


def on_device(config, platform: str | None = None) -> bool:
  """Whether config.input.augment_on puts the augmentation on the device on this backend
  (platform: default jax.default_backend(), this process's)."""
  return resolve(config.input.augment_on, platform or jax.default_backend()) == 'device'
