"""Every config key's type and range, checked at start-up: a bad value is one error line
before anything is compiled or written.

`TABLE` holds one `Rule` per leaf key of configs/alexnet.py's get_config() (a test walks the
config against it, so a new key without a rule fails the suite). `validate(config)` checks
every leaf against its rule, then what involves several keys: the crop against the resize,
the crop against what the network needs to leave pool5 at least 1x1, the folder a
folder-backed dataset reads. With the devices (as train.train_and_evaluate passes them) it
also checks the mesh and both batches against them. Without them it touches no JAX device,
so launch.py runs it before jax.distributed starts: a typo fails every host at once.

Types: an int is also a number where a float is expected; a bool is neither (in Python it is
an int, and True as a batch size is a mistake); a string is never a number. ml_collections
refuses most wrong types from the command line already, but a config built in Python or a
sweep can carry anything. Where a module defines its allowed values (optim.SCHEDULES,
resilience.ON_NONFINITE, the model's switches), the rule reads them from there.
"""
import dataclasses
import math
import numbers
from typing import Any, Callable

from alexnet_jax import config_changes
from alexnet_jax import optim
from alexnet_jax import resilience
from alexnet_jax import sharding
from alexnet_jax.data import augment_on
from alexnet_jax.data import dataset_stats
from alexnet_jax.errors import UserError
from alexnet_jax import model as model_lib
from alexnet_jax.model import alexnet
from alexnet_jax.model import cuda_convnet
from alexnet_jax.model import grouped_conv
from alexnet_jax.model import lrn
from alexnet_jax.model import pooling

# Allowed values no other module names as a tuple (their users compare against literals).
OPTIMIZERS = ('sgd', 'adamw')  # optim.create_optimizer
LR_SCALINGS = ('none', 'linear')  # optim.base_learning_rate
MEANS = ('pixel', 'channel')  # data/dataset.py preprocess_params
ON_CHANCE = ('warn', 'stop')  # train.chance_epochs: what a run still at chance does
FOLDER_DATASETS = ('folder', 'prepared')  # dataset.name values that read dataset.folder
# mesh.model: the paper's two channel groups (section 3.2) split over at most GROUPS devices.
MESH_MODEL = tuple(range(1, grouped_conv.GROUPS + 1))
# conv1: 11x11 kernels at stride 4, no padding (section 3.5; 227 -> 55). conv2-5 are padded
# to keep the size (5x5 pad 2, 3x3 pad 1), so removing any of them (model.remove_convs) does
# not change it; pool1, pool2 and pool5 are model.pool's window and stride, unpadded.
CONV1_KERNEL, CONV1_STRIDE = 11, 4
SEED_RANGE = (-2**63, 2**63)  # what jax.random.PRNGKey takes


@dataclasses.dataclass(frozen=True)
class Rule:
  """A key's type (int, float, bool or str) and, where narrower, its allowed values: `ok`
  says whether a value of the right type is allowed, `allowed` says so in words ('>= 1',
  'in [0, 1)'). choices: the allowed values of a switch, listed in its error line."""
  kind: type
  allowed: str = ''
  ok: Callable[[Any], bool] = lambda value: True
  choices: tuple = ()

  def type_ok(self, value) -> bool:
    if isinstance(value, bool):
      return self.kind is bool
    if self.kind is float:
      return isinstance(value, numbers.Real) and math.isfinite(value)
    if self.kind is int:
      return isinstance(value, numbers.Integral)
    return isinstance(value, self.kind)

  def check(self, key: str, value) -> None:
    """Raises UserError (one line naming key, value and what is allowed) unless allowed."""
    if self.choices:
      if not self.type_ok(value) or value not in self.choices:
        raise UserError(f'config.{key}={value!r}; choose one of '
                        f'{", ".join(str(c) for c in self.choices)}')
      return
    if not self.type_ok(value):
      what = _KIND_NAMES[self.kind] + (f' {self.allowed}' if self.allowed else '')
      raise UserError(f'config.{key}={value!r} ({type(value).__name__}) must be {what}')
    if not self.ok(value):
      raise UserError(f'config.{key}={value!r} must be {self.allowed}')


_KIND_NAMES = {int: 'an int', float: 'a finite number', bool: 'True or False', str: 'a string'}


def _int(low: int, *, also: tuple[int, ...] = (), high: int | None = None,
         meaning: str = '') -> Rule:
  """An int >= low (and < high), or one of `also` (e.g. -1 = 'all' or 'unset')."""
  text = f'>= {low}' if high is None else f'in [{low}, {high})'
  if also:
    text = f'{" or ".join(str(a) for a in also)}{meaning} or {text}'
  return Rule(int, text, lambda v: v in also or (low <= v and (high is None or v < high)))


def _number(low: float, *, open_low: bool = False, high: float | None = None,
            open_high: bool = True) -> Rule:
  """A finite number >= low (> low with open_low), and < high (<= with open_high=False)
  where high is given."""
  if high is None:
    text = f'{">" if open_low else ">="} {low:g}'
  else:
    text = f'in {"(" if open_low else "["}{low:g}, {high:g}{")" if open_high else "]"}'
  return Rule(float, text, lambda v: (low < v if open_low else low <= v) and
              (high is None or (v < high if open_high else v <= high)))


def _choice(values) -> Rule:
  values = tuple(values)
  return Rule(type(values[0]), choices=values)


def _text(allowed: str = '', ok: Callable[[str], bool] = lambda v: True) -> Rule:
  return Rule(str, allowed, ok)


_NON_EMPTY = _text('a non-empty string', bool)
_BOOL = Rule(bool)


def _names(text: str) -> list[str]:
  return [name.strip() for name in text.split(',') if name.strip()]


def _parses(parse: Callable[[str], Any], text: str) -> bool:
  """Whether a module's parser (which raises UserError) takes text."""
  try:
    parse(text)
  except UserError:
    return False
  return True


def _address_ok(address: str) -> bool:
  """'' or host:port with a port in 1..65535 (jax.distributed's coordinator)."""
  if not address:
    return True
  host, _, port = address.rpartition(':')
  return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


TABLE: dict[str, Rule] = {
    'seed': _int(SEED_RANGE[0], high=SEED_RANGE[1]),
    # Data: any TFDS name, or a folder-backed one (FOLDER_DATASETS); paths may be empty.
    'dataset.name': _NON_EMPTY,
    'dataset.folder': _text(),
    'dataset.data_dir': _text(),
    'dataset.manual_dir': _text(),
    'dataset.train_split': _NON_EMPTY,
    'dataset.eval_split': _NON_EMPTY,
    'input.resize_size': _int(1),
    'input.image_size': _int(1),  # and large enough for the network: validate()
    'input.random_crop': _BOOL,
    'input.random_flip': _BOOL,
    'input.pca_lighting': _BOOL,
    'input.lighting_std': _number(0),
    'input.mean': _choice(MEANS),
    'input.standardize': _BOOL,
    'input.stats_file': _text(),
    'input.stats_images': _int(1),
    'input.lighting_eigen': _choice(dataset_stats.LIGHTING_EIGEN),
    'input.augment_on': _choice(augment_on.CHOICES),
    'input.workers': _int(0, also=(-1,), meaning=' (from the machine)'),  # 0: main process
    'input.prefetch': _int(1, also=(-1,), meaning=' (from the machine)'),
    'input.max_unreadable_frac': _number(0, high=1, open_high=False),  # 1 = never stop
    'model.arch': _choice(model_lib.ARCHS),
    'model.num_classes': _int(2),
    'model.norm': _choice(alexnet.NORMS),
    'model.lrn_order': _choice(alexnet.LRN_ORDERS),
    'model.pool': _choice(alexnet.POOLS),
    'model.dropout': _number(0, high=1),  # 0 = off
    'model.dropout_placement': _choice(alexnet.DROPOUT_PLACEMENTS),
    'model.activation': _choice(alexnet.ACTIVATIONS),
    'model.remove_convs': _text(
        f"'' or a comma-separated subset of {', '.join(alexnet.REMOVABLE_CONVS)}",
        lambda v: all(name in alexnet.REMOVABLE_CONVS for name in _names(v))),
    'model.dtype': _choice(alexnet.DTYPES),
    'model.init': _choice(alexnet.INITS),
    'model.width': _number(0, open_low=True),
    'model.lrn_impl': _choice(lrn.CHOICES),
    'model.conv_impl': _choice(grouped_conv.CONV_IMPLS),
    'model.pool_impl': _choice(pooling.CHOICES),
    'optimizer.name': _choice(OPTIMIZERS),
    'optimizer.lr': _number(0, open_low=True),
    'optimizer.momentum': _number(0, high=1),
    'optimizer.weight_decay': _number(0),  # 0 = none
    'optimizer.lr_scaling': _choice(LR_SCALINGS),
    'optimizer.schedule': _choice(optim.SCHEDULES),
    'optimizer.plateau_factor': _number(0, open_low=True, high=1),
    'optimizer.plateau_patience': _int(1),
    'optimizer.plateau_threshold': _number(0, high=1),
    'optimizer.plateau_min_epochs': _number(0),
    'optimizer.plateau_max_decays': _int(0),
    'optimizer.step_epochs': _number(0, open_low=True),
    'optimizer.step_at_epochs': _text("'' or increasing epochs > 0, comma-separated",
                                      lambda v: _parses(optim.parse_step_at_epochs, v)),
    'optimizer.bias_lr_mult': _number(0),
    'optimizer.bias_decay_mult': _number(0),
    'optimizer.decay_mults': _text("'' or LAYER=FACTOR pairs, comma-separated, factors >= 0",
                                   lambda v: _parses(optim.parse_decay_mults, v)),
    'optimizer.warmup_epochs': _number(0),  # 0 = none
    'mesh.data': _int(1, also=(-1,), meaning=' (every device mesh.model leaves)'),
    'mesh.model': _choice(MESH_MODEL),
    'distributed.auto': _BOOL,
    'distributed.coordinator_address': _text("'' or 'host:port'", _address_ok),
    'distributed.num_processes': _int(1, also=(-1,), meaning=' (unset)'),
    'distributed.process_id': _int(0, also=(-1,), meaning=' (unset)'),
    'train.batch_size': _int(1),  # global
    'train.num_epochs': _number(0, open_low=True),
    'train.num_steps': _int(1, also=(-1,), meaning=' (train.num_epochs decides)'),
    'train.eval_every_epochs': _number(0, open_low=True),
    'train.checkpoint_every_steps': _int(1),
    'train.keep_checkpoints': _int(1),
    'train.log_every_steps': _int(1),
    'train.on_nonfinite': _choice(resilience.ON_NONFINITE),
    'train.chance_epochs': _number(0),  # 0 = never check
    'train.on_chance': _choice(ON_CHANCE),
    'train.allow_changed': _text(
        "'' or comma-separated config keys (alexnet_jax/config_changes.py KEYS)",
        lambda v: all(name in config_changes.KEYS for name in _names(v))),
    'eval.batch_size': _int(1),  # global, like train.batch_size
    'eval.ten_crop': _BOOL,
}


def _valid_size(size: int, window: int, stride: int) -> int:
  """The output size of an unpadded window (a conv or a pool) over `size` positions."""
  return (size - window) // stride + 1 if size >= window else 0


def pool5_size(image_size: int, pool: str) -> int:
  """The height (= width) of pool5's maps for image_size crops (6 for 227, section 3.5):
  conv1, then pool1, pool2 and pool5; the padded conv2-5 keep the size."""
  window, stride = alexnet.POOLS[pool]
  size = _valid_size(image_size, CONV1_KERNEL, CONV1_STRIDE)
  for _ in range(3):
    size = _valid_size(size, window, stride)
  return size


def min_image_size(pool: str) -> int:
  """The smallest crop that leaves pool5 at least 1x1 (67 overlapping, 39 disjoint)."""
  return next(s for s in range(1, 1000) if pool5_size(s, pool) >= 1)


def _check_keys(config) -> None:
  """Each leaf against its rule. A key TABLE lacks is let through: the suite fails for a key
  of get_config() without a rule, and a run is not the place to find that out."""
  for key, value in config_changes.flatten(config).items():
    if key in TABLE:
      TABLE[key].check(key, value)


def _check_across_keys(config) -> None:
  inp = config.get('input')
  arch = config.get('model', {}).get('arch', 'alexnet')
  if inp is not None and 'image_size' in inp and 'resize_size' in inp:
    if inp.image_size > inp.resize_size:
      raise UserError(f'config.input.image_size={inp.image_size} must be <= '
                      f'config.input.resize_size={inp.resize_size}')
    pool = config.get('model', {}).get('pool', 'overlap')
    if arch == cuda_convnet.ARCH:
      if cuda_convnet.fc_input_size(inp.image_size) < 1:
        raise UserError(f'config.input.image_size={inp.image_size} is too small for '
                        f'model.arch={arch!r}: it must be >= {cuda_convnet.min_image_size()} '
                        'to leave pool2 at least 1x1')
    elif pool5_size(inp.image_size, pool) < 1:
      raise UserError(f'config.input.image_size={inp.image_size} is too small for the network: '
                      f'it must be >= {min_image_size(pool)} with model.pool={pool!r} to leave '
                      'pool5 at least 1x1')
  data = config.get('dataset')
  if data is not None and data.get('name') in FOLDER_DATASETS and not data.get('folder'):
    raise UserError(f"config.dataset.folder='' must be set: config.dataset.name="
                    f'{data.name!r} reads its images from it')
  if 'model' in config:
    model_lib.from_config(config.model)  # the model's own checks (e.g. model.remove_convs)


def check_batch(name: str, batch: int, data_shards: int, processes: int = 1,
                num_train: int | None = None) -> None:
  """One global batch (`name` says which: 'config.train.batch_size', a benchmark's flag) against
  the mesh, the processes and the data: one UserError line with the numbers for the first
  rule it breaks. It must be >= 1; a multiple of the mesh's 'data' axis (each data shard
  computes batch / data_shards examples); a multiple of the processes (each reads batch /
  processes rows of every batch); and, given num_train (the training images), at most that
  many (an epoch is at least one step)."""
  if batch < 1:
    raise UserError(f'{name}={batch} must be >= 1')
  if batch % data_shards:
    raise UserError(f'{name}={batch} does not divide over the {data_shards} devices of the '
                    "mesh's 'data' axis")
  if batch % processes:
    raise UserError(f'{name}={batch} does not divide over the {processes} processes (it is the '
                    'global batch)')
  if num_train is not None and batch > num_train:
    raise UserError(f'{name}={batch} exceeds the {num_train} training images (an epoch is at '
                    'least one full batch)')


def check_batches(config, data_shards: int, processes: int, num_train: int | None = None) -> None:
  """The one check of a run's two global batches, train.batch_size and eval.batch_size
  (check_batch's rules; the training images bound the training batch only: evaluation pads its
  last batch). validate runs it at start-up with the devices, before the workdir exists;
  train.train_and_evaluate again with the training set's size once the data is open. The
  loaders and train.RunLength assume it passed."""
  check_batch('config.train.batch_size', config.train.batch_size, data_shards, processes,
              num_train)
  check_batch('config.eval.batch_size', config.eval.batch_size, data_shards, processes)


def _check_devices(config, devices, processes: int) -> None:
  """The mesh over these devices, and both global batches over its data shards and over the
  processes."""
  mesh = sharding.create_mesh(config.mesh, devices)
  check_batches(config, mesh.shape['data'], processes)


def validate(config, devices=None, processes: int = 1) -> None:
  """Raises UserError (one line naming the key, its value and what is allowed) for the first
  bad value of config: every key's type and range (TABLE), then the checks across keys, then,
  with devices (e.g. jax.devices()) and the process count, the mesh and the batches."""
  _check_keys(config)
  _check_across_keys(config)
  if devices is not None:
    _check_devices(config, devices, processes)
