r"""Training-set statistics for preprocessing: mean image, RGB mean/std, RGB covariance PCA.

  python -m alexnet_jax.dataset_stats --config=configs/alexnet.py:demo \
      --out=data/clothing10-128/stats.npz [--max_images=N]

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
import os
import sys
import time

import numpy as np

from alexnet_jax import preprocessing as pp
from alexnet_jax.errors import UserError

_KEYS = ('mean_image', 'mean', 'std', 'cov', 'eigval', 'eigvec')


def imagenet_stats(resize_size: int) -> dict:
  """The well-known ImageNet values; the per-channel mean broadcast as the mean image."""
  mean = pp.IMAGENET_MEAN.astype(np.float32)
  return {
      'mean_image': np.broadcast_to(mean, (resize_size, resize_size, 3)).copy(),
      'mean': mean,
      'std': pp.IMAGENET_STD.astype(np.float32),
      'eigval': pp.IMAGENET_EIGVAL.astype(np.float32),
      'eigvec': pp.IMAGENET_EIGVEC.astype(np.float32),
  }


def compute_stats(source, resize_size: int, *, max_images: int | None = None,
                  log_every: int = 100, log=print) -> dict:
  """Statistics over the records {'image': bytes or uint8 array, ...} of a data source."""
  n = len(source) if max_images is None else min(len(source), max_images)
  if n <= 0:
    raise UserError('no images to compute statistics over')
  sum_image = np.zeros((resize_size, resize_size, 3), np.float64)
  sum_outer = np.zeros((3, 3), np.float64)  # sum over pixels of x x^T
  start = time.time()
  for i in range(n):
    img = pp.decode_and_resize(source[i]['image'], resize_size).astype(np.float64)
    sum_image += img
    pixels = img.reshape(-1, 3)
    sum_outer += pixels.T @ pixels
    if log and ((i + 1) % log_every == 0 or i + 1 == n):
      log(f'{i + 1}/{n} images ({(i + 1) / (time.time() - start):.0f} img/s)')
  num_pixels = n * resize_size * resize_size
  mean_image = sum_image / n
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
      'num_images': np.int64(n),
      'resize_size': np.int64(resize_size),
  }


def save_stats(path: str, stats: dict):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'wb') as f:  # np.savez on a file object keeps the exact name.
    np.savez(f, **stats)


def _resize_mean_image(mean_image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a float mean image per channel (a smooth image: little is lost)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(mean_image[:, :, c], np.float32),
                                         mode='F').resize((size, size), Image.Resampling.BILINEAR))
              for c in range(3)]
  return np.stack(channels, axis=-1).astype(np.float32)


def load_stats(path: str, resize_size: int) -> dict:
  """Stats from a save_stats .npz, or the ImageNet defaults when path is ''.

  A mean image saved at another resize_size (e.g. the demo's 256 stats used by the tiny
  72-pixel test config) is resized bilinearly to resize_size.
  """
  if not path:
    return imagenet_stats(resize_size)
  from alexnet_jax.data_sources import resolve_path  # pylint: disable=g-import-not-at-top
  resolved = resolve_path(path)
  if not os.path.isfile(resolved):
    raise UserError(f'stats file {path!r} (config.input.stats_file) does not exist; write it with: '
                    f'python -m alexnet_jax.dataset_stats --config=<config> --out={path}')
  try:
    with np.load(resolved) as data:
      stats = {k: np.asarray(data[k]) for k in data.files}
  except Exception as e:
    raise UserError(f'cannot read stats file {path!r}: {e}') from None
  missing = [k for k in _KEYS if k not in stats and k != 'cov']
  if missing:
    raise UserError(f'stats file {path!r} lacks {", ".join(missing)}; rewrite it with '
                    'python -m alexnet_jax.dataset_stats')
  for k in ('mean_image', 'mean', 'std', 'eigval', 'eigvec'):
    stats[k] = stats[k].astype(np.float32)
  if stats['mean_image'].shape[0] != resize_size:
    stats['mean_image'] = _resize_mean_image(stats['mean_image'], resize_size)
  return stats


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax import data_sources  # pylint: disable=g-import-not-at-top
  del argv
  config = flags.FLAGS.config
  out = flags.FLAGS.out
  try:
    source = data_sources.make_source(config.dataset, config.dataset.train_split)
    print(f'computing stats over {source!r} at resize_size {config.input.resize_size}', flush=True)
    stats = compute_stats(source, config.input.resize_size, max_images=flags.FLAGS.max_images,
                          log=lambda s: print(s, flush=True))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  save_stats(out, stats)
  np.set_printoptions(precision=4, suppress=True)
  m = stats['mean_image']
  print(f'images: {int(stats["num_images"])}')
  print(f'mean image: shape {m.shape}, range [{m.min():.2f}, {m.max():.2f}]')
  print(f'mean (RGB): {stats["mean"]}')
  print(f'std  (RGB): {stats["std"]}')
  print(f'eigval (eig(cov)/255): {stats["eigval"]}')
  print(f'eigvec (columns):\n{stats["eigvec"]}')
  print(f'wrote {out}')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/alexnet.py:demo.')
  flags.DEFINE_string('out', None, 'Output .npz path.')
  flags.DEFINE_integer('max_images', None, 'Use only the first N training images.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
