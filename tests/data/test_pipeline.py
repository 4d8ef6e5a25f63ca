"""alexnet_jax/data/pipeline.py: the Grain train and eval loaders on the embedded clothing10
photos: shapes, determinism, epochs, shards, worker processes, iterator state and resume,
padding, the 10-crop, eval workers started once per run, files that cannot be read, the worker
and thread counts chosen from the machine, the unreadable-image limit, and no TensorFlow on the
folder path. Truths: every image of a batch is
identified by exact equality with its file preprocessed on its own (tests/helpers.py), labels
come from the class folder names."""
import glob
import multiprocessing
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax import evaluation
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import dataset_stats
from alexnet_jax.data import pipeline
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.errors import RunFailure
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
  # (A batch that does not split over the processes: config_validation.check_batches.)


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
    assert all(b['image'].shape[0] == 25 for b in batches)  # each process's half of 50
    found += helpers.identify(batches, table)
  assert counts == [5, 5]  # 120 real per process -> 5 batches of 25 each, padded equally
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


def test_eval_workers_start_once_and_every_pass_is_the_same(small_folder, monkeypatch):
  """evaluation.evaluate twice on one loader with 2 worker processes: the workers start at
  the first pass only (Process.start counted), both passes give the batches of 0 workers, in
  order (before, each worker batched its own records and dropped their remainder), and the
  results are identical."""
  starts = []
  real_start = multiprocessing.process.BaseProcess.start
  monkeypatch.setattr(multiprocessing.process.BaseProcess, 'start',
                      lambda self: (starts.append(self), real_start(self))[1])
  config = helpers.plain_config(small_folder)
  config.eval.batch_size = 2  # 6 val images: 3 batches, split 2 + 1 over the workers
  reference = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))
  assert len(reference) == 3 and not starts
  config.input.workers = 2
  loader = pipeline.create_eval_loader(config, dataset_lib.build(config))
  mesh = helpers.mesh_of(1, 1)
  seen = []

  def step(state, batch):  # what evaluate sums, from the batches themselves
    seen.append(jax.device_get(batch))
    image_sums = batch['image'].sum(axis=(1, 2, 3))
    return {'loss': jnp.sum(image_sums * batch['mask']), 'top1': jnp.sum(batch['label']),
            'top5': jnp.sum(batch['mask']), 'count': jnp.sum(batch['mask'])}

  first = evaluation.evaluate(None, loader, step, mesh)
  workers = sorted(p.pid for p in starts)
  assert len(workers) == 2 and first['count'] == 6
  assert_batches_equal(seen, [{k: v for k, v in b.items() if k != 'skipped'}
                              for b in reference])
  seen.clear()
  assert evaluation.evaluate(None, loader, step, mesh) == first
  assert sorted(p.pid for p in starts) == workers  # no new process
  assert all(p.is_alive() for p in starts)
  assert_batches_equal(seen, [{k: v for k, v in b.items() if k != 'skipped'}
                              for b in reference])
  next(iter(loader))  # a pass left unfinished: the next one starts at the beginning again
  assert evaluation.evaluate(None, loader, step, mesh) == first and len(starts) == 2
  pipeline.close_iterator(loader)
  assert not any(p.is_alive() for p in starts)


def test_loader_size_from_the_machine(monkeypatch):
  """input.workers / prefetch = -1: on a CPU backend 0 workers and 2 threads (the step needs
  the cores); on a GPU every core of this process's share but one decodes, at most 8 threads
  a process. Explicit values stay. Each case worked out by hand."""
  def size(workers=-1, threads=-1, platform='gpu', cores=16, processes=1):
    inp = ml_collections.ConfigDict({'workers': workers, 'prefetch': threads})
    s = pipeline.loader_size(inp, platform, (cores, processes))
    return s.workers, s.threads

  assert size(platform='cpu', cores=64) == (0, 2)
  assert size(platform='cpu', workers=3) == (3, 2)
  assert size(cores=2) == (0, 1)  # 1 decoding core
  assert size(cores=9) == (0, 8)  # 8: one process's threads
  assert size(cores=16) == (2, 8)  # 15 cores: 2 workers x 8 threads
  assert size(cores=96, platform='tpu') == (12, 8)  # 95: 12 x 8
  assert size(cores=16, workers=3) == (3, 5)  # 15 / 3
  assert size(cores=16, threads=4) == (4, 4)  # ceil(15 / 4) workers
  assert size(cores=16, workers=1, threads=2) == (1, 2)
  line = pipeline.loader_size(ml_collections.ConfigDict({'workers': -1, 'prefetch': -1}),
                              'gpu', (16, 4)).describe()
  assert line == ('input: 2 worker process(es), 8 read thread(s) per process (input.workers '
                  'and input.prefetch auto: 16 core(s) for this process of 4 on this host, gpu '
                  'backend)')
  # Several processes on a host share its cores, unless each is bound to its own already.
  monkeypatch.setattr(os, 'cpu_count', lambda: 64)
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(64)))
  assert pipeline.host_cores({}) == (64, 1)
  assert pipeline.host_cores({'LOCAL_WORLD_SIZE': '8'}) == (8, 8)
  assert pipeline.host_cores({'SLURM_NTASKS_PER_NODE': '4(x2)'}) == (16, 4)
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(8)))
  assert pipeline.host_cores({'LOCAL_WORLD_SIZE': '8'}) == (8, 8)


def test_unreadable_images_stop_a_run_past_the_fraction():
  """Training windows of at least MIN_WINDOW images and evaluation passes: at or below the
  fraction nothing happens, past it one RunFailure line."""
  policy = pipeline.UnreadableImages(0.01)
  valid = np.ones(500, bool)
  valid[:5] = False  # 1 %
  policy.add(valid)
  policy.check(step=1)  # 500 images: too few to judge
  policy.add(valid)
  policy.check(step=2)  # 10 of 1000: 1 %, not past it
  assert policy.read == 0  # a new window
  valid[5] = False
  policy.add(valid)
  policy.add(valid)
  with pytest.raises(RunFailure, match=r'^12 of the last 1000 training images \(step 3\) could '
                     r'not be read \(1.2% > config.input.max_unreadable_frac=0.01'):
    policy.check(step=3)
  policy.check_eval({'count': 990, 'skipped_images': 10}, step=4)
  with pytest.raises(RunFailure, match='11 of the 1000 validation images') as e:
    policy.check_eval({'count': 989, 'skipped_images': 11}, step=4)
  assert '\n' not in str(e.value)
  pipeline.UnreadableImages(1.0).check_eval({'count': 0, 'skipped_images': 50}, step=1)


def test_an_unreadable_file_is_skipped_and_counted_on_every_path(tmp_path):
  """A file deleted after the index was built: its row is blank and invalid in training
  batches (host and device augmentation) and counted as skipped in evaluation."""
  folder = helpers.copy_images(tmp_path / 'data', helpers.SMALL_CLASSES, {'train': 2, 'val': 2})
  config = helpers.plain_config(folder)
  dataset = dataset_lib.build(config, run_dir=str(tmp_path / 'run'))
  os.remove(dataset.train_source.path(2))
  os.remove(dataset.eval_source.path(0))
  for augment_on in ('host', 'device'):
    config.input.augment_on = augment_on
    batch = next(iter(pipeline.create_train_loader(config, dataset, seed=0)))  # all 4 images
    assert (~batch['valid']).sum() == 1
    blank = batch['image'][~batch['valid']][0]  # host: the zero image, its mean subtracted
    np.testing.assert_array_equal(blank, 0 if augment_on == 'device' else
                                  np.broadcast_to(-helpers.CHANNEL_MEAN, blank.shape))
  batch = next(iter(pipeline.create_eval_loader(config, dataset)))
  assert batch['skipped'].tolist() == [True, False, False, False]
  assert batch['mask'].tolist() == [False, True, True, True]


# --- imports ---


def test_folder_path_imports_no_tensorflow(small_folder):
  code = f"""
import sys
import alexnet_jax.data.preprocessing
assert 'jax' not in sys.modules, 'preprocessing imports jax'
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.tools import cli
c = cli.config_module('configs/alexnet.py').get_config('tiny'); c.dataset.folder = {small_folder!r}; c.model.num_classes = 2
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
