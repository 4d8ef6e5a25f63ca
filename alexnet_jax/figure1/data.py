"""Figure 1's data: the images held in memory, each regime's input, and the batch order.

Two sources, one Images: an image folder split (the embedded photos, or CIFAR-10 in that
layout), each image's shorter side resized to image_size px, then the centre crop
(load_images); or a TFDS image-classification dataset such as 'cifar10', read from its
prepared array_record files without downloading (load_tfds). balanced_subset, error_subset,
regime_inputs and batch_order work on either.
"""
import dataclasses
import time
import types
from typing import Callable

import numpy as np

from alexnet_jax.data import preprocessing
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import net

DATASETS = ('folder', 'cifar10')  # config.dataset: an image folder, or TFDS's cifar10
ERROR_SUBSET_SEED = 0  # error_subset's draw: the same images for every run of every setup
PROGRESS_S = 5.0  # loading reports its progress every this many seconds


@dataclasses.dataclass(frozen=True)
class Images:
  pixels: np.ndarray  # N x S x S x 3 uint8
  labels: np.ndarray  # N int32
  class_names: tuple[str, ...]


def balanced_subset(labels: np.ndarray, num_classes: int, num_images: int) -> np.ndarray:
  """The indices of the first num_images // num_classes (at least 1) images of each class, class
  by class."""
  per_class = max(1, num_images // num_classes)
  return np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in range(num_classes)])


def _fit(img: np.ndarray, image_size: int) -> np.ndarray:
  """The shorter side resized to image_size, then the centre crop (a no-op at that size)."""
  return preprocessing.center_crop(preprocessing.resize_shorter_side(img, image_size),
                                   image_size)


class _Progress:
  """Calls log with 'what: n / total images (s)' every PROGRESS_S seconds, from the first
  PROGRESS_S on: a load of a few seconds says nothing, a long one says how far it is."""

  def __init__(self, what: str, total: int, log: Callable[[str], None] | None):
    self.what, self.total, self.log = what, total, log
    self.start = self.last = time.perf_counter()

  def __call__(self, done: int) -> None:
    now = time.perf_counter()
    if self.log and now - self.last >= PROGRESS_S:
      self.last = now
      self.log(f'{self.what}: {done:,} / {self.total:,} images ({now - self.start:.0f} s)')


def load_images(folder: str, split: str, image_size: int, num_images: int = 0,
                log: Callable[[str], None] | None = None) -> Images:
  """A folder split (root/split/<class>/<images>, as ImageFolderSource lists it) at image_size:
  the shorter side resized, then the centre crop. num_images > 0 keeps a balanced subset (the
  first num_images // classes files of each class).

  The pixels are decoded straight into one uint8 array (CIFAR-10's 50,000 images at 32 px:
  154 MB, nothing else held); log gets the progress of a load that takes more than a few
  seconds (CIFAR-10 decodes in a few seconds; a cold disk takes longer)."""
  source = sources.ImageFolderSource(folder, split)
  paths, labels = np.array(source.paths), np.array(source.labels, np.int32)
  if num_images:
    keep = balanced_subset(labels, len(source.class_names), num_images)
    paths, labels = paths[keep], labels[keep]
  pixels = np.empty((len(paths), image_size, image_size, 3), np.uint8)
  progress = _Progress(f'decoding {folder}/{split}', len(paths), log)
  for i, path in enumerate(paths):
    with open(path, 'rb') as f:
      pixels[i] = _fit(preprocessing.decode_image(f.read()), image_size)
    progress(i + 1)
  return Images(pixels, labels, tuple(source.class_names))


def _prepare_hint(name: str, data_dir: str) -> str:
  return sources.prepare_command(name, types.SimpleNamespace(data_dir=data_dir, manual_dir=''))


def load_tfds(name: str, split: str, data_dir: str, image_size: int, num_images: int = 0,
              log: Callable[[str], None] | None = None) -> Images:
  """A TFDS image-classification dataset's split (e.g. 'cifar10', 'train'), prepared in
  data_dir ('' for TFDS's default) as array_record, read with tfds.data_source: never a
  download (one error line saying how to prepare it instead). The same Images as
  load_images: each image at image_size (shorter side, centre crop), labels and class names
  from the dataset's features, num_images > 0 a balanced subset."""
  tfds = sources.import_tfds()
  try:
    records = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises several kinds here
    _raise_tfds_error(tfds, name, split, data_dir, e)
  class_names = tuple(records.dataset_info.features['label'].names)
  pixels = np.empty((len(records), image_size, image_size, 3), np.uint8)
  labels = np.empty(len(records), np.int32)
  progress = _Progress(f'reading TFDS {name} {split}', len(records), log)
  for i in range(len(records)):
    record = records[i]
    pixels[i] = _fit(np.asarray(record['image'], np.uint8), image_size)
    labels[i] = record['label']
    progress(i + 1)
  if num_images:
    keep = balanced_subset(labels, len(class_names), num_images)
    pixels, labels = pixels[keep], labels[keep]
  return Images(pixels, labels, class_names)


def _raise_tfds_error(tfds, name: str, split: str, data_dir: str, error: Exception):
  """One error line for tfds.data_source's failures: not prepared, prepared in another format,
  an unknown name or split."""
  where = data_dir or tfds.core.constants.DATA_DIR
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown TFDS dataset {name!r} (config.dataset)') from None
  if not builder.is_prepared():
    raise UserError(f'TFDS dataset {name!r} is not prepared in {where}; run (needs internet): '
                    f'{_prepare_hint(name, data_dir)}, or give an image folder of it '
                    '(--config.dataset=folder --config.folder=DIR)') from None
  if split not in builder.info.splits:
    raise UserError(f'TFDS dataset {name!r} has no split {split!r} (it has '
                    f'{", ".join(sorted(builder.info.splits))})') from None
  raise UserError(f'TFDS dataset {name!r} in {where} cannot be read by tfds.data_source '
                  f'({" ".join(str(error).split())[:200]}); prepare it as array_record into '
                  f'another data_dir: {_prepare_hint(name, data_dir)}') from None


def load(dataset: str, folder: str, data_dir: str, split: str, image_size: int,
         num_images: int = 0, log: Callable[[str], None] | None = None) -> Images:
  """The config's images: an image folder (dataset 'folder', at `folder`) or a TFDS dataset
  of that name from data_dir (load_tfds)."""
  if dataset not in DATASETS:
    raise UserError(f'unknown config.dataset {dataset!r}; choose: {", ".join(DATASETS)}')
  if dataset == 'folder':
    if not folder:
      raise UserError('config.folder is empty: give --config.folder=DIR (an image folder: '
                      'DIR/<split>/<class>/<images>) or --config.dataset=cifar10 (TFDS)')
    return load_images(folder, split, image_size, num_images, log)
  return load_tfds(dataset, split, data_dir, image_size, num_images, log)


def error_subset(labels: np.ndarray, num_classes: int, count: int) -> np.ndarray | None:
  """The images the training error is measured on: None (all of them) if count is 0 or at
  least their number, else count // num_classes images of each class drawn without
  replacement by a generator seeded with ERROR_SUBSET_SEED, in index order. Fixed by the data
  alone: every run (each activation, lr and seed) is measured on the same images; balanced, so
  that a net stuck on one class is at chance (1 - 1 / classes) on it exactly."""
  if not count or count >= len(labels):
    return None
  rng = np.random.default_rng(ERROR_SUBSET_SEED)
  per_class = count // num_classes
  return np.sort(np.concatenate([rng.choice(np.nonzero(labels == c)[0], per_class,
                                            replace=False) for c in range(num_classes)]))


def regime_inputs(pixels: np.ndarray, regime: str) -> np.ndarray:
  """The net's float32 input: raw pixels minus the per-pixel mean image ('paper', section 2),
  then over the per-channel std of that difference ('modern'). Computed in float64, in place
  (one float64 copy of the set, 1.2 GB for CIFAR-10's training set, and the float32 result)."""
  if regime not in net.REGIMES:
    raise ValueError(f'unknown regime {regime!r}; choose: {", ".join(net.REGIMES)}')
  x = pixels.astype(np.float64)
  x -= x.mean(axis=0)
  if regime == 'modern':
    x /= x.std(axis=(0, 1, 2))
  return x.astype(np.float32)


def batch_order(seed: int, num_images: int, batch_size: int, num_steps: int) -> np.ndarray:
  """num_steps x batch_size indices: a fresh permutation from the seed every epoch (the last
  incomplete batch of an epoch dropped). A function of the seed alone: the relu and tanh runs
  of a seed see the same batches."""
  per_epoch = num_images // batch_size
  if per_epoch < 1:
    raise ValueError(f'batch {batch_size} is larger than the {num_images} images')
  rng = np.random.default_rng(seed)
  epochs = -(-num_steps // per_epoch)
  order = [rng.permutation(num_images)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
           for _ in range(epochs)]
  return np.concatenate(order)[:num_steps].astype(np.int32)
