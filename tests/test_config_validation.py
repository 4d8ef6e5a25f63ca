"""alexnet_jax/config_validation.py: every key of get_config() refuses values outside its range
and of the wrong type with one line naming it; every shipped config validates clean; the crop
size the network needs, against the model's own shapes; eval.batch_size is global; and a bad
value ends launch.py with exit 2, one `error:` line and no workdir.

The bad and good values below are this file's own reading of each key (the config's comments
and the issue), not copied from the module's TABLE: a key missing here fails the first test.
"""
import math
import os
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax import config_changes
from alexnet_jax import config_validation as cv
from alexnet_jax import train
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.sweeps import plan as sweep_plan
from tests.helpers import alexnet_config
from tests.helpers import ablations_config as ablations
from tests import helpers

VARIANTS = ('', 'demo', 'two_gpu', 'tiny')

# Values of the right type outside each key's range ([] where the type is the only rule).
OUT_OF_RANGE = {
    'seed': [2**63, -2**63 - 1],  # beyond what jax.random.PRNGKey takes
    'dataset.name': [''],
    'dataset.folder': [],  # any path ('' with a folder dataset: test_checks_across_keys)
    'dataset.data_dir': [],
    'dataset.manual_dir': [],
    'dataset.train_split': [''],
    'dataset.eval_split': [''],
    'input.resize_size': [0, -256],
    'input.image_size': [0, -227],
    'input.random_crop': [],
    'input.random_flip': [],
    'input.pca_lighting': [],
    'input.lighting_std': [-0.1],
    'input.mean': ['median', 'Pixel'],
    'input.standardize': [],
    'input.stats_file': [],
    'input.stats_images': [0, -1],
    'input.lighting_eigen': ['pca'],
    'input.augment_on': ['gpu'],
    'input.workers': [-2],
    'input.prefetch': [0, -2],
    'input.max_unreadable_frac': [-0.01, 1.01],
    'model.arch': ['vgg', 'AlexNet'],
    'model.num_classes': [1, 0],
    'model.norm': ['layernorm'],
    'model.lrn_order': ['torch'],
    'model.pool': ['avg'],
    'model.dropout': [1.0, 1.5, -0.1],
    'model.dropout_placement': ['keras'],
    'model.activation': ['gelu'],
    'model.remove_convs': ['conv1', 'conv3,fc6'],
    'model.dtype': ['float16'],
    'model.init': ['xavier'],
    'model.width': [0.0, -1.0],
    'model.lrn_impl': ['cuda'],
    'model.conv_impl': ['winograd'],
    'model.pool_impl': ['cudnn'],
    'optimizer.name': ['adam', 'SGD'],
    'optimizer.lr': [0.0, -0.01],
    'optimizer.momentum': [1.0, -0.1],
    'optimizer.weight_decay': [-5e-4],
    'optimizer.lr_scaling': ['sqrt'],
    'optimizer.schedule': ['linear'],
    'optimizer.plateau_factor': [0.0, 1.0, 10.0],
    'optimizer.plateau_patience': [0],
    'optimizer.plateau_threshold': [-0.01, 1.0],
    'optimizer.plateau_min_epochs': [-1.0],
    'optimizer.plateau_max_decays': [-1],
    'optimizer.step_epochs': [0.0],
    'optimizer.step_at_epochs': ['30,20', '0', '-5', 'x', '30,30'],
    'optimizer.bias_lr_mult': [-1.0],
    'optimizer.bias_decay_mult': [-0.5],
    'optimizer.decay_mults': ['conv1', 'conv1=-1', 'conv1=a', '=0', 'conv1=0,conv1=1'],
    'optimizer.warmup_epochs': [-1.0],
    'mesh.data': [0, -2],
    'mesh.model': [0, 3, 4, -1],
    'distributed.auto': [],
    'distributed.coordinator_address': ['localhost', 'host:', ':1234', 'host:port', 'h:70000'],
    'distributed.num_processes': [0, -2],
    'distributed.process_id': [-2],
    'train.batch_size': [0, -128],
    'train.num_epochs': [0, -1],
    'train.num_steps': [0, -2],
    'train.eval_every_epochs': [0.0, -1.0],
    'train.checkpoint_every_steps': [0, -1],
    'train.keep_checkpoints': [0],
    'train.log_every_steps': [0],
    'train.on_nonfinite': ['ignore'],
    'train.chance_epochs': [-1.0],
    'train.on_chance': ['ignore', 'skip'],
    'train.allow_changed': ['model.no_such_key', 'model.width,nope'],
    'eval.batch_size': [0, -1],
    'eval.ten_crop': [],
}

# Edge values that are allowed: 0 or -1 where they mean something, ints for numbers.
ALLOWED = {
    'seed': [-1, 0, 2**32, 2**63 - 1],
    'input.image_size': [67],  # the smallest crop for overlapping pools (resize 256)
    'input.lighting_std': [0, 0.0],
    'input.workers': [-1, 0, 16],
    'input.prefetch': [-1, 1],
    'input.max_unreadable_frac': [0, 0.0, 1, 1.0],
    'model.dropout': [0, 0.0, 0.99],
    'model.remove_convs': ['', 'conv3', 'conv3, conv5', 'conv3,conv4,conv5'],
    'model.width': [0.01, 2],
    'optimizer.lr': [1, 1e-12],
    'optimizer.momentum': [0, 0.0, 0.99],
    'optimizer.weight_decay': [0, 0.0],
    'optimizer.plateau_factor': [0.5],
    'optimizer.plateau_threshold': [0, 0.0, 0.5],
    'optimizer.plateau_min_epochs': [0, 0.0],
    'optimizer.plateau_max_decays': [0],
    'optimizer.warmup_epochs': [0, 5],
    'mesh.data': [-1, 1, 64],
    'mesh.model': [1, 2],
    'distributed.coordinator_address': ['', '127.0.0.1:1234', 'node-1.cluster:65535'],
    'distributed.num_processes': [-1, 1, 256],
    'distributed.process_id': [-1, 0, 255],
    'train.num_epochs': [90, 0.5],
    'train.num_steps': [-1, 1],
    'train.eval_every_epochs': [1, 0.25],
    'train.chance_epochs': [0, 0.0, 5],
    'train.on_chance': ['warn', 'stop'],
    'train.allow_changed': ['', 'model.dropout', 'model.dropout, model.width'],
}


def loose_config(variant: str = '') -> ml_collections.ConfigDict:
  """get_config(variant) that takes a value of any type, as a config built in Python does."""
  return ml_collections.ConfigDict(alexnet_config.get_config(variant).to_dict(), type_safe=False)


def with_value(key: str, value, variant: str = '') -> ml_collections.ConfigDict:
  """get_config(variant) built with `value` at key (set before the ConfigDict exists: an
  assignment would cast, e.g. False into a float field as 0.0)."""
  tree = alexnet_config.get_config(variant).to_dict()
  *sections, name = key.split('.')
  node = tree
  for section in sections:
    node = node[section]
  node[name] = value
  return ml_collections.ConfigDict(tree, type_safe=False)


def refused(config, key: str) -> str:
  """validate(config) raises a one-line UserError naming config.<key>; returns it."""
  message = helpers.one_line_error(lambda: cv.validate(config))
  assert message.startswith(f'config.{key}=') or f' config.{key}=' in message, message
  return message


# Keys whose default is an int but that take any number (an epoch count may be fractional).
NUMBER_KEYS = {'train.num_epochs'}


def wrong_types(default) -> list:
  """Values of another type than a key's default: a string is never a number, a bool is
  neither an int nor a float, a float is not an int."""
  if isinstance(default, bool):
    return [1, 'True', None]
  if isinstance(default, int):
    return ['1', True, 1.5, None]
  if isinstance(default, float):
    return ['0.1', False, None, math.nan, math.inf]
  return [1, True, None, ['conv3']]


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_table_covers_exactly_the_leaf_keys(variant):
  keys = set(config_changes.leaf_keys(alexnet_config.get_config(variant)))
  assert not keys - set(cv.TABLE), f'keys without a validation rule: {sorted(keys - set(cv.TABLE))}'
  assert not set(cv.TABLE) - keys, f'rules for keys the config lacks: {set(cv.TABLE) - keys}'
  assert set(OUT_OF_RANGE) == keys, sorted(set(OUT_OF_RANGE) ^ keys)  # this file is complete


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_shipped_configs_validate_clean(variant):
  cv.validate(alexnet_config.get_config(variant))
  cv.validate(loose_config(variant))


@pytest.mark.parametrize('sweep_variant', ['', 'quick', 'preset', 'preset_first'])
def test_every_sweep_run_validates_clean(sweep_variant, tmp_path):
  sweep = ablations.get_config(sweep_variant).sweep
  runs = sweep_plan.plan(sweep, str(tmp_path))
  assert runs
  for run in runs:
    cv.validate(sweep_plan.run_config(sweep, run))


@pytest.mark.parametrize('key', sorted(OUT_OF_RANGE))
def test_each_key_refuses_out_of_range_and_wrong_types(key):
  default = config_changes.flatten(alexnet_config.get_config())[key]
  for value in OUT_OF_RANGE[key] + wrong_types(float(default) if key in NUMBER_KEYS else default):
    message = refused(with_value(key, value), key)
    assert repr(value) in message, message  # the value, as given
  for value in ALLOWED.get(key, []) + [default]:
    cv.validate(with_value(key, value))


def test_messages_name_the_allowed_range():
  assert refused(with_value('mesh.model', 4), 'mesh.model') == (
      'config.mesh.model=4; choose one of 1, 2')
  assert refused(with_value('eval.batch_size', 0), 'eval.batch_size') == (
      'config.eval.batch_size=0 must be >= 1')
  assert refused(with_value('optimizer.momentum', 1.0), 'optimizer.momentum') == (
      'config.optimizer.momentum=1.0 must be in [0, 1)')
  assert refused(with_value('mesh.data', 0), 'mesh.data') == (
      'config.mesh.data=0 must be -1 (every device mesh.model leaves) or >= 1')
  assert refused(with_value('train.batch_size', '128'), 'train.batch_size') == (
      "config.train.batch_size='128' (str) must be an int >= 1")
  assert refused(with_value('optimizer.schedule', 'linear'), 'optimizer.schedule') == (
      'config.optimizer.schedule=\'linear\'; choose one of plateau, step, cosine, constant')


def pool5_shape(image_size: int, pool: str, remove_convs: str = '') -> tuple[int, int]:
  """pool5's H x W in the model itself (shapes only, nothing computed)."""
  config = alexnet_config.get_config('tiny').model
  config.update(pool=pool, remove_convs=remove_convs)
  model = alexnet.from_config(config)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False,
                                                      mutable=True), images)
  (pool5,) = variables['intermediates']['pool5']
  return pool5.shape[2:4]  # G x B x H x W x C/G


def test_the_crop_size_the_network_needs():
  # By hand: conv1 (s - 11) // 4 + 1, then three pools (n - w) // stride + 1.
  # overlap 3/2: 227 -> 55 -> 27 -> 13 -> 6 (section 3.5); 67 -> 15 -> 7 -> 3 -> 1; 66 -> 14 ->
  # 6 -> 2 -> 0. disjoint 2/2: 39 -> 8 -> 4 -> 2 -> 1; 38 -> 7 -> 3 -> 1 -> 0.
  assert cv.pool5_size(227, 'overlap') == 6
  assert cv.min_image_size('overlap') == 67 and cv.min_image_size('disjoint') == 39
  assert cv.pool5_size(66, 'overlap') == 0 and cv.pool5_size(38, 'disjoint') == 0
  # The model agrees, whichever middle convs it leaves out.
  assert pool5_shape(227, 'overlap') == (6, 6)
  assert pool5_shape(67, 'overlap') == (1, 1)
  assert pool5_shape(67, 'overlap', 'conv3,conv4,conv5') == (1, 1)
  assert pool5_shape(39, 'disjoint') == (1, 1)
  assert pool5_shape(100, 'disjoint') == (cv.pool5_size(100, 'disjoint'),) * 2
  for pool, smallest in (('overlap', 67), ('disjoint', 39)):
    config = with_value('model.pool', pool, 'tiny')
    config.input.image_size = smallest
    cv.validate(config)
    config.input.image_size = smallest - 1
    message = refused(config, 'input.image_size')
    assert f'>= {smallest}' in message and 'pool5' in message
    config.model.remove_convs = 'conv3,conv4,conv5'  # the convs it leaves out keep the size
    refused(config, 'input.image_size')


def test_checks_across_keys():
  config = with_value('input.image_size', 257)  # resize_size 256
  assert 'config.input.resize_size=256' in refused(config, 'input.image_size')
  config = with_value('dataset.folder', '', 'demo')  # name='folder'
  assert "config.dataset.name='folder'" in refused(config, 'dataset.folder')
  config = with_value('dataset.name', 'prepared')
  refused(config, 'dataset.folder')


def test_the_mesh_and_the_global_batches_against_the_devices():
  devices = jax.devices()[:8]  # conftest: 8 CPU devices in this process
  assert len(devices) == 8
  config = loose_config('tiny')  # train batch 8, eval batch 16
  cv.validate(config, devices, processes=2)
  cv.validate(with_value('mesh.model', 2, 'tiny'), devices, processes=8)
  message = helpers.one_line_error(lambda: cv.validate(with_value('mesh.data', 3, 'tiny'),
                                                       devices))
  assert 'config.mesh data=3' in message
  message = helpers.one_line_error(
      lambda: cv.validate(with_value('eval.batch_size', 12, 'tiny'), devices))
  assert message.startswith('config.eval.batch_size=12 does not divide over the 8 devices')
  # Global: 12 divides over 4 data shards but not over 8 processes (not 12 x 8 per process).
  cv.validate(with_value('eval.batch_size', 12, 'tiny'), devices[:4])
  message = helpers.one_line_error(
      lambda: cv.validate(with_value('eval.batch_size', 12, 'tiny'), devices[:4], processes=8))
  assert message == ('config.eval.batch_size=12 does not divide over the 8 processes (it is '
                     'the global batch)')


def test_eval_batches_are_global(small_folder):
  config = helpers.plain_config(small_folder)  # 6 val images, eval.batch_size 4
  dataset = dataset_lib.build(config)
  shards = [list(pipeline.create_eval_loader(config, dataset, shard_index=i, shard_count=2))
            for i in range(2)]
  # Each process reads 2 rows of each global batch of 4: 2 batches each, 8 rows for 6 images.
  assert [[b['mask'].tolist() for b in batches] for batches in shards] == [
      [[True, True], [True, True]], [[True, True], [False, False]]]
  (whole,) = [list(pipeline.create_eval_loader(config, dataset))]  # one process: all 4 rows
  assert [b['mask'].tolist() for b in whole] == [[True] * 4, [True, True, False, False]]


# One line per failure of the one batch check, with the numbers: (key, value, data shards,
# processes, training images, the error).
BATCH_FAILURES = [
    ('train.batch_size', 0, 1, 1, None, 'config.train.batch_size=0 must be >= 1'),
    ('eval.batch_size', -4, 1, 1, None, 'config.eval.batch_size=-4 must be >= 1'),
    ('train.batch_size', 12, 8, 1, None, "config.train.batch_size=12 does not divide over the 8 "
     "devices of the mesh's 'data' axis"),
    ('eval.batch_size', 6, 4, 2, None, "config.eval.batch_size=6 does not divide over the 4 "
     "devices of the mesh's 'data' axis"),
    ('train.batch_size', 12, 4, 8, None, 'config.train.batch_size=12 does not divide over the 8 '
     'processes (it is the global batch)'),
    ('eval.batch_size', 12, 1, 8, 100, 'config.eval.batch_size=12 does not divide over the 8 '
     'processes (it is the global batch)'),
    ('train.batch_size', 16, 4, 2, 12, 'config.train.batch_size=16 exceeds the 12 training '
     'images (an epoch is at least one full batch)'),
]


@pytest.mark.parametrize('key,value,data,processes,num_train,message', BATCH_FAILURES,
                         ids=[f'{f[0]}={f[1]}' for f in BATCH_FAILURES])
def test_each_batch_failure_is_one_line_with_the_numbers(key, value, data, processes, num_train,
                                                         message):
  config = with_value(key, value, 'tiny')  # train batch 8, eval batch 16
  assert helpers.one_line_error(
      lambda: cv.check_batches(config, data, processes, num_train)) == message


def test_batches_that_fit_pass():
  """Edges that are allowed: a training batch of exactly the training images (one step per
  epoch), an eval batch larger than them (evaluation pads), batch = shards x processes."""
  config = loose_config('tiny')  # train batch 8, eval batch 16
  cv.check_batches(config, 8, 8, num_train=8)
  cv.check_batches(config, 4, 2, num_train=12)
  cv.check_batches(config, 1, 1)  # before the data is known


def test_train_and_evaluate_checks_the_batch_against_the_data(tmp_path, small_folder):
  config = helpers.tiny_config(folder=small_folder)  # 12 training images of 2 classes
  config.model.num_classes = 2
  config.train.batch_size = 16
  helpers.one_line_error(lambda: train.train_and_evaluate(config, str(tmp_path / 'run')),
                         'config.train.batch_size=16 exceeds the 12 training images')


def test_train_and_evaluate_refuses_before_the_workdir_exists(tmp_path):
  workdir = tmp_path / 'run'
  for key, value in (('train.checkpoint_every_steps', 0), ('mesh.data', 3)):  # 3 of 8 devices
    config = helpers.tiny_config()
    config[key.split('.')[0]][key.split('.')[1]] = value
    with pytest.raises(UserError, match=key.replace('.', r'[ .]', 1)):
      train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


# train.checkpoint_every_steps=0 (which used to checkpoint every step) is refused in-process
# above; each launch costs ~4 s.
@pytest.mark.parametrize('override', ['mesh.model=4', 'eval.batch_size=0', 'input.image_size=66'])
def test_launch_refuses_with_one_line_and_writes_nothing(tmp_path, override):
  workdir = tmp_path / 'run'
  proc = helpers.launch(str(workdir), f'--config.{override}', check=False, timeout=120)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert len(lines) == 1 and lines[0].startswith(f'error: config.{override.split("=")[0]}='), (
      proc.stderr)
  assert not workdir.exists() or not os.listdir(workdir)
