"""alexnet_jax/data/pipeline.py: the Grain train and eval loaders on the embedded clothing10
photos: shapes, determinism, epochs, shards, worker processes, iterator state and resume,
padding, the 10-crop, and no TensorFlow on the folder path. Truths: every image of a batch is
identified by exact equality with its file preprocessed on its own (tests/helpers.py), labels
come from the class folder names."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import dataset_stats
from alexnet_jax.data import pipeline
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.errors import UserError
from tests import helpers


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# --- train loader ---


def test_train_batches_real_data_shapes():
  config = helpers.tiny_config()
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  for b in helpers.take(it, 2):
    assert b['image'].shape == (8, 67, 67, 3) and b['image'].dtype == np.float32
    assert b['label'].shape == (8,) and b['label'].dtype == np.int32
    assert set(b) == {'image', 'label', 'valid'} and b['valid'].all()
    assert np.all((b['label'] >= 0) & (b['label'] < 10))
    assert np.all(np.isfinite(b['image']))
    assert abs(float(b['image'].mean())) < 1.0  # standardised (demo stats): roughly centred


def test_train_determinism_and_seeds():
  config = helpers.tiny_config()
  a = helpers.take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=3)), 3)
  b = helpers.take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=3)), 3)
  c = helpers.take(iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=4)), 3)
  assert_batches_equal(a, b)
  assert not np.array_equal(a[0]['image'], c[0]['image'])
  assert not np.array_equal(a[0]['label'], c[0]['label'])


def test_train_resume_from_iterator_state(small_folder):
  # 12 images, batches of 4: 3 per epoch, so the restored stretch crosses epoch boundaries.
  config = helpers.plain_config(small_folder, random_flip=True, pca_lighting=True)
  config.input.image_size = 20  # random crops too
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=1))
  helpers.take(it, 2)
  state = it.get_state()
  assert state == {'global_next_index': 8}  # the next position in the global order
  reference = helpers.take(it, 5)
  restored = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=1))
  restored.set_state(state)
  assert_batches_equal(helpers.take(restored, 5), reference)


def test_train_epochs_are_permutations(small_folder):
  table = helpers.expected_images(small_folder, 'train')
  config = helpers.plain_config(small_folder)
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  epoch1 = helpers.identify(helpers.take(it, 3), table)
  epoch2 = helpers.identify(helpers.take(it, 3), table)
  all_paths = sorted(p for p, _ in table.values())
  assert sorted(epoch1) == all_paths and sorted(epoch2) == all_paths
  assert epoch1 != epoch2  # reshuffled


def test_train_two_shards_disjoint_and_cover(small_folder):
  table = helpers.expected_images(small_folder, 'train')
  config = helpers.plain_config(small_folder)
  shards = []
  for index in range(2):
    it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0,
                                           shard_index=index, shard_count=2))
    batches = helpers.take(it, 3)  # one epoch of the shard: 6 images in per-process batches of 2
    assert all(b['image'].shape[0] == 2 for b in batches)
    shards.append(helpers.identify(batches, table))
  assert len(set(shards[0])) == 6 and len(set(shards[1])) == 6
  assert not set(shards[0]) & set(shards[1])
  assert set(shards[0]) | set(shards[1]) == {p for p, _ in table.values()}
  config.train.batch_size = 5
  with pytest.raises(UserError, match='not divisible'):
    pipeline.create_train_loader(config, dataset_lib.build(config), seed=0, shard_index=0,
                                 shard_count=2)


def test_worker_count_changes_nothing_and_a_state_moves_between_worker_counts(small_folder):
  """Grain worker processes (spawned): the same batches as in-process decoding, and a state
  saved with 2 workers restores in-process at the same place (a resume with other workers)."""
  config = helpers.plain_config(small_folder, random_flip=True, pca_lighting=True)
  reference = helpers.take(
      iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2)), 5)
  config.input.workers = 2
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2))
  assert_batches_equal(helpers.take(it, 2), reference[:2])
  state = it.get_state()
  pipeline.close_iterator(it)
  config.input.workers = 0
  restored = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=2))
  restored.set_state(state)
  assert_batches_equal(helpers.take(restored, 3), reference[2:])


# --- eval loader ---


def test_eval_pass_real_val_split_padded():
  config = helpers.tiny_config()
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
  paths = sorted(glob.glob(os.path.join(helpers.DATA, 'val', '*', '*')))
  assert len(paths) == 240
  for i, path in enumerate(paths):
    assert labels[i] == helpers.CLASSES.index(os.path.basename(os.path.dirname(path)))
    square = pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(path, 'rb').read()),
                                                   72), 72)
    expected = (square.astype(np.float32) - stats['mean_image'])[2:69, 2:69] / stats['std']
    np.testing.assert_allclose(images[i], expected, rtol=1e-6, atol=1e-6)


def test_eval_two_shards_cover_once_same_batch_count():
  config = helpers.tiny_config()
  config.eval.batch_size = 50
  config.input.update(resize_size=24, image_size=24, mean='channel', standardize=False,
                      stats_file=helpers.DEMO_STATS)
  table = helpers.expected_images(helpers.DATA, 'val')
  found, counts = [], []
  for index in range(2):
    batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config),
                                                    shard_index=index, shard_count=2)))
    counts.append(len(batches))
    assert all(b['image'].shape[0] == 50 for b in batches)
    found += helpers.identify(batches, table)
  assert counts == [3, 3]  # 120 real per process -> 3 batches of 50 each, padded equally
  assert sorted(found) == sorted(p for p, _ in table.values())  # each val image exactly once


def test_eval_ten_crop(small_folder):
  config = helpers.plain_config(small_folder, image_size=20)
  config.eval.batch_size = 4  # 6 val images: 2 batches, 2 padded
  batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config),
                                                  ten_crop=True)))
  assert [b['mask'].tolist() for b in batches] == [[True] * 4, [True, True, False, False]]
  assert batches[0]['image'].shape == (4, 10, 20, 20, 3)
  first = sorted(glob.glob(os.path.join(small_folder, 'val', helpers.SMALL_CLASSES[0], '*')))[0]
  square = pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(first, 'rb').read()), 24),
                          24)
  x = square.astype(np.float32) - helpers.CHANNEL_MEAN
  crops = [x[:20, :20], x[:20, 4:], x[4:, :20], x[4:, 4:], x[2:22, 2:22]]
  np.testing.assert_array_equal(batches[0]['image'][0],
                                np.stack(crops + [c[:, ::-1] for c in crops]))
  assert not batches[1]['image'][2:].any()


# --- imports ---


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
  proc = subprocess.run([sys.executable, '-c', code], cwd=helpers.ROOT, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr


def test_random_crop_off_trains_on_the_centre_crop(small_folder):
  """input.random_crop=False (the crop ablation): every training image is its file's centre
  crop, computed file by file; with random crops on, some are not."""
  size, crop = 24, 20
  lo = (size - crop) // 2
  table = {}
  for key, (path, label) in helpers.expected_images(small_folder, 'train', size).items():
    square = np.frombuffer(key, np.float32).reshape(size, size, 3)
    table[np.ascontiguousarray(square[lo:lo + crop, lo:lo + crop]).tobytes()] = (path, label)
  found = {}
  for random_crop in (False, True):
    config = helpers.plain_config(small_folder, size, image_size=crop, random_crop=random_crop)
    batches = helpers.take(iter(pipeline.create_train_loader(
        config, dataset_lib.build(config), seed=0)), 3)  # one epoch of the 12 images
    images = [np.ascontiguousarray(img).tobytes() for b in batches for img in b['image']]
    found[random_crop] = [table.get(img) for img in images]
  assert sorted(p for p, _ in found[False]) == sorted(p for p, _ in table.values())
  assert None in found[True]
