r"""Validation top-1/top-5 of a training run's checkpoint: centre crop or the paper's 10-crop.

  python -m alexnet_jax.tools.evaluate --workdir=runs/demo [--ten_crop] [--step=N] \
      [--augment_on=device]

Restores the latest checkpoint (or --step) with the run's own config and statistics, and
prints the result; it is also written to <workdir>/eval_<centre|10crop>_step<N>.json. The
10-crop test (paper section 4.1) averages the softmax over the four corner and centre 227
patches and their reflections.
"""

from absl import app
from absl import flags

from alexnet_jax import evaluation
from alexnet_jax.data import augment_on
from alexnet_jax.tools import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run\'s workdir.')
_TEN_CROP = flags.DEFINE_bool('ten_crop', False, "The paper's 10-crop test.")
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Images per batch (default: the run\'s '
                                   'eval batch, /10 with --ten_crop).')
_AUGMENT_ON = flags.DEFINE_enum('augment_on', None, list(augment_on.CHOICES),
                                'Where the mean, crops and std run (default: the run\'s '
                                'config.input.augment_on): host (Grain workers) or device '
                                '(from uint8 patches, under jit).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  r = evaluation.evaluate_run(_WORKDIR.value, _TEN_CROP.value, _STEP.value, _BATCH_SIZE.value,
                              _AUGMENT_ON.value)
  print(f'{r["crop"]} eval at step {r["step"]}: top1 {r["top1"]:.4f} top5 {r["top5"]:.4f} '
        f'loss {r["loss"]:.4f} on {r["count"]} images (crops on the {r["augment_on"]})')


if __name__ == '__main__':
  cli.run(main)
