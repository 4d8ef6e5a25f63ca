"""Tests of the data sources, dataset stats and Grain loaders on the embedded clothing10 photos.

Truths are computed independently in the tests: labels from the class folder names, images
identified by exact equality with the same files preprocessed one by one, stats with numpy on
stacked images, and a real TFDS array_record dataset built in a temporary data_dir.
"""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import sources
from alexnet_jax.data import dataset_stats
from alexnet_jax.data import pipeline
from alexnet_jax.data import prepare
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.errors import UserError
from configs import alexnet as alexnet_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'data', 'clothing10-128')
CLASSES = sorted(os.listdir(os.path.join(DATA, 'train')))
SMALL_CLASSES = ('hat', 'shoes')
DEMO_STATS = 'data/clothing10-128/stats.npz'
# The channel mean plain_config subtracts (that of the committed demo stats): a known constant
# that identifies every preprocessed image with its file.
CHANNEL_MEAN = np.load(os.path.join(ROOT, DEMO_STATS))['mean'].astype(np.float32)


def train_source(config):
  """The training split's source, as the stats functions take it (built on demand)."""
  return lambda: sources.make_source(config.dataset, config.dataset.train_split)


def tiny_config(**dataset):
  config = alexnet_config.get_config('tiny')  # resize 72, crop 67, workers 0
  config.dataset.folder = DATA
  config.dataset.update(dataset)
  return config


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
  """tmp/{train,val}/{hat,shoes}/: 6 train and 3 val real JPEGs per class."""
  root = tmp_path_factory.mktemp('small')
  for split, n in (('train', 6), ('val', 3)):
    for name in SMALL_CLASSES:
      os.makedirs(root / split / name)
      for f in sorted(os.listdir(os.path.join(DATA, split, name)))[:n]:
        shutil.copy(os.path.join(DATA, split, name, f), root / split / name / f)
  return str(root)


def plain_config(folder, size=24, **overrides):
  """No randomness in the pixels (crop = whole image, no flip, no lighting): identifiable."""
  config = tiny_config(folder=folder)
  config.model.num_classes = 2
  config.input.update(resize_size=size, image_size=size, random_flip=False, pca_lighting=False,
                      mean='channel', standardize=False, stats_file=DEMO_STATS)
  config.train.batch_size = 4
  config.eval.batch_size = 4
  config.input.update(overrides)
  return config


def expected_images(folder, split, size=24):
  """{image bytes -> (path, label)} of plain_config's output, computed file by file."""
  pairs = []
  for label, name in enumerate(sorted(os.listdir(os.path.join(folder, split)))):
    pairs += [(p, label) for p in sorted(glob.glob(os.path.join(folder, split, name, '*')))]
  return expected_table(pairs, size)


def expected_table(pairs, size=24):
  out = {}
  for path, label in pairs:
    img = pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(path, 'rb').read()), size),
                         size)
    x = img.astype(np.float32) - CHANNEL_MEAN
    out[x.tobytes()] = (path, label)
  return out


def identify(batches, table):
  """The (path, label) of every (real) image of the batches; checks the labels on the way."""
  found = []
  for b in batches:
    mask = b.get('mask', np.ones(len(b['label']), bool))
    for img, label in zip(b['image'][mask], b['label'][mask]):
      path, true_label = table[np.ascontiguousarray(img).tobytes()]
      assert label == true_label
      found.append(path)
  return found


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# --- ImageFolderSource ---


def test_folder_source_real_data():
  train = sources.ImageFolderSource(DATA, 'train')
  val = sources.ImageFolderSource(DATA, 'val')
  assert (len(train), len(val)) == (1000, 240)
  assert train.class_names == CLASSES and len(CLASSES) == 10
  for i in (0, 99, 100, 537, 999):
    item = train[i]
    path = train.paths[i]
    assert os.path.basename(os.path.dirname(path)) == CLASSES[item['label']]
    assert item['image'] == open(path, 'rb').read()
  # files sorted within each class, classes in sorted order
  assert train.paths[:100] == sorted(glob.glob(os.path.join(DATA, 'train', CLASSES[0], '*')))
  assert np.bincount(val.labels).tolist() == [24] * 10
  assert repr(train) == ("ImageFolderSource(root=%r, split='train', num_records=1000, "
                         'num_classes=10)' % DATA)


def test_folder_source_errors(tmp_path):
  def one_line_error(root, split='train'):
    with pytest.raises(UserError) as e:
      sources.ImageFolderSource(str(root), split)
    assert '\n' not in str(e.value)
    return str(e.value)

  assert 'does not exist' in one_line_error(tmp_path / 'missing')
  os.makedirs(tmp_path / 'train')
  assert 'no class folders' in one_line_error(tmp_path)
  os.makedirs(tmp_path / 'train' / 'cat')
  (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('x')
  assert 'no image files' in one_line_error(tmp_path)


def test_dataset_info_folder():
  info = dataset_lib.build(tiny_config())
  assert (info.num_train, info.num_eval, info.num_classes) == (1000, 240, 10)
  assert list(info.class_names) == CLASSES
  config = tiny_config()
  config.model.num_classes = 1000
  with pytest.raises(UserError, match='has 10 classes but config.model.num_classes is 1000'):
    dataset_lib.build(config)


def test_relative_folder_resolves_from_repo_root(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  source = sources.make_source(tiny_config(folder='data/clothing10-128').dataset, 'val')
  assert len(source) == 240


# --- dataset_stats ---


def test_compute_stats_matches_numpy(small_folder):
  source = sources.ImageFolderSource(small_folder, 'val')
  stats = dataset_stats.compute_stats(source, 40, log=None)
  imgs = np.stack([pp.center_crop(pp.resize_shorter_side(
      pp.decode_image(open(p, 'rb').read()), 40), 40) for p in source.paths]).astype(np.float64)
  pixels = imgs.reshape(-1, 3)
  np.testing.assert_allclose(stats['mean_image'], imgs.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['mean'], pixels.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['std'], pixels.std(axis=0), rtol=1e-5)
  cov = np.cov(pixels.T, bias=True)
  np.testing.assert_allclose(stats['cov'], cov, rtol=1e-8)
  # eigval = eig(cov) / 255 (descending), eigvec orthonormal columns: cov = V diag(255 l) V^T
  true_eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
  np.testing.assert_allclose(stats['eigval'], true_eig / 255, rtol=1e-5)
  v = stats['eigvec'].astype(np.float64)
  np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-6)
  np.testing.assert_allclose(v @ np.diag(stats['eigval'] * 255.0) @ v.T, cov, rtol=1e-4,
                             atol=1e-2)
  assert int(stats['num_images']) == 6


def test_save_load_stats_roundtrip_and_defaults(tmp_path, small_folder):
  stats = dataset_stats.compute_stats(sources.ImageFolderSource(small_folder, 'val'), 32,
                                      log=None)
  path = str(tmp_path / 'sub' / 'stats.npz')
  dataset_stats.save_stats(path, stats)
  loaded = dataset_stats.load_stats(path, 32)
  for k in ('mean_image', 'mean', 'std', 'eigval', 'eigvec'):
    np.testing.assert_array_equal(loaded[k], stats[k])
  builtin = dataset_stats.imagenet_stats(20)  # only for old runs and lighting_eigen='imagenet'
  assert builtin['mean_image'].shape == (20, 20, 3)
  np.testing.assert_allclose(builtin['mean_image'][7, 3], [123.68, 116.78, 103.94], rtol=1e-6)
  np.testing.assert_allclose(builtin['std'], [58.393, 57.12, 57.375], rtol=1e-6)
  np.testing.assert_allclose(builtin['eigval'], [55.46, 4.794, 1.148], rtol=1e-6)
  # The README's claim: the built-in eigenvalues sum to ~1.5x the variance the built-in std
  # implies (eigenvalues of a covariance sum to its trace; ours are eig(cov) / 255).
  np.testing.assert_allclose(builtin['eigval'].sum(), 61.4, atol=0.01)
  np.testing.assert_allclose((builtin['std'].astype(np.float64) ** 2).sum() / 255, 39.1, atol=0.05)
  with pytest.raises(UserError, match='does not exist'):
    dataset_stats.load_stats(str(tmp_path / 'nope.npz'), 32)


def test_load_stats_resizes_mean_image(tmp_path):
  stats = dataset_stats.imagenet_stats(64)
  stats['mean_image'] = np.broadcast_to(np.array([10.0, 20.0, 30.0], np.float32),
                                        (64, 64, 3)).copy()
  stats['mean_image'][:32] += 100.0  # top half brighter
  path = str(tmp_path / 's.npz')
  dataset_stats.save_stats(path, stats)
  small = dataset_stats.load_stats(path, 16)['mean_image']
  assert small.shape == (16, 16, 3)
  np.testing.assert_allclose(small[0, 0], [110, 120, 130], atol=1e-3)
  np.testing.assert_allclose(small[15, 15], [10, 20, 30], atol=1e-3)


def test_committed_demo_stats():
  stats = dataset_stats.load_stats('data/clothing10-128/stats.npz', 256)
  assert stats['mean_image'].shape == (256, 256, 3)
  assert int(stats['num_images']) == 1000 and int(stats['resize_size']) == 256
  np.testing.assert_allclose(stats['mean'], stats['mean_image'].reshape(-1, 3).mean(0), rtol=1e-5)
  assert np.all(np.diff(stats['eigval']) < 0) and np.all(stats['eigval'] > 0)
  assert 20 < stats['eigval'][0] < 80  # same order as ImageNet's 55.46


def decoded_squares(paths, size):
  return np.stack([pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(p, 'rb').read()),
                                                         size), size) for p in paths])


def test_training_set_stats_are_a_seeded_sample_computed_once_and_cached(tmp_path, small_folder,
                                                                         monkeypatch):
  config = plain_config(small_folder, stats_file='', stats_images=5)
  stats = dataset_stats.training_set_stats(config.input, train_source(config), str(tmp_path), log=None)
  # A seeded sample (the same on every call), not the first 5 files (which are all one class).
  train = sources.ImageFolderSource(small_folder, 'train')
  indices = dataset_stats.sample_indices(len(train), 5)
  np.testing.assert_array_equal(indices, dataset_stats.sample_indices(len(train), 5))
  assert len(set(indices)) == 5 and len({train.labels[i] for i in indices}) == 2
  # Independent truth: numpy over exactly those files.
  imgs = decoded_squares([train.paths[i] for i in indices], 24).astype(np.float64)
  np.testing.assert_allclose(stats['mean_image'], imgs.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['mean'], imgs.reshape(-1, 3).mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['eigval'] * 255, np.sort(np.linalg.eigvalsh(
      np.cov(imgs.reshape(-1, 3).T, bias=True)))[::-1], rtol=1e-5)
  # Cached in the workdir and reused, without another pass over the images.
  assert os.path.isfile(tmp_path / dataset_stats.CACHE_NAME)
  monkeypatch.setattr(dataset_stats, 'compute_stats', lambda *a, **k: 1 / 0)
  again = dataset_stats.training_set_stats(config.input, train_source(config), str(tmp_path), log=None)
  np.testing.assert_array_equal(again['mean_image'], stats['mean_image'])


def test_pixel_and_channel_means_differ_and_lighting_eigen_options(tmp_path, small_folder):
  """input.mean=pixel subtracts the mean image, =channel its per-channel mean: different
  arrays. lighting_eigen picks the dataset's eigenvalues or the built-in ImageNet ones."""
  train_paths = sources.ImageFolderSource(small_folder, 'train').paths
  mean_image = decoded_squares(train_paths, 24).astype(np.float64).mean(axis=0)
  val = decoded_squares(sources.ImageFolderSource(small_folder, 'val').paths, 24)
  out = {}
  for mean in ('pixel', 'channel'):
    config = plain_config(small_folder, stats_file='', mean=mean)
    config.eval.batch_size = 6
    out[mean] = next(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))['image']
  np.testing.assert_allclose(out['pixel'], val - mean_image, atol=1e-3)
  np.testing.assert_allclose(out['channel'], val - mean_image.reshape(-1, 3).mean(0), atol=1e-3)
  assert np.abs(out['pixel'] - out['channel']).max() > 10  # a real per-pixel mean, not broadcast
  config = plain_config(small_folder, stats_file='')
  dataset = dataset_stats.training_set_stats(config.input, train_source(config), None, log=None)
  assert not np.allclose(dataset['eigval'], pp.IMAGENET_EIGVAL, rtol=0.05)
  config.input.lighting_eigen = 'imagenet'
  builtin = dataset_stats.training_set_stats(config.input, train_source(config), None, log=None)
  np.testing.assert_array_equal(builtin['eigval'], pp.IMAGENET_EIGVAL.astype(np.float32))
  np.testing.assert_array_equal(builtin['mean_image'], dataset['mean_image'])  # the mean stays
  config.input.lighting_eigen = 'fb'
  with pytest.raises(UserError, match='lighting_eigen'):
    dataset_stats.training_set_stats(config.input, train_source(config), None, log=None)


def test_dataset_stats_cli(tmp_path):
  out = tmp_path / 'stats.npz'
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.dataset_stats', '--config=configs/alexnet.py:tiny',
       f'--out={out}', '--max_images=4'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert 'mean (RGB)' in proc.stdout and '4/4 images' in proc.stdout
  assert dataset_stats.load_stats(str(out), 72)['mean_image'].shape == (72, 72, 3)


# --- train loader ---


def test_train_batches_real_data_shapes():
  config = tiny_config()
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  for b in take(it, 2):
    assert b['image'].shape == (8, 67, 67, 3) and b['image'].dtype == np.float32
    assert b['label'].shape == (8,) and b['label'].dtype == np.int32
    assert set(b) == {'image', 'label', 'valid'} and b['valid'].all()
    assert np.all((b['label'] >= 0) & (b['label'] < 10))
    assert np.all(np.isfinite(b['image']))
    assert abs(float(b['image'].mean())) < 1.0  # standardised (demo stats): roughly centred


def test_train_determinism_and_seeds():
  config = tiny_config()
  a = take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=3)), 3)
  b = take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=3)), 3)
  c = take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=4)), 3)
  assert_batches_equal(a, b)
  assert not np.array_equal(a[0]['image'], c[0]['image'])
  assert not np.array_equal(a[0]['label'], c[0]['label'])


def test_train_resume_from_iterator_state(small_folder):
  # 12 images, batches of 4: 3 per epoch, so the restored stretch crosses epoch boundaries.
  config = plain_config(small_folder, random_flip=True, pca_lighting=True)
  config.input.image_size = 20  # random crops too
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=1))
  take(it, 2)
  state = it.get_state()
  assert state == {'global_next_index': 8}  # the next position in the global order
  reference = take(it, 5)
  restored = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=1))
  restored.set_state(state)
  assert_batches_equal(take(restored, 5), reference)


def test_train_epochs_are_permutations(small_folder):
  table = expected_images(small_folder, 'train')
  config = plain_config(small_folder)
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  epoch1, epoch2 = identify(take(it, 3), table), identify(take(it, 3), table)
  all_paths = sorted(p for p, _ in table.values())
  assert sorted(epoch1) == all_paths and sorted(epoch2) == all_paths
  assert epoch1 != epoch2  # reshuffled


def test_train_two_shards_disjoint_and_cover(small_folder):
  table = expected_images(small_folder, 'train')
  config = plain_config(small_folder)
  shards = []
  for index in range(2):
    it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0, shard_index=index,
                                                 shard_count=2))
    batches = take(it, 3)  # one epoch of the shard: 6 images in per-process batches of 2
    assert all(b['image'].shape[0] == 2 for b in batches)
    shards.append(identify(batches, table))
  assert len(set(shards[0])) == 6 and len(set(shards[1])) == 6
  assert not set(shards[0]) & set(shards[1])
  assert set(shards[0]) | set(shards[1]) == {p for p, _ in table.values()}
  config.train.batch_size = 5
  with pytest.raises(UserError, match='not divisible'):
    pipeline.create_train_loader(config, dataset_lib.build(config), seed=0, shard_index=0, shard_count=2)


def test_worker_count_changes_nothing_and_a_state_moves_between_worker_counts(small_folder):
  """Grain worker processes (spawned): the same batches as in-process decoding, and a state
  saved with 2 workers restores in-process at the same place (a resume with other workers)."""
  config = plain_config(small_folder, random_flip=True, pca_lighting=True)
  reference = take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2)), 5)
  config.input.workers = 2
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2))
  assert_batches_equal(take(it, 2), reference[:2])
  state = it.get_state()
  pipeline.close_iterator(it)
  config.input.workers = 0
  restored = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2))
  restored.set_state(state)
  assert_batches_equal(take(restored, 3), reference[2:])


# --- eval loader ---


def test_eval_pass_real_val_split_padded():
  config = tiny_config()
  config.eval.batch_size = 50  # 240 images: 5 batches, the last with 40 real + 10 padding
  batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))
  assert len(batches) == 5
  for b in batches:
    assert b['image'].shape == (50, 67, 67, 3) and b['image'].dtype == np.float32
    assert b['mask'].dtype == np.bool_ and b['label'].dtype == np.int32
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [True] * 240 + [False] * 10
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert not images[240:].any() and not labels[240:].any()  # padding: zeros, label 0
  # the ordered pass, record by record, against each val file preprocessed on its own
  stats = dataset_stats.load_stats(config.input.stats_file, 72)
  paths = sorted(glob.glob(os.path.join(DATA, 'val', '*', '*')))
  assert len(paths) == 240
  for i, path in enumerate(paths):
    assert labels[i] == CLASSES.index(os.path.basename(os.path.dirname(path)))
    square = pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(path, 'rb').read()),
                                                   72), 72)
    expected = (square.astype(np.float32) - stats['mean_image'])[2:69, 2:69] / stats['std']
    np.testing.assert_allclose(images[i], expected, rtol=1e-6, atol=1e-6)


def test_eval_two_shards_cover_once_same_batch_count():
  config = tiny_config()
  config.eval.batch_size = 50
  config.input.update(resize_size=24, image_size=24, mean='channel', standardize=False,
                      stats_file=DEMO_STATS)
  table = expected_images(DATA, 'val')
  found, counts = [], []
  for index in range(2):
    batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config), shard_index=index,
                                                          shard_count=2)))
    counts.append(len(batches))
    assert all(b['image'].shape[0] == 50 for b in batches)
    found += identify(batches, table)
  assert counts == [3, 3]  # 120 real per process -> 3 batches of 50 each, padded equally
  assert sorted(found) == sorted(p for p, _ in table.values())  # each val image exactly once


def test_eval_ten_crop(small_folder):
  config = plain_config(small_folder, image_size=20)
  config.eval.batch_size = 4  # 6 val images: 2 batches, 2 padded
  batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config), ten_crop=True)))
  assert [b['mask'].tolist() for b in batches] == [[True] * 4, [True, True, False, False]]
  assert batches[0]['image'].shape == (4, 10, 20, 20, 3)
  first = sorted(glob.glob(os.path.join(small_folder, 'val', SMALL_CLASSES[0], '*')))[0]
  square = pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(first, 'rb').read()), 24),
                          24)
  x = square.astype(np.float32) - CHANNEL_MEAN
  crops = [x[:20, :20], x[:20, 4:], x[4:, :20], x[4:, 4:], x[2:22, 2:22]]
  np.testing.assert_array_equal(batches[0]['image'][0],
                                np.stack(crops + [c[:, ::-1] for c in crops]))
  assert not batches[1]['image'][2:].any()


# --- TFDS path: a real array_record dataset built in a temporary data_dir ---

TFDS_FILES = {split: [(p, label) for label, name in enumerate(SMALL_CLASSES)
                      for p in sorted(glob.glob(os.path.join(DATA, folder, name, '*')))[:n]]
              for split, folder, n in (('train', 'train', 10), ('validation', 'val', 3))}


class AlexnetTestClothing(tfds.core.GeneratorBasedBuilder):
  """20 train / 6 validation clothing JPEGs, 2 classes (registered as 'alexnet_test_clothing')."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'label': tfds.features.ClassLabel(names=list(SMALL_CLASSES))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in TFDS_FILES}

  def _generate_examples(self, split):
    for i, (path, label) in enumerate(TFDS_FILES[split]):
      yield f'{split}{i}', {'image': path, 'label': label}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepared = prepare.prepare('alexnet_test_clothing', data_dir=data_dir)
  assert glob.glob(os.path.join(prepared, '*.array_record*'))
  return data_dir


def tfds_config(data_dir, size=24):
  config = plain_config(DATA, size)
  config.dataset.update(name='alexnet_test_clothing', data_dir=data_dir, train_split='train',
                        eval_split='validation')
  return config


def test_tfds_source_and_info(tfds_dir):
  config = tfds_config(tfds_dir)
  source = sources.make_source(config.dataset, 'train')
  assert len(source) == 20
  originals = {open(p, 'rb').read(): label for p, label in TFDS_FILES['train']}
  for i in range(len(source)):
    item = source[i]
    assert isinstance(item['image'], bytes)
    assert originals[item['image']] == item['label']  # the stored JPEG bytes, right label
  info = dataset_lib.build(config)
  assert (info.num_train, info.num_eval, info.num_classes) == (20, 6, 2)
  assert info.class_names == SMALL_CLASSES


def test_tfds_train_and_eval_loaders(tfds_dir):
  config = tfds_config(tfds_dir)
  table = expected_table(TFDS_FILES['train'])
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  found = identify(take(it, 5), table)  # one epoch: 20 images
  assert sorted(found) == sorted(p for p, _ in TFDS_FILES['train'])
  table = expected_table(TFDS_FILES['validation'])
  batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))
  assert len(batches) == 2 and sum(b['mask'].sum() for b in batches) == 6
  assert sorted(identify(batches, table)) == sorted(p for p, _ in TFDS_FILES['validation'])


def test_tfds_errors(tmp_path, tfds_dir):
  def one_line_error(config, split='train'):
    with pytest.raises(UserError) as e:
      sources.make_source(config.dataset, split)
    assert '\n' not in str(e.value)
    return str(e.value)

  config = tfds_config(str(tmp_path))
  config.dataset.name = 'no_such_dataset_xyz'
  assert "unknown dataset 'no_such_dataset_xyz'" in one_line_error(config)

  config.dataset.name = 'imagenet2012'
  msg = one_line_error(config)
  manual = os.path.join(str(tmp_path), 'downloads', 'manual')
  for part in ('not prepared', 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', manual,
               f'python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 --data_dir={tmp_path}'):
    assert part in msg
  config.dataset.manual_dir = '/archives/imagenet'
  assert 'in /archives/imagenet and run' in one_line_error(config)

  config.dataset.name = 'mnist'
  assert 'is not prepared' in one_line_error(config)

  assert "Unknown split 'test'" in one_line_error(tfds_config(tfds_dir), 'test')


def test_prepare_imagenet_without_archives(tmp_path):
  with pytest.raises(UserError,
                     match='missing ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar'):
    prepare.prepare('imagenet2012', data_dir=str(tmp_path))


def test_folder_path_imports_no_tensorflow(small_folder):
  code = f"""
import sys
import alexnet_jax.data.preprocessing
assert 'jax' not in sys.modules, 'preprocessing imports jax'
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from configs import alexnet
c = alexnet.get_config('tiny'); c.dataset.folder = {small_folder!r}; c.model.num_classes = 2
c.train.batch_size = 4
dataset = dataset_lib.build(c)
next(iter(pipeline.create_train_loader(c, dataset, seed=0)))
next(iter(pipeline.create_eval_loader(c, dataset)))
bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]
assert not bad, bad
"""
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr


def test_prepare_data_cli_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.prepare_data', '--dataset=imagenet2012',
       f'--data_dir={tmp_path}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'ILSVRC2012_img_train.tar' in errors[0]
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in errors[0]


@pytest.mark.slow  # imports TensorFlow (the imagenet2012 builder uses tf.io.gfile): ~10 s
def test_prepare_imagenet2012_from_fake_archives(tmp_path):
  """The real TFDS imagenet2012 builder on archives laid out like ILSVRC2012's, 4+1 JPEGs."""
  import io
  import tarfile

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  jpegs = sorted(glob.glob(os.path.join(DATA, 'train', '*', '*')))
  manual = tmp_path / 'manual'
  os.makedirs(manual)
  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for k, synset in enumerate(['n01440764', 'n01443537']):  # labels 0 and 1
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for j in range(2):
          add(inner, f'{synset}_{j}.JPEG', open(jpegs[100 * k + j], 'rb').read())
      add(outer, f'{synset}.tar', buf.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as val:
    add(val, 'ILSVRC2012_val_00000001.JPEG', open(jpegs[500], 'rb').read())  # label 65
  data_dir = str(tmp_path / 'tfds')
  prepare.prepare('imagenet2012', data_dir=data_dir, manual_dir=str(manual))
  config = alexnet_config.get_config()
  config.dataset.data_dir = data_dir
  info = dataset_lib.build(config)
  assert (info.num_train, info.num_eval, info.num_classes) == (4, 1, 1000)
  assert info.class_names[:2] == ('n01440764', 'n01443537')
  train = sources.make_source(config.dataset, 'train')
  assert sorted(train[i]['label'] for i in range(4)) == [0, 0, 1, 1]
  assert sources.make_source(config.dataset, 'validation')[0]['label'] == 65
