r"""Speed of the Figure 1 net's training, as the protocol runs it, against the same net in
PyTorch: each in a process of its own, their timed windows alternating.

  python -m alexnet_jax.tools.small_net_benchmark                       # ours and torch eager
  python -m alexnet_jax.tools.small_net_benchmark --impls=ours          # ours alone
  python -m alexnet_jax.tools.small_net_benchmark --before=/tmp/before  # + an earlier version

A window is --segments segments of the Figure 1 protocol (alexnet_jax/figure1/train.py's Loop):
--eval_every SGD steps of batch --batch_size on a set of --num_images synthetic images held in
memory, then the full-pass training error over the set. The implementations (--impls): `ours`
(figure1.train.Loop, from this tree), `torch_eager` and `torch_compile` (the same net and loop
written plainly in PyTorch, alexnet_jax/benchmarks/yardsticks/small_pytorch.py; needs
`pip install -r requirements-torch.txt`). --before=DIR also times `before`, the Loop of another
source tree (e.g. `git worktree add DIR <commit>`), in the same alternation, so that a change's
speed-up is a ratio from one run.

Each implementation runs in a worker process (this command with --worker) that compiles and
warms up, then times one window whenever the command asks, in turn (benchmarks/alternating.py):
no two frameworks share a process, only one works at a time, and load on the machine hits all
alike. Ours runs with malloc's huge pages (as every command here, tools/huge_pages.py), torch as
a user starts it, at its default threads.

Printed: one JSON line per implementation and a table: the SGD step's ms, img/s and MFU (model
FLOPs from the layer shapes, 3 x the forward's, over the float32 matmul peak that the `ours`
worker measures in this run), the full pass's ms, the protocol's img/s and MFU (steps and full
passes together), and each one's time over ours (above 1: ours is faster), all medians over
--windows windows.
"""
import functools
import os
import sys

from absl import app
from absl import flags

from alexnet_jax.benchmarks import alternating
from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks import small_net_timing
from alexnet_jax.benchmarks.yardsticks import small_pytorch
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import net
from alexnet_jax.tools import cli

IMPLS = ('ours', 'torch_eager', 'torch_compile')

_IMPLS = flags.DEFINE_list('impls', ['ours', 'torch_eager'],
                           f'Implementations, timed in this order in each round: '
                           f'{", ".join(IMPLS)}.')
_BEFORE = flags.DEFINE_string('before', '', "Another source tree whose `ours` is also timed, as "
                              "'before' (an earlier commit: git worktree add DIR COMMIT).")
_ACTIVATION = flags.DEFINE_enum('activation', 'relu', list(net.ACTIVATIONS), 'The activation.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 100, 'SGD batch (Figure 1: 100).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'Image side, px (Figure 1: 32).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1000, 'Images held in memory and passed over '
                                   'for the training error (Figure 1: 1000).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Classes.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 10, 'SGD steps between full passes (K).')
_SEGMENTS = flags.DEFINE_integer('segments', 1, 'Segments (K steps and a full pass) per window.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed segments after compilation.')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows per implementation; medians.')
_PAUSE_S = flags.DEFINE_float('pause_s', 0.2, 'Seconds of rest before each window.')
_PEAK_TFLOPS = flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s for MFU; 0: measured.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')
_WORKER = flags.DEFINE_enum('worker', '', ('',) + IMPLS, 'Internal: run as the worker process '
                            'of one implementation (the protocol of benchmarks/alternating.py).')


# What a worker is told (as these flags) and passes to its timer.
_TIMER_FLAGS = ('activation', 'batch_size', 'eval_every', 'segments', 'warmup')
_SET_FLAGS = ('image_size', 'num_images', 'num_classes')


def _worker(impl: str, settings: dict, peak_tflops: float) -> None:
  """One implementation's timer, served over stdin and stdout."""
  timer_settings = {k: settings[k] for k in _TIMER_FLAGS}
  if impl == 'ours':
    timer = small_net_timing.OursTimer(**timer_settings,
                                       **{k: settings[k] for k in _SET_FLAGS})
    info = timer.info(peak_tflops)
  else:
    x, y = small_net_timing.synthetic_set(**{k: settings[k] for k in _SET_FLAGS})
    timer = small_pytorch.TorchSmallNetTimer(x, y, compile=impl == 'torch_compile',
                                             **timer_settings)
    info = timer.info()
  alternating.serve(info, timer.window)


def _worker_command(impl: str, settings: dict, peak_tflops: float) -> list[str]:
  return ([sys.executable, '-m', 'alexnet_jax.tools.small_net_benchmark', f'--worker={impl}',
           f'--peak_tflops={peak_tflops}'] + [f'--{k}={v}' for k, v in settings.items()])


def _check(impls: list[str], before: str, settings: dict, windows: int) -> None:
  bad = [i for i in impls if i not in IMPLS]
  if bad or len(set(impls)) != len(impls):
    raise UserError(f'--impls: {",".join(impls)}; choose each at most once from '
                    f'{", ".join(IMPLS)}')
  if not impls and not before:
    raise UserError('--impls is empty and there is no --before: nothing to time')
  if any(i.startswith('torch') for i in impls) and not small_pytorch.available():
    raise UserError('--impls names torch, which is not installed '
                    '(pip install -r requirements-torch.txt)')
  if before and not os.path.isfile(
      os.path.join(before, 'alexnet_jax', 'tools', 'small_net_benchmark.py')):
    raise UserError(f'--before: {before} holds no alexnet_jax/tools/small_net_benchmark.py')
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
  settings = {name: flags.FLAGS[name].value for name in _TIMER_FLAGS + _SET_FLAGS}
  peak_tflops = _PEAK_TFLOPS.value
  if _WORKER.value:
    _worker(_WORKER.value, settings, peak_tflops)
    return
  _check(_IMPLS.value, _BEFORE.value, settings, _WINDOWS.value)
  workers = []
  for impl in _IMPLS.value:
    workers.append(alternating.Worker(impl, _worker_command(impl, settings, peak_tflops),
                                      env=alternating.environment(impl == 'ours')))
  if _BEFORE.value:
    tree = os.path.abspath(_BEFORE.value)
    env = alternating.environment(True)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (tree, env.get('PYTHONPATH')) if p)
    workers.append(alternating.Worker('before', _worker_command('ours', settings, peak_tflops),
                                      cwd=tree, env=env))
  windows = alternating.alternate(workers, _WINDOWS.value, _PAUSE_S.value)
  infos = {w.name: w.info for w in workers}
  peak = (peak_tflops * 1e12 if peak_tflops > 0 else
          max((i['peak_flops'] for i in infos.values() if 'peak_flops' in i),
              default=float('nan')))
  source = ('--peak_tflops' if peak_tflops > 0 else
            next((i['peak_source'] for i in infos.values() if 'peak_source' in i), 'none'))
  shape = {k: settings[k] for k in ('batch_size', 'eval_every', 'segments', 'num_images',
                                     'image_size', 'num_classes')}
  records = [small_net_timing.record(name, infos[name], w, peak_flops=peak, **shape)
             for name, w in windows.items()]
  against = 'ours' if 'ours' in windows else records[0]['impl']
  small_net_timing.add_ratios(records, against)
  emit = functools.partial(measure.emit_json_line, json_out=_JSON_OUT.value)
  for r in records:
    emit(dict(r, activation=settings['activation'], peak_source=source))
  print('\n'.join([''] + small_net_timing.table(records, against)))


if __name__ == '__main__':
  cli.run(main)
