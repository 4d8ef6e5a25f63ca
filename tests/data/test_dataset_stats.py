"""alexnet_jax/data/dataset_stats.py: the mean image, channel mean and std, covariance and its
eigenvectors (PCA lighting) against numpy on the same images stacked by hand, the .npz round trip
and resize of the mean image, the committed demo statistics, the training set's seeded sample
computed once and cached in the workdir, unreadable images in it skipped and counted, and a full
disk while caching it."""
import glob
import os

import numpy as np
import pytest

from alexnet_jax.data import dataset_stats
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data import sources
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from tests import helpers


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


def test_training_set_stats_are_a_seeded_sample_computed_once_and_cached(tmp_path, small_folder,
                                                                         monkeypatch):
  config = helpers.plain_config(small_folder, stats_file='', stats_images=5)
  stats = dataset_stats.training_set_stats(config.input, helpers.train_source(config),
                                           str(tmp_path), log=None)
  # A seeded sample (the same on every call), not the first 5 files (which are all one class).
  train = sources.ImageFolderSource(small_folder, 'train')
  indices = dataset_stats.sample_indices(len(train), 5)
  np.testing.assert_array_equal(indices, dataset_stats.sample_indices(len(train), 5))
  assert len(set(indices)) == 5 and len({train.labels[i] for i in indices}) == 2
  # Independent truth: numpy over exactly those files.
  imgs = helpers.decoded_squares([train.paths[i] for i in indices], 24).astype(np.float64)
  np.testing.assert_allclose(stats['mean_image'], imgs.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['mean'], imgs.reshape(-1, 3).mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['eigval'] * 255, np.sort(np.linalg.eigvalsh(
      np.cov(imgs.reshape(-1, 3).T, bias=True)))[::-1], rtol=1e-5)
  # Cached in the workdir and reused, without another pass over the images.
  assert os.path.isfile(tmp_path / dataset_stats.CACHE_NAME)
  monkeypatch.setattr(dataset_stats, 'compute_stats', lambda *a, **k: 1 / 0)
  again = dataset_stats.training_set_stats(config.input, helpers.train_source(config),
                                           str(tmp_path), log=None)
  np.testing.assert_array_equal(again['mean_image'], stats['mean_image'])


def test_unreadable_images_in_the_sample_are_skipped_and_counted(tmp_path, capsys):
  """An empty and a truncated JPEG among the sampled images: left out of the sums and counted in
  one warning line; the statistics are those of the readable images (numpy over exactly them)."""
  folder = helpers.copy_images(tmp_path / 'data', helpers.SMALL_CLASSES, {'train': 3, 'val': 1})
  good = sorted(glob.glob(os.path.join(folder, 'train', '*', '*.jpg')))
  with open(good[0], 'rb') as f:
    photo = f.read()
  bad = {os.path.join(folder, 'train', 'hat', 'empty.jpg'): b'',
         os.path.join(folder, 'train', 'shoes', 'truncated.jpg'): photo[:len(photo) // 3]}
  for path, content in bad.items():
    with open(path, 'wb') as f:
      f.write(content)
  config = helpers.plain_config(folder, stats_file='', stats_images=0)  # all 8 files
  stats = dataset_stats.training_set_stats(config.input, helpers.train_source(config),
                                           str(tmp_path / 'run'), log=None)
  imgs = helpers.decoded_squares(good, 24).astype(np.float64)
  np.testing.assert_allclose(stats['mean_image'], imgs.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(stats['mean'], imgs.reshape(-1, 3).mean(axis=0), rtol=1e-6)
  assert int(stats['num_images']) == 6 and int(stats['skipped_images']) == 2
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      'warning: 2 of the 8 images sampled for the statistics could not be read or decoded')
  assert any(f'(e.g. {path}: ' in lines[0] for path in bad)
  assert os.path.isfile(tmp_path / 'run' / dataset_stats.CACHE_NAME)  # cached as usual
  # Nothing readable: one line, not statistics of nothing.
  source = sources.ImageFolderSource(folder, 'train')
  unreadable = [i for i, p in enumerate(source.paths) if p in bad]
  helpers.one_line_error(lambda: dataset_stats.compute_stats(source, 24, indices=unreadable,
                                                             log=None),
                         match='none of the 2 images sampled for the statistics could be read')


def test_full_disk_while_caching_the_statistics_is_one_line_and_leaves_no_file(tmp_path,
                                                                               small_folder,
                                                                               monkeypatch):
  real_open = open
  monkeypatch.setattr(dataset_stats, 'open',
                      lambda *a, **k: helpers.FullFile(real_open(*a, **k)),
                      raising=False)
  config = helpers.plain_config(small_folder, stats_file='', stats_images=2)
  with pytest.raises(RunFailure) as raised:
    dataset_stats.training_set_stats(config.input, helpers.train_source(config), str(tmp_path),
                                     log=None)
  path = os.path.join(tmp_path, dataset_stats.CACHE_NAME)
  assert str(raised.value).startswith(f'could not write {path} (No space left on device)')
  assert '\n' not in str(raised.value)
  assert os.listdir(tmp_path) == []  # neither the cache nor its temporary file
