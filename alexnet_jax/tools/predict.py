r"""The top-5 classes of image files, from a training run's latest checkpoint.

  python -m alexnet_jax.tools.predict --workdir=runs/demo photo1.jpg [photo2.jpg ...]

Each image gets the run's eval preprocessing (shorter side to the run's resize size, the
centre crop, its mean image subtracted); prints the class names the run saved with their
probabilities.
"""

from absl import app
from absl import flags

from alexnet_jax import evaluation
from alexnet_jax.tools import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run\'s workdir.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Classes per image.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('name one or more image files after the flags')
  for path, top in zip(paths, evaluation.predict(_WORKDIR.value, paths, _TOP_K.value)):
    print(f'{path}: ' + ', '.join(f'{name} {p:.3f}' for name, p in top))


if __name__ == '__main__':
  cli.run(main)
