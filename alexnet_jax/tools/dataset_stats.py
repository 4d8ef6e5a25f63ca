r"""Writes the training set's statistics (mean image, RGB mean/std, PCA) to a .npz file.

  python -m alexnet_jax.tools.dataset_stats --config=configs/alexnet.py:demo \
      --out=data/clothing10-128/stats.npz [--max_images=N]

A run then reads them with --config.input.stats_file=FILE instead of computing its own at its
first start (one file for many runs). See alexnet_jax/data/dataset_stats.py for what each
array is.
"""

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from alexnet_jax.data import dataset_stats
from alexnet_jax.data import sources
from alexnet_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. '
                                          'configs/alexnet.py:demo.')
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', None, 'A seeded random sample of N training '
                                   'images (default: all of them).')
flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  source = sources.make_source(config.dataset, config.dataset.train_split)
  print(f'computing stats over {source!r} at resize_size {config.input.resize_size}', flush=True)
  stats = dataset_stats.sample_stats(source, config.input.resize_size, _MAX_IMAGES.value or 0,
                                     log=lambda s: print(s, flush=True))
  dataset_stats.save_stats(_OUT.value, stats)
  np.set_printoptions(precision=4, suppress=True)
  m = stats['mean_image']
  print(f'images: {int(stats["num_images"])}')
  print(f'mean image: shape {m.shape}, range [{m.min():.2f}, {m.max():.2f}]')
  print(f'mean (RGB): {stats["mean"]}')
  print(f'std  (RGB): {stats["std"]}')
  print(f'eigval (eig(cov)/255): {stats["eigval"]}')
  print(f'eigvec (columns):\n{stats["eigvec"]}')
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  cli.run(main)
