r"""Speed of the whole training step against its yardsticks, each in a process of its own.

  python -m alexnet_jax.tools.benchmark                                    # float32, batch 32
  python -m alexnet_jax.tools.benchmark --yardsticks=plain_jax,torch_eager,torch_compile \
      --lrn=on,off                                        # the table of docs/performance.md
  python -m alexnet_jax.tools.benchmark --yardsticks=                        # ours alone
  python -m alexnet_jax.tools.benchmark --noours --yardsticks=torch_eager    # torch alone
  python -m alexnet_jax.tools.benchmark --yardsticks=torch_eager,ours_beside_torch_eager
                                  # ours isolated, and ours and torch in one process
  python -m alexnet_jax.tools.benchmark --batch_sizes=128,512 --dtypes=bfloat16      # a GPU
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m alexnet_jax.tools.benchmark \
      --meshes=1x1,1x2                                               # the paper's split, CPU
  python -m alexnet_jax.tools.benchmark --mode=lrn                # LRN forward+backward only
  python -m alexnet_jax.tools.benchmark --nonfinite_guard=on,off --yardsticks=  # guard's cost
  python -m alexnet_jax.tools.benchmark --config=configs/cifar10.py --batch_sizes=128 \
      --lrn=on,off                 # the net model.arch names (here cuda-convnet's), no yardstick

For every batch size x dtype x LRN on/off it times our SGD step (train.jit_train_step: the
paper's update, dropout, the non-finite guard, 1000 classes, synthetic device-resident data)
for each mesh and implementation switch asked for, and each yardstick's step on the same
setting, every one in a worker process of its own, timed one at a time in alternating windows
(alexnet_jax/benchmarks/isolated.py says how, and why: one framework disturbs another in the
same process). It prints one JSON line per measurement and a table with each yardstick's step
time over ours (above 1.0, ours is faster). The yardsticks
(alexnet_jax/benchmarks/yardsticks/): `plain_jax` (feature_group_count convolutions,
reduce_window LRN and pooling, XLA's own gradients), `torch_eager` and `torch_compile` (PyTorch
at its defaults; needs `pip install -r requirements-torch.txt`), `ours_beside_torch_eager` (ours
and torch's eager step in one process, windows interleaved: what a second framework does to
ours), or the path of a .py file defining a flax `AlexNet(use_lrn, dtype)` module. Machines are
noisy: compare the ratios, which come from one run, not absolute times.

Our step is the net --config's model.arch names, at its input.image_size and model.num_classes
unless --image_size and --num_classes say otherwise (the paper's config: the AlexNet, 227 px,
1000 classes); the yardsticks are AlexNets, so another net is timed alone.

Step time is the median over --windows timed windows of --steps steps each, after compilation
and --warmup steps. MFU = model FLOPs per step (counted from the layer shapes: 2 x MACs, x3
for forward + backward; 4.3 GFLOP per 227 px image at 1000 classes) / step time / the device's
peak (on a CPU the float32 matmul peak measured in the same run), whose figure and source are
printed. Each record names its worker's pid, the frameworks loaded in it, their versions and
thread counts.
"""
import functools
import os
import pathlib
import re

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.benchmarks import isolated
from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks import step_timing
from alexnet_jax.benchmarks.isolated import YARDSTICKS
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import lrn as lrn_lib
from alexnet_jax.model import pooling
from alexnet_jax.tools import cli
from alexnet_jax.tools import huge_pages

_PAPER_CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'alexnet.py'

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(_PAPER_CONFIG), "The base config of our step (the paper's by default); the "
    'flags below set its batch, dtype, LRN and implementation switches.', lock_config=False)
_MODE = flags.DEFINE_enum('mode', 'step', ['step', 'lrn'], 'step: the whole training step; '
                          'lrn: LRN forward+backward alone, per implementation.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32'], 'Global batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes: float32, bfloat16.')
_LRN = flags.DEFINE_list('lrn', ['on'], 'LRN on and/or off (our step: model.norm=lrn or none).')
_MESHES = flags.DEFINE_list('meshes', ['1x1'], "Meshes 'DATAxMODEL'; 1x2 is the paper's split. "
                            'On CPU, fake devices: XLA_FLAGS=--xla_force_host_platform_'
                            'device_count=N.')
_LRN_IMPLS = flags.DEFINE_list('lrn_impls', ['fast'], 'LRN implementations (lrn.IMPLS).')
_CONV_IMPLS = flags.DEFINE_list('conv_impls', ['auto'], 'Grouped conv implementations '
                                '(grouped_conv.CONV_IMPLS).')
_POOL_IMPLS = flags.DEFINE_list('pool_impls', ['fast'], 'Max-pool implementations '
                                '(pooling.IMPLS).')
_NONFINITE_GUARD = flags.DEFINE_list(
    'nonfinite_guard', ['on'], 'Our step with (on) and/or without (off) the guard that keeps '
    "a non-finite update out of the state; 'on,off' times what it costs.")
_NUM_CLASSES = flags.DEFINE_integer(
    'num_classes', None, "Classes; default: --config's model.num_classes (the paper's: 1000).")
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', None, "Input crop size; default: --config's input.image_size (the paper's: "
    '227).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps after compilation.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Steps per timed window.')
_WINDOWS = flags.DEFINE_integer('windows', 3, 'Timed windows; the median is reported.')
_YARDSTICKS = flags.DEFINE_list(
    'yardsticks', ['plain_jax'], f'Yardsticks timed beside ours: {", ".join(YARDSTICKS)}, or '
    "a .py file defining a flax AlexNet(use_lrn, dtype); '' for none. Each ratio is its step "
    'time over ours.')
_OURS = flags.DEFINE_bool('ours', True, 'Time our step; --noours times the yardsticks alone.')
_PAUSE_S = flags.DEFINE_float(
    'pause_s', 0.3, "Seconds between one worker's window and the next worker's, so that the "
    "first one's threads have stopped spinning (each record reports their CPU in the pause).")
_WORKER_TIMEOUT_S = flags.DEFINE_float(
    'worker_timeout_s', isolated.DEFAULT_TIMEOUT_S, 'Longest wait for a worker to answer '
    '(compiling included) before the run stops with an error.')
_PEAK_TFLOPS = flags.DEFINE_float('peak_tflops', 0.0, "The device's peak TFLOP/s for MFU; "
                                  '0 = from the built-in table.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')


def _parse_mesh(text: str) -> tuple[int, int]:
  match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
  if not match:
    raise UserError(f"--meshes: {text!r} is not 'DATAxMODEL' (e.g. 1x2)")
  return int(match.group(1)), int(match.group(2))


def _check_choices(*lists) -> None:
  for values, allowed, name in lists:
    bad = [v for v in values if v not in allowed]
    if bad:
      raise UserError(f'--{name}: {", ".join(bad)}; choose from {", ".join(allowed)}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  emit = functools.partial(measure.emit_json_line, json_out=_JSON_OUT.value)
  _check_choices((_DTYPES.value, alexnet.DTYPES, 'dtypes'),
                 (_POOL_IMPLS.value, pooling.CHOICES, 'pool_impls'),
                 (_LRN_IMPLS.value, lrn_lib.CHOICES, 'lrn_impls'),
                 (_CONV_IMPLS.value, alexnet.CONV_IMPLS, 'conv_impls'),
                 (_LRN.value, ('on', 'off'), 'lrn'),
                 (_NONFINITE_GUARD.value, ('on', 'off'), 'nonfinite_guard'))
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  if _MODE.value == 'lrn':
    step_timing.run_lrn_benchmark(batch_sizes=batch_sizes, dtypes=_DTYPES.value,
                                  warmup=_WARMUP.value, steps=_STEPS.value,
                                  windows=_WINDOWS.value, emit=emit)
    return
  config = _CONFIG.value
  arch = config.model.get('arch', 'alexnet')
  yardsticks = [y for y in _YARDSTICKS.value if y]
  image_size = _IMAGE_SIZE.value or config.input.image_size
  num_classes = _NUM_CLASSES.value or config.model.num_classes
  if arch != 'alexnet':
    # Every yardstick is the paper's AlexNet: a ratio to another net would compare nothing.
    if _YARDSTICKS.present and yardsticks:
      raise UserError(f'--yardsticks={",".join(yardsticks)}: the yardsticks are the paper\'s '
                      f'AlexNet, and --config names model.arch={arch!r}; pass --yardsticks= '
                      'to time that net alone')
    yardsticks = []
    print(f'our step: model.arch={arch!r} (--config), {image_size} px, {num_classes} classes, '
          'no yardstick', flush=True)
  records = isolated.run(
      config.to_dict(), ours=_OURS.value, batch_sizes=batch_sizes, dtypes=_DTYPES.value,
      lrn_values=[v == 'on' for v in _LRN.value],
      meshes=[_parse_mesh(m) for m in _MESHES.value], lrn_impls=_LRN_IMPLS.value,
      conv_impls=_CONV_IMPLS.value, pool_impls=_POOL_IMPLS.value,
      nonfinite_guards=tuple(v == 'on' for v in _NONFINITE_GUARD.value),
      yardsticks=yardsticks, image_size=image_size, num_classes=num_classes,
      warmup=_WARMUP.value, steps=_STEPS.value,
      windows=_WINDOWS.value, pause_s=_PAUSE_S.value, peak_tflops=_PEAK_TFLOPS.value,
      timeout_s=_WORKER_TIMEOUT_S.value,
      # The yardsticks run in the environment the user gave this command, without the malloc
      # tunables it re-executed itself with for our step (tools/huge_pages.py).
      yardstick_env=huge_pages.users_environment(os.environ), emit=emit)
  isolated.print_table(records)

if __name__ == '__main__':
  cli.run(main)
