"""Training-set statistics for preprocessing: mean image, RGB mean/std, RGB covariance PCA.

A file of them for many runs: `python -m alexnet_jax.tools.dataset_stats` (writes a .npz that
config.input.stats_file names). Without a stats file (config.input.stats_file=''), training
computes these itself at its first start (`training_set_stats`): one pass over a seeded random
sample of config.input.stats_images training images (not the first N, which in a folder are the
first classes), cached as <workdir>/dataset_stats.npz so that resumes, every process and the
eval/predict tools use the same numbers.

Every image is first brought to the paper's resize_size x resize_size central patch (section 2),
then (all in the 0..255 pixel scale):
  mean_image  (R, R, 3)  the per-pixel mean the paper subtracts (section 2).
  mean, std   (3,)       per-channel mean and std over all pixels of all images.
  cov         (3, 3)     covariance of RGB pixel values over all pixels (section 4.1).
  eigval      (3,)       eigenvalues of the covariance of RGB values measured in 0..1 units,
                         times 255, descending = eig(cov) / 255. This is the convention of the
                         well-known ImageNet values [55.46, 4.794, 1.148], so alpha * eigval is a
                         shift in 0..255 pixel units of the paper's size; the raw eigenvalues of
                         `cov` (~1e4) would shift pixels by hundreds at alpha ~ N(0, 0.1).
  eigvec      (3, 3)     the matching unit eigenvectors as columns.
"""
import concurrent.futures
import contextlib
import os
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from alexnet_jax.data import sources
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError

_KEYS = ('mean_image', 'mean', 'std', 'cov', 'eigval', 'eigvec')
CACHE_NAME = 'dataset_stats.npz'  # in the workdir: the training set's statistics, computed once
SAMPLE_SEED = 0  # fixed, not config.seed: runs of every seed subtract the same mean


def imagenet_stats(resize_size: int) -> dict:
  """The well-known ImageNet values (preprocessing.IMAGENET_*); the per-channel mean broadcast
  as the mean image, so this is no per-pixel mean: only for runs saved before the mean image
  was computed from the training set, and for the `imagenet` lighting eigenvalues."""
  mean = pp.IMAGENET_MEAN.astype(np.float32)
  return {
      'mean_image': np.broadcast_to(mean, (resize_size, resize_size, 3)).copy(),
      'mean': mean,
      'std': pp.IMAGENET_STD.astype(np.float32),
      'eigval': pp.IMAGENET_EIGVAL.astype(np.float32),
      'eigvec': pp.IMAGENET_EIGVEC.astype(np.float32),
  }


def sample_indices(num_records: int, sample_size: int, seed: int = SAMPLE_SEED) -> np.ndarray:
  """A seeded uniform sample of record indices without replacement (all when it fits), sorted
  (file order reads faster); the same on every process and every run."""
  if sample_size <= 0 or sample_size >= num_records:
    return np.arange(num_records)
  return np.sort(np.random.default_rng(seed).choice(num_records, sample_size, replace=False))


def sample_stats(source, resize_size: int, sample_size: int, **kwargs) -> dict:
  """compute_stats over sample_indices(len(source), sample_size), recording the sample seed."""
  stats = compute_stats(source, resize_size, indices=sample_indices(len(source), sample_size),
                        **kwargs)
  stats['sample_seed'] = np.int64(SAMPLE_SEED)
  return stats


def _decode(source, resize_size: int, index: int) -> tuple[np.ndarray | None, str]:
  """(the image at its central resize_size patch, ''), or (None, why) for a file that cannot
  be read (the source's 'error': gone, EIO, a permission) or decoded (empty, truncated, not an
  image), as training's pipeline skips them (pipeline._skip_unreadable)."""
  record = source[int(index)]
  try:
    if record.get('error'):
      raise ValueError(record['error'])
    return pp.decode_and_resize(record['image'], resize_size), ''
  except ValueError as e:
    return None, f'{record.get("source", f"record {int(index)}")}: {e}'


def compute_stats(source, resize_size: int, *, indices=None, log_every: int = 100, log=print,
                  threads: int = 0, warn=print) -> dict:
  """Statistics over records {'image': bytes or uint8 array, ...} of a data source: all of
  them, or those at `indices`. Images are decoded in `threads` threads (0: one per core, at
  most 8); the sums run in index order, so the result does not depend on them.

  A file that cannot be read or decoded is left out of the sums and counted (one `warn` line at
  the end names how many and one of them; 'skipped_images' in the result): one bad file among
  millions must not stop a run before it starts. None readable is a UserError.
  """
  if indices is None:
    indices = np.arange(len(source))
  n = len(indices)
  if n <= 0:
    raise UserError('no images to compute statistics over')
  sum_image = np.zeros((resize_size, resize_size, 3), np.float64)
  sum_outer = np.zeros((3, 3), np.float64)  # sum over pixels of x x^T
  start = time.time()
  threads = threads or min(8, os.cpu_count() or 1)
  used, skipped, example = 0, 0, ''
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # decoding releases the GIL
    for first in range(0, n, 256):  # in chunks: decoded images never pile up far ahead
      chunk = indices[first:first + 256]
      for img, why in pool.map(lambda i: _decode(source, resize_size, i), chunk):
        if img is None:
          skipped, example = skipped + 1, example or why
        else:
          img = img.astype(np.float64)
          sum_image += img
          pixels = img.reshape(-1, 3)
          sum_outer += pixels.T @ pixels
          used += 1
        count = used + skipped
        if log and (count % log_every == 0 or count == n):
          log(f'{count}/{n} images ({count / (time.time() - start):.0f} img/s)')
  if not used:
    raise UserError(f'none of the {n} images sampled for the statistics could be read or '
                    f'decoded (e.g. {example})')
  if skipped and warn:
    warn(f'warning: {skipped} of the {n} images sampled for the statistics could not be read '
         f'or decoded and were left out of them (e.g. {example})')
  num_pixels = used * resize_size * resize_size
  mean_image = sum_image / used
  mean = mean_image.reshape(-1, 3).mean(axis=0)
  cov = sum_outer / num_pixels - np.outer(mean, mean)  # population covariance
  eigval, eigvec = np.linalg.eigh(cov)
  order = np.argsort(eigval)[::-1]
  return {
      'mean_image': mean_image.astype(np.float32),
      'mean': mean.astype(np.float32),
      'std': np.sqrt(np.diag(cov)).astype(np.float32),
      'cov': cov,
      'eigval': (eigval[order] / 255.0).astype(np.float32),
      'eigvec': eigvec[:, order].astype(np.float32),
      'num_images': np.int64(used),  # those in the sums
      'skipped_images': np.int64(skipped),
      'resize_size': np.int64(resize_size),
  }


def save_stats(path: str, stats: dict):
  """Writes the .npz atomically (a temporary file renamed): a reader never sees half of it. A
  write that fails (a full disk) leaves nothing behind and is one RunFailure naming the file."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, 'wb') as f:  # np.savez on a file object keeps the exact name.
      np.savez(f, **stats)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise RunFailure(f'could not write {path} ({e.strerror or e}), the training set\'s '
                     'statistics. Free disk space (or fix the path) and run the same command '
                     'again') from None


def _resize_mean_image(mean_image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a float mean image per channel (a smooth image: little is lost)."""
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(mean_image[:, :, c], np.float32),
                                         mode='F').resize((size, size), Image.Resampling.BILINEAR))
              for c in range(3)]
  return np.stack(channels, axis=-1).astype(np.float32)


def load_stats(path: str, resize_size: int) -> dict:
  """Stats from a save_stats .npz.

  A mean image saved at another resize_size (e.g. the demo's 256 stats used by the tiny
  72-pixel test config) is resized bilinearly to resize_size.
  """
  resolved = sources.resolve_path(path)
  if not os.path.isfile(resolved):
    raise UserError(f'stats file {path!r} (config.input.stats_file) does not exist; write it with: '
                    f'python -m alexnet_jax.tools.dataset_stats --config=<config> --out={path}')
  try:
    with np.load(resolved) as data:
      stats = {k: np.asarray(data[k]) for k in data.files}
  except Exception as e:
    raise UserError(f'cannot read stats file {path!r}: {e}') from None
  missing = [k for k in _KEYS if k not in stats and k != 'cov']
  if missing:
    raise UserError(f'stats file {path!r} lacks {", ".join(missing)}; rewrite it with '
                    'python -m alexnet_jax.tools.dataset_stats')
  for k in ('mean_image', 'mean', 'std', 'eigval', 'eigvec'):
    stats[k] = stats[k].astype(np.float32)
  if stats['mean_image'].shape[0] != resize_size:
    stats['mean_image'] = _resize_mean_image(stats['mean_image'], resize_size)
  return stats


LIGHTING_EIGEN = ('dataset', 'imagenet')


def training_set_stats(input_config, train_source: Callable[[], Any],
                       cache_dir: str | None = None, log=print) -> dict:
  """The statistics preprocessing uses, by config.input:

  stats_file set: that file. Else the training set's own (train_source() gives its Grain
  source), computed once over a seeded sample of stats_images images and cached as
  <cache_dir>/dataset_stats.npz (no cache_dir: computed each call, for tests and tools on small
  data). lighting_eigen='imagenet' then swaps in the well-known ImageNet eigenvalues/vectors
  for PCA lighting.
  """
  inp = input_config
  eigen = inp.get('lighting_eigen', None)
  if eigen is not None and eigen not in LIGHTING_EIGEN:
    raise UserError(f'config.input.lighting_eigen={eigen!r}; choose one of '
                    f'{", ".join(LIGHTING_EIGEN)}')
  if inp.stats_file:
    stats = load_stats(inp.stats_file, inp.resize_size)
  elif eigen is None:  # a run saved before the stats were computed: what it trained with
    stats = imagenet_stats(inp.resize_size)
  else:
    stats = _computed_stats(inp, train_source, cache_dir, log)
  if eigen == 'imagenet':
    stats = {**stats, 'eigval': pp.IMAGENET_EIGVAL.astype(np.float32),
             'eigvec': pp.IMAGENET_EIGVEC.astype(np.float32)}
  return stats


def _computed_stats(input_config, train_source, cache_dir: str | None, log) -> dict:
  resize, wanted = input_config.resize_size, input_config.stats_images
  path = os.path.join(cache_dir, CACHE_NAME) if cache_dir else None
  if path and os.path.isfile(path):
    stats = load_stats(path, resize)
    if int(stats.get('resize_size', resize)) == resize:
      return stats
  source = train_source()
  n = len(sample_indices(len(source), wanted))
  if log:
    log(f'computing the training set\'s mean image and RGB statistics over {n} of '
        f'{len(source)} images (seeded sample, once{"; cached in " + path if path else ""})',
        flush=True)
  progress = (lambda line: log(f'  stats: {line}', flush=True)) if log else None
  warn = (lambda line: log(line, flush=True)) if log else print
  stats = sample_stats(source, resize, wanted, log=progress, log_every=max(100, n // 10),
                       warn=warn)
  if path:
    save_stats(path, stats)
  return stats
