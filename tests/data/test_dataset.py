"""alexnet_jax/data/dataset.py: the Dataset built once per run from the config (sizes, class
names from the folder layout, the num_classes check) and the preprocessing it hands the loaders
(input.mean=pixel or channel, lighting_eigen), against the class folders and numpy's mean of the
same images decoded by hand; a training run lists its folders once, and a resume after files
were deleted reads its own file index, skips and counts them, and stops past
input.max_unreadable_frac."""
import glob
import os

import numpy as np
import pytest

from alexnet_jax import train
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import dataset_stats
from alexnet_jax.data import pipeline
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data import sources
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from tests import helpers


def test_dataset_info_folder():
  info = dataset_lib.build(helpers.tiny_config())
  assert (info.num_train, info.num_eval, info.num_classes) == (1000, 240, 10)
  assert list(info.class_names) == helpers.CLASSES
  config = helpers.tiny_config()
  config.model.num_classes = 1000
  with pytest.raises(UserError, match='has 10 classes but config.model.num_classes is 1000'):
    dataset_lib.build(config)


def test_pixel_and_channel_means_differ_and_lighting_eigen_options(tmp_path, small_folder):
  """input.mean=pixel subtracts the mean image, =channel its per-channel mean: different
  arrays. lighting_eigen picks the dataset's eigenvalues or the built-in ImageNet ones."""
  train_paths = sources.ImageFolderSource(small_folder, 'train').paths
  mean_image = helpers.decoded_squares(train_paths, 24).astype(np.float64).mean(axis=0)
  val = helpers.decoded_squares(sources.ImageFolderSource(small_folder, 'val').paths, 24)
  out = {}
  for mean in ('pixel', 'channel'):
    config = helpers.plain_config(small_folder, stats_file='', mean=mean)
    config.eval.batch_size = 6
    out[mean] = next(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))['image']
  np.testing.assert_allclose(out['pixel'], val - mean_image, atol=1e-3)
  np.testing.assert_allclose(out['channel'], val - mean_image.reshape(-1, 3).mean(0), atol=1e-3)
  assert np.abs(out['pixel'] - out['channel']).max() > 10  # a real per-pixel mean, not broadcast
  config = helpers.plain_config(small_folder, stats_file='')
  dataset = dataset_stats.training_set_stats(config.input, helpers.train_source(config), None,
                                             log=None)
  assert not np.allclose(dataset['eigval'], pp.IMAGENET_EIGVAL, rtol=0.05)
  config.input.lighting_eigen = 'imagenet'
  builtin = dataset_stats.training_set_stats(config.input, helpers.train_source(config), None,
                                             log=None)
  np.testing.assert_array_equal(builtin['eigval'], pp.IMAGENET_EIGVAL.astype(np.float32))
  np.testing.assert_array_equal(builtin['mean_image'], dataset['mean_image'])  # the mean stays
  config.input.lighting_eigen = 'fb'
  with pytest.raises(UserError, match='lighting_eigen'):
    dataset_stats.training_set_stats(config.input, helpers.train_source(config), None, log=None)


def test_a_training_run_lists_each_split_once(tmp_path, monkeypatch):
  """The dataset is built once per run: training (loaders, statistics, resume identity and
  evaluation) opens the train and eval folders one time each and gets the statistics once."""
  opened = helpers.record_folder_openings(monkeypatch)
  real_stats = dataset_stats.training_set_stats
  stats_calls = []

  def counting_stats(*args, **kwargs):
    stats_calls.append(args)
    return real_stats(*args, **kwargs)

  monkeypatch.setattr(dataset_stats, 'training_set_stats', counting_stats)
  config = helpers.tiny_config()
  config.train.num_steps = 2
  config.input.stats_file = ''  # the statistics are computed from the already open split
  config.input.stats_images = 16
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['final_step'] == 2 and summary['eval']['count'] == 240
  assert sorted(opened) == ['train', 'val']
  assert len(stats_calls) == 1  # the statistics: computed (or read) once


def test_a_resume_after_files_were_deleted_skips_and_counts_them(tmp_path, monkeypatch, capsys):
  """Two training files deleted between two runs of one workdir: the second run resumes (the
  data check compares the run's own index, which still lists them; no folder is listed
  again), says so in one note line, skips both (one epoch reads each once), counts them in
  summary.json and the metrics, and finishes. A third run, stopping past
  input.max_unreadable_frac, is one RunFailure line. (The :tiny net and batches of the test
  above: the same compiled programs.)"""
  folder = helpers.copy_images(tmp_path / 'data', helpers.CLASSES, {'train': 4, 'val': 1})
  workdir = str(tmp_path / 'run')
  config = helpers.tiny_config(folder=folder)
  config.train.update(num_steps=5, checkpoint_every_steps=5)  # 40 images, batch 8: 1 epoch
  assert train.train_and_evaluate(config, workdir)['skipped_images'] == 0
  files = sorted(glob.glob(os.path.join(folder, 'train', '*', '*')))
  for path in (files[0], files[-1]):
    os.remove(path)
  opened = helpers.record_folder_openings(monkeypatch)
  capsys.readouterr()
  config.train.num_steps = 10
  summary = train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert opened == []  # the run's index, not a new listing
  assert 'resumed from' in out and summary['final_step'] == 10
  notes = [line for line in out.splitlines() if 'changed since this run listed it' in line]
  assert len(notes) == 1 and '2 of its 40 files are gone' in notes[0]
  assert summary['skipped_images'] == 2 and summary['eval']['count'] == 10
  assert helpers.read_summary(workdir)['skipped_images'] == 2
  assert helpers.train_records(workdir)[10]['train/skipped_images'] == 2
  monkeypatch.setattr(pipeline.UnreadableImages, 'MIN_WINDOW', 8)  # every step is a window
  config.train.num_steps = 15
  config.input.max_unreadable_frac = 0.1  # one of a step's 8 images is 12.5 %
  with pytest.raises(RunFailure, match='could not be read .* > config.input.max_unreadable_frac='
                     '0.1') as e:
    train.train_and_evaluate(config, workdir)
  assert '\n' not in str(e.value)
