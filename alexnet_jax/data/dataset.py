"""The dataset of a run, built once at start-up and handed to everything that reads data.

`build(config)` opens the train and eval sources (each listed once), checks their classes
against config.model.num_classes, and computes or loads the training set's statistics (the
mean image and RGB PCA of paper sections 2 and 4.1) into the preprocessing parameters. The
train and eval loaders (pipeline.py), the training loop, evaluation, prediction and the tools
all receive this one object, so a folder is listed and the statistics are read once per run.

`of_run(workdir, config)` is the same without reading any split: prediction needs only the
class names the run saved and the statistics it cached.
"""
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from alexnet_jax import metric_logging
from alexnet_jax.data import dataset_stats
from alexnet_jax.data import sources
from alexnet_jax.data.preprocessing import PreprocessParams
from alexnet_jax.errors import UserError

CLASSES_FILE = 'classes.json'  # in the workdir: the class names, for prediction


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Sources, class names and preprocessing parameters of one dataset (one config)."""
  name: str
  class_names: tuple[str, ...]
  preprocess: PreprocessParams
  train_source: Any = None  # Grain random-access sources; None where not opened
  eval_source: Any = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_train(self) -> int:
    return len(self.train_source)

  @property
  def num_eval(self) -> int:
    return len(self.eval_source)

  @functools.cached_property
  def identity(self) -> dict:
    """What must stay the same when only a path to the data or its statistics changes
    (stored in each checkpoint; a resume compares it). Hashed once per dataset: every
    checkpoint stores it."""
    digest = hashlib.sha256()
    p = self.preprocess
    for array in (p.mean, p.std, p.eigval, p.eigvec):
      if array is not None:
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return {'num_train': self.num_train, 'num_eval': self.num_eval,
            'class_names': list(self.class_names), 'statistics': digest.hexdigest()[:16]}


def build(config, *, stats_dir: str | None = None, log=print, open_train: bool = True,
          run_dir: str | None = None) -> Dataset:
  """The dataset of config.dataset with config.input's preprocessing.

  stats_dir: where computed statistics are cached (the run's workdir); None computes them on
  each call (tests and tools on small data). open_train=False (evaluating a run) opens the
  training split only if its statistics must be computed: listing ImageNet's training folder
  takes long, and evaluation reads the eval split alone. run_dir (a training run's workdir):
  an image folder is listed once, at the run's first start, into the run's file index, which
  every later start and every process reads (sources.open_folder). Raises UserError (one
  line) for missing data, mismatched classes or bad input settings.
  """
  index_options = _file_index_options(log) if run_dir else {}
  # The training split first: a missing dataset is reported by the split training reads.
  train = (sources.make_source(config.dataset, config.dataset.train_split, run_dir,
                               **index_options) if open_train else None)
  evals = sources.make_source(config.dataset, config.dataset.eval_split, run_dir,
                              **index_options)
  names = sources.class_names_of(evals)
  if train is not None and sources.class_names_of(train) != names:
    raise UserError(f'the {config.dataset.train_split!r} and {config.dataset.eval_split!r} '
                    'splits have different class folders')
  sources.check_num_classes(config, len(names))
  sources.check_prepared_size(config, train if train is not None else evals)

  def train_source():  # the statistics' pass reads the training split: the one opened above
    return train if train is not None else sources.make_source(config.dataset,
                                                                config.dataset.train_split)

  stats = dataset_stats.training_set_stats(config.input, train_source, stats_dir, log)
  return Dataset(name=config.dataset.name, class_names=tuple(names),
                 preprocess=preprocess_params(config.input, stats), train_source=train,
                 eval_source=evals)


def _file_index_options(log) -> dict:
  """Process 0 writes a run's file index; with several processes, all wait for it."""
  barrier = None
  if jax.process_count() > 1:
    barrier = lambda: multihost_utils.sync_global_devices('alexnet_jax file index')
  return {'writer': jax.process_index() == 0, 'barrier': barrier, 'log': log}


def of_run(workdir: str, config) -> Dataset:
  """A finished or running run's class names and preprocessing, without reading its data
  (unless its statistics were never cached: then they are computed from its training set)."""
  try:
    with open(os.path.join(workdir, CLASSES_FILE)) as f:
      names = tuple(json.load(f))
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read the class names of run {workdir!r}: {e}') from None
  train_source = lambda: sources.make_source(config.dataset, config.dataset.train_split)
  stats = dataset_stats.training_set_stats(config.input, train_source, workdir, log=None)
  return Dataset(name=config.dataset.name, class_names=names,
                 preprocess=preprocess_params(config.input, stats))


def save_class_names(dataset: Dataset, workdir: str) -> None:
  """<workdir>/classes.json, whole or as it was (a full disk is one RunFailure line)."""
  metric_logging.write_file(os.path.join(workdir, CLASSES_FILE),
                            json.dumps(list(dataset.class_names)))


def preprocess_params(input_config, stats: dict) -> PreprocessParams:
  """The transforms' parameters from config.input and the training set's statistics."""
  inp = input_config
  if inp.image_size > inp.resize_size:
    raise UserError(f'config.input.image_size ({inp.image_size}) is larger than '
                    f'config.input.resize_size ({inp.resize_size})')
  if inp.mean == 'pixel':
    mean = stats['mean_image']
  elif inp.mean == 'channel':
    mean = stats['mean']
  else:
    raise UserError(f"config.input.mean must be 'pixel' or 'channel', got {inp.mean!r}")
  return PreprocessParams(
      resize_size=inp.resize_size, image_size=inp.image_size, mean=mean,
      std=stats['std'] if inp.standardize else None, random_flip=bool(inp.random_flip),
      random_crop=bool(inp.get('random_crop', True)),
      lighting_std=float(inp.lighting_std) if inp.pca_lighting else 0.0,
      eigval=stats['eigval'], eigvec=stats['eigvec'])
