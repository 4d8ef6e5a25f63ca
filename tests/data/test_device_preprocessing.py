"""alexnet_jax/data/device_preprocessing.py and the device path of pipeline.py: for the same
random draws, the device's crops and flips equal the host's fast path (preprocessing.
train_transform) exactly, and lighting, mean and std within float32 rounding; the eval crops
equal preprocessing.eval_transform; the draws depend on (seed, epoch, index) only, have the
paper's distributions, and the loader hands over uint8 patches with their true positions in
the training order, whatever the number of processes; input.augment_on is resolved by one
function (data/augment_on.py) that every part of a run follows."""
import glob
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.data import augment_on
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import device_preprocessing as dp
from alexnet_jax.data import pipeline
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.errors import UserError
from tests.helpers import alexnet_config
from tests import helpers

R, S = 72, 64


@pytest.fixture(scope='module')
def photos():
  """Eight embedded photos as the host's uint8 R x R patches (paper section 2)."""
  paths = sorted(glob.glob(os.path.join(helpers.DATA, 'train/*/*.jpg')))[::40][:8]
  return np.stack([pp.decode_and_resize(open(p, 'rb').read(), R) for p in paths])


def params(mean, std=None, lighting_std=0.1, crop=True, flip=True):
  rng = np.random.default_rng(1)
  eigvec = np.linalg.qr(rng.normal(size=(3, 3)))[0]
  return pp.PreprocessParams(resize_size=R, image_size=S, mean=mean, std=std, random_flip=flip,
                             lighting_std=lighting_std, eigval=np.array([60.0, 5.0, 1.0]),
                             eigvec=eigvec, random_crop=crop)


class ScriptedRng:
  """Hands preprocessing.train_transform given draws, in the order it asks for them."""

  def __init__(self, y, x, flip, alpha):
    self.ints, self.flip, self.alpha = [int(y), int(x)], bool(flip), alpha

  def integers(self, low, high):
    value = self.ints.pop(0)
    assert low <= value < high
    return value

  def random(self):
    return 0.0 if self.flip else 0.75  # train_transform flips when random() < 0.5

  def normal(self, loc, scale, size):
    return np.asarray(self.alpha, np.float64)  # the device's alphas are already x scale


def device_draws(p, n, epoch=0, seed=3):
  aug = dp.Augmentation.of(p, seed)
  draws = dp.draw(aug, R, jnp.full((n,), epoch, jnp.int32), jnp.arange(n, dtype=jnp.int32))
  return aug, draws


def host_reference(photos, p, draws):
  return np.stack([
      pp.train_transform(img, ScriptedRng(draws.y[i], draws.x[i], draws.flip[i],
                                          draws.alpha[i]),
                         image_size=S, mean=p.mean, std=p.std, flip=p.random_flip,
                         crop=p.random_crop, lighting_std=p.lighting_std, eigval=p.eigval,
                         eigvec=p.eigvec)
      for i, img in enumerate(photos)])


def test_crops_and_flips_equal_the_host_path_exactly(photos):
  p = params(mean=np.zeros(3), lighting_std=0.0)
  aug, draws = device_draws(p, len(photos))
  draws = jax.device_get(draws)
  assert 0 < draws.flip.sum() < len(photos)  # both branches are compared
  assert len(set(zip(draws.y, draws.x))) > 1
  device = np.asarray(jax.jit(dp.augment)(aug, photos, draws))
  np.testing.assert_array_equal(device, host_reference(photos, p, draws))
  # and they are the crops and reflections written out by hand
  for i, img in enumerate(photos):
    crop = img[draws.y[i]:draws.y[i] + S, draws.x[i]:draws.x[i] + S]
    np.testing.assert_array_equal(device[i], crop[:, ::-1] if draws.flip[i] else crop)


@pytest.mark.parametrize('mean_kind', ['pixel', 'channel'])
def test_lighting_mean_and_std_match_the_host_within_float32_rounding(photos, mean_kind):
  rng = np.random.default_rng(0)
  mean = (rng.uniform(80, 160, (R, R, 3)) if mean_kind == 'pixel'
          else np.array([123.7, 116.8, 103.9]))
  p = params(mean=mean.astype(np.float32), std=np.array([58.4, 57.1, 57.4], np.float32))
  aug, draws = device_draws(p, len(photos), epoch=2)
  draws = jax.device_get(draws)
  device = np.asarray(jax.jit(dp.augment)(aug, photos, draws))
  host = host_reference(photos, p, draws)
  assert np.abs(draws.alpha).max() > 0.01  # lighting is on
  # float32 rounding of values of order 1: the shift is computed in float32 here, float64 there
  np.testing.assert_allclose(device, host, rtol=0, atol=1e-5)


@pytest.mark.parametrize('ten_crop', [False, True])
def test_eval_crops_equal_the_host_eval_transform(photos, ten_crop):
  rng = np.random.default_rng(2)
  p = params(mean=rng.uniform(80, 160, (R, R, 3)).astype(np.float32),
             std=np.array([58.4, 57.1, 57.4], np.float32))
  aug = dp.Augmentation.of(p, 0)
  device = np.asarray(jax.jit(dp.eval_images, static_argnums=2)(aug, photos, ten_crop))
  host = np.stack([pp.eval_transform(img, image_size=S, mean=p.mean, std=p.std,
                                     ten_crop=ten_crop) for img in photos])
  assert device.shape == host.shape == ((8, 10, S, S, 3) if ten_crop else (8, S, S, 3))
  np.testing.assert_allclose(device, host, rtol=0, atol=1e-6)


def test_draws_depend_on_seed_epoch_and_index_only():
  p = params(mean=np.zeros(3))
  aug = dp.Augmentation.of(p, 5)
  epoch = jnp.array([0, 0, 1, 0], jnp.int32)
  index = jnp.array([7, 8, 7, 7], jnp.int32)
  d = jax.device_get(dp.draw(aug, R, epoch, index))
  row = lambda i: (d.y[i], d.x[i], d.flip[i], tuple(d.alpha[i]))
  assert row(0) == row(3)  # the same example, wherever it sits in the batch
  assert row(0) != row(1) and row(0) != row(2)  # another index, another epoch
  other_seed = jax.device_get(dp.draw(dp.Augmentation.of(p, 6), R, epoch, index))
  assert not np.array_equal(other_seed.alpha, d.alpha)


def test_draws_have_the_papers_distributions():
  n = 4000
  aug, d = device_draws(params(mean=np.zeros(3)), n)
  d = jax.device_get(d)
  for offsets in (d.y, d.x):  # uniform over the R - S + 1 positions
    assert offsets.min() == 0 and offsets.max() == R - S
    counts = np.bincount(offsets, minlength=R - S + 1)
    assert counts.min() > 0.6 * n / (R - S + 1)
  assert abs(d.flip.mean() - 0.5) < 0.03  # 4 sigma at n = 4000
  assert abs(d.alpha.mean()) < 0.01 and abs(d.alpha.std() - 0.1) < 0.005  # alpha ~ N(0, 0.1)
  # switched off: the centre window, no flips, no lighting
  _, off = device_draws(params(mean=np.zeros(3), crop=False, flip=False, lighting_std=0.0), 16)
  assert set(np.asarray(off.y)) == set(np.asarray(off.x)) == {(R - S) // 2}
  assert not np.asarray(off.flip).any() and not np.asarray(off.alpha).any()


def device_config(batch_size=8):
  config = alexnet_config.get_config('tiny')
  config.input.augment_on = 'device'
  config.train.batch_size = batch_size
  return config


def test_loader_sends_uint8_patches_with_their_positions():
  config = device_config()
  dataset = dataset_lib.build(config)
  n = dataset.num_train
  it = iter(pipeline.create_train_loader(config, dataset, seed=0))
  steps = n // config.train.batch_size + 2  # crosses into the second epoch
  positions, images, labels = [], [], []
  for _ in range(steps):
    batch = next(it)
    assert batch['image'].dtype == np.uint8
    assert batch['image'].shape == (8, config.input.resize_size, config.input.resize_size, 3)
    positions += list(batch['epoch'].astype(np.int64) * n + batch['index'])
    images += list(batch['image'])
    labels += list(batch['label'])
  pipeline.close_iterator(it)
  assert positions == list(range(steps * config.train.batch_size))
  # Position p holds record p of Grain's own shuffled, repeated source (the host path's order),
  # decoded: the loader reads the records by their shuffled indices, a batch at a time.
  records = grain.MapDataset.source(dataset.train_source).shuffle(seed=0).repeat()
  for p in range(0, len(positions), 5):
    assert labels[p] == records[p]['label'], p
    np.testing.assert_array_equal(
        images[p], pp.decode_and_resize(records[p]['image'], config.input.resize_size))
  # the host path's batch of the same position holds the same photo, augmented on the host
  host = config.copy_and_resolve_references()
  host.input.augment_on = 'host'
  host_batch = next(iter(pipeline.create_train_loader(host, dataset, seed=0)))
  assert host_batch['image'].dtype == np.float32 and 'index' not in host_batch


def test_positions_do_not_depend_on_the_process_count():
  config = device_config()
  dataset = dataset_lib.build(config)
  one = next(iter(pipeline.create_train_loader(config, dataset, seed=0, shard_index=0,
                                               shard_count=1)))
  halves = [next(iter(pipeline.create_train_loader(config, dataset, seed=0, shard_index=i,
                                                   shard_count=2))) for i in range(2)]
  # Grain's elastic iterator deals the positions out in turn (process i gets i, i+2, ...):
  # the same examples with the same positions, so the same draws on the device.
  by_index = lambda batches: {int(i): img for b in batches for i, img in zip(b['index'],
                                                                           b['image'])}
  split, whole = by_index(halves), by_index([one])
  assert sorted(split) == sorted(whole) == list(range(8))
  for i in whole:
    np.testing.assert_array_equal(split[i], whole[i])


def test_either_paths_state_restores_into_the_other_at_the_same_position():
  """The device path decodes a batch at a time (pipeline.BatchFirstIterator), the host path
  record by record (Grain's ElasticIterator); both keep {'global_next_index'}, so a state saved
  on one path, with 2 processes, continues on the other with 1 at the same photo, and a
  restored device iterator goes on exactly where an uninterrupted one does."""
  config = device_config()
  dataset = dataset_lib.build(config)
  host = config.copy_and_resolve_references()
  host.input.augment_on = 'host'
  uninterrupted = iter(pipeline.create_train_loader(config, dataset, seed=0))
  batches = [next(uninterrupted) for _ in range(4)]
  pipeline.close_iterator(uninterrupted)
  # 3 batches on the host path, as process 1 of 2, then its state into a device iterator.
  saved = iter(pipeline.create_train_loader(host, dataset, seed=0, shard_index=1, shard_count=2))
  for _ in range(3):
    next(saved)
  state = saved.get_state()
  pipeline.close_iterator(saved)
  assert state == {'global_next_index': 3 * config.train.batch_size}
  resumed = iter(pipeline.create_train_loader(config, dataset, seed=0))
  resumed.set_state(state)
  batch = next(resumed)
  assert resumed.get_state() == {'global_next_index': 4 * config.train.batch_size}
  pipeline.close_iterator(resumed)
  for key in ('image', 'label', 'epoch', 'index', 'valid'):
    np.testing.assert_array_equal(batch[key], batches[3][key])
  # And back: the device path's state puts the host path at the same position.
  back = iter(pipeline.create_train_loader(host, dataset, seed=0))
  back.set_state({'global_next_index': 3 * config.train.batch_size})
  assert next(back)['label'].tolist() == batches[3]['label'].tolist()
  pipeline.close_iterator(back)


# Where each input.augment_on value puts the augmentation, per backend (configs/alexnet.py,
# docs/input_pipeline.md): 'auto' is the device on an accelerator and the host on a CPU.
PLACES = {('auto', 'cpu'): 'host', ('auto', 'gpu'): 'device', ('auto', 'tpu'): 'device',
          ('host', 'cpu'): 'host', ('host', 'gpu'): 'host', ('host', 'tpu'): 'host',
          ('device', 'cpu'): 'device', ('device', 'gpu'): 'device', ('device', 'tpu'): 'device'}


def test_augment_on_resolves_per_backend_and_rejects_other_values():
  assert set(augment_on.CHOICES) == {value for value, _ in PLACES}
  for (value, platform), place in PLACES.items():
    assert augment_on.resolve(value, platform) == place, (value, platform)
  with pytest.raises(UserError, match='augment_on must be one of'):
    augment_on.resolve('gpu', 'gpu')


@pytest.mark.parametrize('value,platform', [('auto', 'cpu'), ('auto', 'gpu'), ('host', 'tpu'),
                                            ('device', 'cpu')])
def test_every_part_of_a_run_follows_the_one_resolution(monkeypatch, value, platform):
  """augment_on.on_device on this process's backend decides for the training loader, the eval
  loader and the jitted steps' augmentation (device_preprocessing.of_run) alike: uint8 patches
  with their positions and an Augmentation on the device path, float32 crops and none on the
  host path. A run passes its one answer on (on_device=), and the loaders follow that."""
  monkeypatch.setattr(jax, 'default_backend', lambda: platform)
  config = device_config()
  config.input.augment_on = value
  device = PLACES[value, platform] == 'device'
  dataset = dataset_lib.build(config)
  assert augment_on.on_device(config) is device
  want = np.uint8 if device else np.float32

  def first_train_batch(**kwargs):
    iterator = iter(pipeline.create_train_loader(config, dataset, seed=0, **kwargs))
    batch = next(iterator)
    pipeline.close_iterator(iterator)
    return batch

  train_batch = first_train_batch()
  assert train_batch['image'].dtype == want and ('index' in train_batch) is device
  eval_loader = pipeline.create_eval_loader(config, dataset)
  assert next(iter(eval_loader))['image'].dtype == want
  eval_loader.close()
  assert (dp.of_run(config, dataset.preprocess) is not None) is device
  # The answer a run passes on is the one followed.
  passed = first_train_batch(on_device=not device)
  assert passed['image'].dtype == (np.float32 if device else np.uint8)
  assert (dp.of_run(config, dataset.preprocess, not device) is not None) is not device


def test_decode_batch_rows_and_an_unreadable_file(capsys):
  """DecodeBatch decodes each record into its row exactly as the per-record path does, gives
  each row its position (first + (k b + i) stride), and turns an unreadable file into a blank
  row marked invalid, with a warning, as DecodeResize does."""
  paths = sorted(glob.glob(os.path.join(helpers.VAL, '*', '*')))[:3]
  records = [{'image': open(p, 'rb').read(), 'label': i} for i, p in enumerate(paths)]
  records.insert(1, {'image': b'not an image', 'label': 7, 'source': 'broken.jpg'})
  decode = pipeline.DecodeBatch(resize_size=72, num_records=10, first=5, stride=2)
  batch = decode.map_with_index(3, records)
  assert 'skipping unreadable image broken.jpg' in capsys.readouterr().out
  assert batch['valid'].tolist() == [True, False, True, True]
  assert not batch['image'][1].any() and batch['label'].tolist() == [0, 7, 1, 2]
  for row, record in ((0, records[0]), (2, records[2]), (3, records[3])):
    np.testing.assert_array_equal(batch['image'][row], pp.decode_and_resize(record['image'], 72))
  positions = 5 + (3 * 4 + np.arange(4)) * 2  # 29, 31, 33, 35 of an order of 10 per epoch
  assert batch['epoch'].tolist() == (positions // 10).tolist()
  assert batch['index'].tolist() == (positions % 10).tolist()
