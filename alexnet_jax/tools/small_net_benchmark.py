r"""Speed of the Figure 1 net's training as the protocol runs it, against the same net written
plainly in PyTorch: each in a process of its own, their timed windows alternating.

  python -m alexnet_jax.tools.small_net_benchmark                       # ours and torch eager
  python -m alexnet_jax.tools.small_net_benchmark --impls=ours          # ours alone
  python -m alexnet_jax.tools.small_net_benchmark --net_impl=xla        # ours with XLA's gradients
  python -m alexnet_jax.tools.small_net_benchmark --before=REV          # + REV's figure1/
  python -m alexnet_jax.tools.small_net_benchmark --before=/tmp/figure1  # + a variant's

A window is --segments segments of the Figure 1 protocol (alexnet_jax/figure1/train.py's Loop):
--eval_every SGD steps of batch --batch_size on --num_images synthetic images held in memory,
then the full-pass training error over all of them. The implementations (--impls): `ours`
(figure1.train.Loop), `torch_eager` and `torch_compile` (the same net and loop written plainly
in PyTorch, alexnet_jax/benchmarks/yardsticks/small_pytorch.py; needs
`pip install -r requirements-torch.txt`). --before=REV also times `before`: the Loop of a git
revision's alexnet_jax/figure1/ (one with train.Loop), or of a directory holding a figure1
package (a modified copy: a variant), beside this benchmark's code, in the same alternation, so
that a change's speed-up is a ratio from one run.

The method is the step benchmark's (alexnet_jax/benchmarks/small_net.py; docs/performance.md,
"How speed is compared"): one worker process per implementation, compiled one at a time, then
rounds of one window each, the order rotated each round, a watched pause after every window.

Printed: one JSON line per implementation and a table: the SGD step's ms, img/s and MFU (model
FLOPs from the layer shapes, 3 x the forward's, over the float32 matmul peak measured by a JAX
worker in this run), the full pass's ms, the protocol's img/s and MFU (steps and full passes
together), and each one's time over ours (above 1.0: ours is faster); medians over --windows.
"""
import json

from absl import app
from absl import flags

from alexnet_jax.benchmarks import small_net
from alexnet_jax.benchmarks.yardsticks import small_pytorch
from alexnet_jax.errors import UserError
from alexnet_jax.tools import cli

_IMPLS = flags.DEFINE_list('impls', ['ours', 'torch_eager'],
                           f'Implementations: {", ".join(small_net.IMPLS)}.')
_BEFORE = flags.DEFINE_string('before', '', "A git revision, or a directory holding a figure1 "
                              "package, whose Loop is also timed, as 'before' (it needs "
                              "figure1.train.Loop).")
# figure1.net.CHOICES, written out: this process imports no framework (a test keeps them equal).
NET_IMPLS = ('auto', 'fast', 'xla')
_NET_IMPL = flags.DEFINE_enum('net_impl', 'auto', list(NET_IMPLS),
                               "The layers of `ours` (figure1.net: 'auto' per backend); --before "
                               "runs its revision's default.")
_ACTIVATION = flags.DEFINE_enum('activation', 'relu', ['relu', 'tanh'], 'The activation.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 100, 'SGD batch (Figure 1: 100).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'Image side, px (Figure 1: 32).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1000, 'Images held in memory and passed over '
                                   'for the training error (Figure 1: 1000).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Classes.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 10, 'SGD steps between full passes (K).')
_SEGMENTS = flags.DEFINE_integer('segments', 1, 'Segments (K steps and a full pass) per window.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed segments after compilation.')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows per implementation; medians.')
_PAUSE_S = flags.DEFINE_float('pause_s', 0.3, 'Seconds of watched rest after each window.')
_PEAK_TFLOPS = flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s for MFU; 0: measured.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')


def _check(impls: list[str], before: str, settings: dict, windows: int) -> None:
  bad = [i for i in impls if i not in small_net.IMPLS]
  if bad or len(set(impls)) != len(impls):
    raise UserError(f'--impls: {",".join(impls)}; choose each at most once from '
                    f'{", ".join(small_net.IMPLS)}')
  if not impls and not before:
    raise UserError('--impls is empty and there is no --before: nothing to time')
  if any(i.startswith('torch') for i in impls) and not small_pytorch.available():
    raise UserError('--impls names torch, which is not installed '
                    '(pip install -r requirements-torch.txt)')
  for name, value in dict(settings, windows=windows).items():
    least = 0 if name == 'warmup' else 1
    if name != 'activation' and value < least:
      raise UserError(f'--{name} must be at least {least}, not {value}')
  if settings['num_images'] < max(settings['batch_size'], settings['num_classes']):
    raise UserError(f'--num_images {settings["num_images"]} is fewer than the batch '
                    f'({settings["batch_size"]}) or the classes ({settings["num_classes"]})')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  settings = {'activation': _ACTIVATION.value, 'batch_size': _BATCH_SIZE.value,
              'image_size': _IMAGE_SIZE.value, 'num_images': _NUM_IMAGES.value,
              'num_classes': _NUM_CLASSES.value, 'eval_every': _EVAL_EVERY.value,
              'segments': _SEGMENTS.value, 'warmup': _WARMUP.value}
  _check(_IMPLS.value, _BEFORE.value, settings, _WINDOWS.value)
  records = small_net.run(_IMPLS.value, settings, before=_BEFORE.value, windows=_WINDOWS.value,
                          pause_s=_PAUSE_S.value, peak_tflops=_PEAK_TFLOPS.value,
                          net_impl=_NET_IMPL.value)
  for r in records:
    line = json.dumps(r)
    print(line, flush=True)
    if _JSON_OUT.value:
      with open(_JSON_OUT.value, 'a') as f:
        f.write(line + '\n')
  print('\n'.join([''] + small_net.table(records)))


if __name__ == '__main__':
  cli.run(main)
