r"""The one-shot device check: the step and the loader on an accelerator, in one process.

  python -m alexnet_jax.tools.device_check --out_dir=/tmp/device_check    # ~5 min, one GPU

It runs, in this order, and writes device_check.json (every record) and device_check.md (the
tables, the targets met or not) to --out_dir:
  1. the whole training step (step_timing.py) in bfloat16 at batch 128 and 512, LRN on, over the
     conv implementations and the LRN implementations, against the plain-JAX yardstick and,
     where PyTorch imports and sees the device, torch.compile, all timed interleaved;
  2. conv_impl for 'auto' on this backend: the fastest conv implementation at the largest
     batch (model/grouped_conv.py's _AUTO_CONV_IMPL is set by hand from this line), and what
     the non-finite guard costs there: that step with and without it, timed interleaved; and
     pool_impl 'fast' against 'xla' at the fastest step's setting, timed interleaved (which is
     faster: model/pooling.py's _AUTO for this backend);
  3. the Figure 1 net's SGD step (figure1/, float32, ReLU) at Figure 1's settings (batch 100,
     32 px, 10 classes), its steps in scans of 25 as config.py:cifar10 runs them, with each
     layer implementation ('fast', written for XLA:CPU; 'xla', XLA's own gradients), timed
     interleaved: img/s, MFU and the fastest (figure1/net.py's _AUTO for this backend);
  4. the loader end to end (loader_timing.py): a prepared 256 px copy of the embedded photos
     (made under --out_dir), with the augmentation on the host and on the device, fed two ways
     (one Grain worker process per core, and one decoding thread per core in this process,
     where no batch crosses shared memory), against the same step fed a synthetic
     device-resident batch.

JAX's GPU memory preallocation is turned off (XLA_PYTHON_CLIENT_PREALLOCATE=false, set before
JAX starts its backend) so that the torch yardstick can share the device in the same process.
Nothing here imports TensorFlow.

On a bare GPU machine JAX may be newer than requirements.txt's pin, and grain (which needs
portpicker), simplejpeg, ml_collections and array_record may be missing: carry them as wheels
for its Python, e.g.
  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
      grain==0.2.18 portpicker simplejpeg==1.9.0 ml_collections==1.1.0 array_record==0.8.6
  # there: pip install --no-index --no-deps --target /tmp/site .whl/*.whl
  PYTHONPATH=/tmp/site python -m alexnet_jax.tools.device_check --out_dir=$OUT
docs/performance.md says with which versions this was rehearsed (on CPU) and what passed.
"""
import os

os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # before JAX's backend starts

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import time

from absl import app
from absl import flags
import jax

from alexnet_jax.benchmarks import loader_timing
from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks import small_net
from alexnet_jax.benchmarks import small_net_jax_worker
from alexnet_jax.benchmarks import step_timing
from alexnet_jax.benchmarks.yardsticks import pytorch
from alexnet_jax.data import prepare
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import net as figure1_net
from alexnet_jax.model import pooling
from alexnet_jax.tools import cli

alexnet_config = cli.config_module('configs/alexnet.py')

# The targets on a GPU: bf16 batch 512 at >= 1.7x torch.compile; the loader feeding
# >= 90 % of the synthetic-batch rate.
TARGET_VS_TORCH_COMPILE = 1.7
TARGET_END_TO_END = 0.9

_OUT_DIR = flags.DEFINE_string('out_dir', '', 'Where device_check.json / .md (and the prepared '
                               'copy) go.')
_CONFIG = flags.DEFINE_string('config', 'demo', "configs/alexnet.py's variant for the net and "
                              "the loader's data (demo: the full net, the embedded photos).")
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['128', '512'], 'Step batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', ['bfloat16'], 'Compute dtypes.')
_CONV_IMPLS = flags.DEFINE_list('conv_impls', ['halves', 'feature_group', 'im2col'],
                                'Conv implementations to time.')
_LRN_IMPLS = flags.DEFINE_list('lrn_impls', ['fast', 'reduce_window'],
                               'LRN implementations to time.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Classes of the timed step.')
_FIGURE1_IMPLS = flags.DEFINE_list('figure1_impls', list(figure1_net.IMPLS),
                                   "The Figure 1 net's layer implementations to time.")
_FIGURE1_BATCH = flags.DEFINE_integer('figure1_batch', 100, "The Figure 1 net's batch.")
_FIGURE1_IMAGE_SIZE = flags.DEFINE_integer('figure1_image_size', 32, "The Figure 1 net's px.")
_FIGURE1_SCAN = flags.DEFINE_integer('figure1_scan', 25, 'SGD steps per call (one lax.scan) of '
                                     "the Figure 1 net; --steps calls a window.")
_STEPS = flags.DEFINE_integer('steps', 10, 'Steps per timed window.')
_WINDOWS = flags.DEFINE_integer('windows', 3, 'Timed windows; the median is reported.')
_LOADER_BATCH = flags.DEFINE_integer('loader_batch', 128, 'Global batch of the loader run.')
_WORKERS = flags.DEFINE_integer('workers', -1, 'Grain worker processes of the first loader '
                                'feed (2 read threads each); -1: one per core.')
_THREADS = flags.DEFINE_integer('threads', -1, 'Decoding threads in this process of the second '
                                'loader feed (no workers); -1: one per core, 0: no such feed.')
_LOADER_WINDOWS = flags.DEFINE_integer('loader_windows', 3, 'Loader windows.')
_YARDSTICKS = flags.DEFINE_list('yardsticks', ['plain_jax', 'torch_compile'],
                                'Yardsticks timed beside ours (torch_compile where PyTorch '
                                "imports and sees the device); '' for none.")


def torch_yardstick(wanted: bool = True) -> tuple[list[str], str]:
  """(['torch_compile'] or [], why not): torch must import and see this device's kind."""
  if not wanted:
    return [], 'not asked for (--yardsticks)'
  if not pytorch.available():
    return [], 'PyTorch is not installed'
  platform = jax.devices()[0].platform
  if platform == 'gpu' and not pytorch.sees_gpu():
    return [], 'PyTorch sees no GPU'
  if platform not in ('gpu', 'cpu'):
    return [], f'no PyTorch yardstick on {platform}'
  return ['torch_compile'], ''


def fastest_at_largest_batch(records: list[dict], lrn_impl: str | None = None) -> dict:
  """Our fastest step's record at the largest batch (of one LRN implementation, if given)."""
  ours = [r for r in records if r['impl'] == 'ours' and lrn_impl in (None, r['lrn_impl'])]
  largest = max(r['batch'] for r in ours)
  return max((r for r in ours if r['batch'] == largest), key=lambda r: r['img_s'])


def fastest_conv_impl(records: list[dict]) -> str:
  """The conv implementation of our fastest step at the largest batch (LRN impl 'fast')."""
  return fastest_at_largest_batch(records, 'fast')['conv_impl']


def nonfinite_guard_cost(records: list[dict]) -> dict:
  """The guard's cost from one interleaved pair: step ms with and without it, and on / off."""
  by_guard = {r['nonfinite_guard']: r for r in records}
  on, off = by_guard[True]['step_ms'], by_guard[False]['step_ms']
  return {'batch': by_guard[True]['batch'], 'dtype': by_guard[True]['dtype'],
          'conv_impl': by_guard[True]['conv_impl'], 'step_ms_with': on, 'step_ms_without': off,
          'with_over_without': on / off}


def pool_impl_comparison(records: list[dict]) -> dict:
  """pool_impl 'fast' against 'xla' from one interleaved pair: step ms of each, the faster."""
  by_pool = {r['pool_impl']: r for r in records}
  ms = {impl: r['step_ms'] for impl, r in by_pool.items()}
  first = records[0]
  return {'batch': first['batch'], 'dtype': first['dtype'], 'conv_impl': first['conv_impl'],
          'lrn_impl': first['lrn_impl'], 'step_ms': ms, 'fastest': min(ms, key=ms.get),
          'xla_over_fast': ms['xla'] / ms['fast']}


def figure1_step(impls: list[str], *, batch: int, image_size: int, num_classes: int,
                 scan: int, calls: int, windows: int, peak_tflops: float = 0.0,
                 emit=print) -> list[dict]:
  """The Figure 1 net's SGD step with each layer implementation, timed interleaved (windows of
  `calls` scans of `scan` steps): one record each, img/s and MFU over the float32 peak."""
  timers = [small_net_jax_worker.StepsTimer(impl, batch_size=batch, image_size=image_size,
                                            num_classes=num_classes, scan=scan)
            for impl in impls]
  results = measure.time_interleaved(timers, warmup=1, steps=calls, windows=windows)
  peak, source = measure.device_peak(jax.devices()[0], 'float32', peak_tflops)
  flops = small_net.train_flops_per_image(image_size, num_classes) * batch
  records = []
  for impl, r in zip(impls, results):
    records.append({'impl': impl, 'batch': batch, 'image_size': image_size,
                    'num_classes': num_classes, 'activation': 'relu', 'dtype': 'float32',
                    'scan_steps': scan, 'step_ms': 1e3 * r['step_s'],
                    'img_s': batch / r['step_s'],
                    'mfu': flops / r['step_s'] / peak, 'peak_source': source,
                    'model_gflop_per_step': flops / 1e9,
                    'window_ms': [round(1e3 * t, 3) for t in r['window_s']],
                    'compile_s': round(r['compile_s'], 2), 'final_loss': r['final_loss']})
    emit({'kind': 'figure1_step', **records[-1]})
  return records


def loader_config(variant: str, folder: str, batch: int, dtype: str):
  config = alexnet_config.get_config(variant)
  config.dataset.name, config.dataset.folder = 'prepared', folder
  config.train.batch_size = batch
  config.model.dtype = dtype
  return config


def markdown(report: dict) -> str:
  """The tables: the step (ours and the yardsticks), the targets, the loader."""
  machine = report['machine']
  lines = [f'Device check, {machine["date"]}: {machine["device_kind"]} x{machine["devices"]} '
           f'({machine["platform"]}), {machine["host_cores"]} host cores, jax {machine["jax"]}.',
           '', '| impl | batch | dtype | conv impl | LRN impl | img/s | step ms | MFU | '
           'ours / plain_jax | ours / torch_compile |', '|---|---|---|---|---|---|---|---|---|---|']
  for r in report['step']:
    ratios = r.get('ratio_vs', {})
    cell = lambda name: f'{ratios[name]:.2f}x' if name in ratios else (
        '' if r['impl'] != 'ours' else 'not measured')
    lines.append(f'| {r["impl"]} | {r["batch"]} | {r["dtype"]} | {r["conv_impl"]} | '
                 f'{r["lrn_impl"]} | {r["img_s"]:.0f} | {r["step_ms"]:.2f} | '
                 f'{100 * r["mfu"]:.1f}% | {cell("plain_jax")} | {cell("torch_compile")} |')
  for name, why in report['not_measured'].items():
    lines.append(f'\n{name}: not measured ({why}).')
  lines.append(f'\nconv_impl for auto on {machine["platform"]}: **{report["conv_impl_auto"]}** '
               '(the fastest at the largest batch).')
  guard = report['nonfinite_guard']
  lines.append(f'\nThe non-finite guard at batch {guard["batch"]} {guard["dtype"]} '
               f'({guard["conv_impl"]}): {guard["step_ms_with"]:.2f} ms with it, '
               f'{guard["step_ms_without"]:.2f} ms without, {guard["with_over_without"]:.3f}x.')
  pool = report['pool_impl']
  lines.append(f'\npool_impl at batch {pool["batch"]} {pool["dtype"]} ({pool["conv_impl"]} / '
               f'{pool["lrn_impl"]}): fast {pool["step_ms"]["fast"]:.2f} ms, xla '
               f'{pool["step_ms"]["xla"]:.2f} ms: **{pool["fastest"]}** is faster (auto on '
               f'{machine["platform"]} runs {pooling.auto_impl(machine["platform"])} today).')
  lines += ['', f'The Figure 1 net\'s SGD step (figure1/net.py; float32, ReLU, scans of '
            f'{report["figure1_step"][0]["scan_steps"]} steps):', '',
            '| net impl | batch | px | classes | img/s | step ms | MFU | step: it / fastest |',
            '|---|---|---|---|---|---|---|---|']
  fastest_ms = min(r['step_ms'] for r in report['figure1_step'])
  for r in report['figure1_step']:
    lines.append(f'| {r["impl"]} | {r["batch"]} | {r["image_size"]} | {r["num_classes"]} | '
                 f'{r["img_s"]:.0f} | {r["step_ms"]:.3f} | {100 * r["mfu"]:.1f}% | '
                 f'{r["step_ms"] / fastest_ms:.2f} |')
  lines.append(f'\nFigure 1 net impl for auto on {machine["platform"]}: '
               f'**{report["figure1_impl_auto"]}** (the fastest; auto runs '
               f'{figure1_net.auto_impl(machine["platform"])} today).')
  target = report['targets']
  lines.append(f'\nTarget, ours / torch.compile at the largest batch >= '
               f'{TARGET_VS_TORCH_COMPILE}x: {target["vs_torch_compile"]}.')
  lines.append(f'Target, loader end to end >= {100 * TARGET_END_TO_END:.0f} % of the '
               f'synthetic step: {target["end_to_end"]}.')
  lines += ['', '| augment on | workers | threads | loader img/s | host CPU ms / image | '
            'img/s per core | synthetic step img/s | end to end img/s | end to end / synthetic |',
            '|---|---|---|---|---|---|---|---|---|']
  for r in report['loader']:
    lines.append(f'| {r["augment_on"]} | {r["workers"]} | {r["threads"]} | '
                 f'{r["loader_img_per_s"]:.0f} | '
                 f'{r["host_cpu_ms_per_image"]:.3f} | {r["img_per_s_per_core"]:.0f} | '
                 f'{r["synthetic_img_per_s"]:.0f} | {r["end_to_end_img_per_s"]:.0f} | '
                 f'{100 * r["fraction"]:.1f} % |')
  return '\n'.join(lines) + '\n'


def targets(step: list[dict], loader: list[dict]) -> dict:
  best = fastest_at_largest_batch(step)
  ratio = best.get('ratio_vs', {}).get('torch_compile')
  vs_torch = ('not measured' if ratio is None else
              f'{"met" if ratio >= TARGET_VS_TORCH_COMPILE else "not met"} ({ratio:.2f}x, '
              f'{best["conv_impl"]} / {best["lrn_impl"]})')
  end_to_end = ', '.join(
      f'{r["augment_on"]} ({r["workers"]} workers, {r["threads"]} threads) '
      f'{"met" if r["fraction"] >= TARGET_END_TO_END else "not met"} '
      f'({100 * r["fraction"]:.1f} %)' for r in loader) or 'not measured'
  return {'vs_torch_compile': vs_torch, 'end_to_end': end_to_end}


def run_check(*, out_dir: str, variant: str, batch_sizes: list[int], dtypes: list[str],
              conv_impls: list[str], lrn_impls: list[str], num_classes: int, steps: int,
              windows: int, loader_batch: int, workers: int, threads: int,
              loader_windows: int, figure1_impls=figure1_net.IMPLS, figure1_batch: int = 100,
              figure1_image_size: int = 32, figure1_scan: int = 25,
              yardsticks=('plain_jax', 'torch_compile'), emit=print) -> dict:
  """Everything above; returns the report that device_check.json holds."""
  t0 = time.perf_counter()
  os.makedirs(out_dir, exist_ok=True)
  device = jax.devices()[0]
  machine = {'date': time.strftime('%Y-%m-%d'), 'platform': device.platform,
             'device_kind': device.device_kind, 'devices': jax.device_count(),
             'host_cores': os.cpu_count(), 'jax': jax.__version__}
  emit({'kind': 'machine', **machine})
  torch, torch_missing = torch_yardstick('torch_compile' in yardsticks)
  not_measured = {} if torch else {'torch_compile': torch_missing}
  if 'plain_jax' not in yardsticks:
    not_measured['plain_jax'] = 'not asked for (--yardsticks)'
  yardsticks = [y for y in yardsticks if y == 'plain_jax'] + torch
  config = alexnet_config.get_config(variant)
  config.optimizer = alexnet_config.get_config().optimizer  # the paper's SGD, as benchmark.py
  print(f'[1/4] the step: batch {batch_sizes}, {dtypes}, conv {conv_impls}, LRN {lrn_impls}, '
        f'yardsticks {", ".join(yardsticks) or "none"}', flush=True)
  step = step_timing.run_step_benchmark(
      config, batch_sizes=batch_sizes, dtypes=dtypes, lrn_values=[True], meshes=[(1, 1)],
      lrn_impls=lrn_impls, conv_impls=conv_impls, pool_impls=['fast'],
      yardsticks=yardsticks, image_size=config.input.image_size,
      num_classes=num_classes, warmup=2, steps=steps, windows=windows, emit=emit)
  for r in step:  # the compiled programs are not JSON
    r.pop('compiled', None)
  conv_impl = fastest_conv_impl(step)
  print(f'[2/4] conv_impl for auto on {device.platform}: {conv_impl}; the non-finite guard\'s '
        'cost; pool_impl fast against xla', flush=True)
  guard = nonfinite_guard_cost(step_timing.run_step_benchmark(
      config, batch_sizes=batch_sizes[-1:], dtypes=dtypes[:1], lrn_values=[True],
      meshes=[(1, 1)], lrn_impls=['fast'], conv_impls=[conv_impl], pool_impls=['fast'],
      yardsticks=[], image_size=config.input.image_size, num_classes=num_classes, warmup=2,
      steps=steps, windows=windows, nonfinite_guards=(True, False), emit=emit))
  best = fastest_at_largest_batch(step)
  pool = pool_impl_comparison(step_timing.run_step_benchmark(
      config, batch_sizes=[best['batch']], dtypes=[best['dtype']], lrn_values=[True],
      meshes=[(1, 1)], lrn_impls=[best['lrn_impl']], conv_impls=[best['conv_impl']],
      pool_impls=list(pooling.IMPLS), yardsticks=[], image_size=config.input.image_size,
      num_classes=num_classes, warmup=2, steps=steps, windows=windows, emit=emit))
  print(f'[3/4] the Figure 1 net\'s SGD step: batch {figure1_batch}, {figure1_image_size} px, '
        f'impls {list(figure1_impls)}', flush=True)
  figure1 = figure1_step(list(figure1_impls), batch=figure1_batch,
                         image_size=figure1_image_size, num_classes=10, scan=figure1_scan,
                         calls=steps, windows=windows, emit=emit)
  folder = os.path.join(out_dir, 'prepared-256')
  print(f'[4/4] the loader: prepared copy in {folder}, host and device augmentation',
        flush=True)
  prepare.prepare_resized(config.dataset, folder, resize_size=config.input.resize_size,
                          workers=os.cpu_count() or 1, log=lambda *a, **k: None)
  cores = os.cpu_count() or 1
  feeds = [(cores if workers < 0 else workers, 2)]
  if threads:
    feeds.append((0, cores if threads < 0 else threads))
  feeds = list(dict.fromkeys(feeds))  # --workers=0 --threads=2 is one feed
  loader = loader_timing.run_benchmark(
      loader_config(variant, folder, loader_batch, dtypes[0]), feeds,
      augment_on=('host', 'device'), windows=loader_windows, steps=steps, emit=emit)
  report = {'machine': machine, 'step': step, 'conv_impl_auto': conv_impl,
            'nonfinite_guard': guard, 'pool_impl': pool, 'figure1_step': figure1,
            'figure1_impl_auto': max(figure1, key=lambda r: r['img_s'])['impl'],
            'not_measured': not_measured, 'loader': loader,
            'targets': targets(step, loader), 'wall_s': time.perf_counter() - t0}
  with open(os.path.join(out_dir, 'device_check.json'), 'w') as f:
    json.dump(report, f, indent=1, default=float)
  with open(os.path.join(out_dir, 'device_check.md'), 'w') as f:
    f.write(markdown(report))
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _OUT_DIR.value:
    raise UserError('--out_dir is required: where device_check.json and .md go')
  bad = [i for i in _FIGURE1_IMPLS.value if i not in figure1_net.IMPLS]
  if bad or not _FIGURE1_IMPLS.value:
    raise UserError(f'--figure1_impls={",".join(_FIGURE1_IMPLS.value)}: choose from '
                    f'{", ".join(figure1_net.IMPLS)}')
  report = run_check(
      out_dir=_OUT_DIR.value, variant=_CONFIG.value,
      batch_sizes=[int(b) for b in _BATCH_SIZES.value], dtypes=_DTYPES.value,
      conv_impls=_CONV_IMPLS.value, lrn_impls=_LRN_IMPLS.value,
      num_classes=_NUM_CLASSES.value, steps=_STEPS.value, windows=_WINDOWS.value,
      loader_batch=_LOADER_BATCH.value, workers=_WORKERS.value, threads=_THREADS.value,
      loader_windows=_LOADER_WINDOWS.value, figure1_impls=_FIGURE1_IMPLS.value,
      figure1_batch=_FIGURE1_BATCH.value, figure1_image_size=_FIGURE1_IMAGE_SIZE.value,
      figure1_scan=_FIGURE1_SCAN.value,
      yardsticks=[y for y in _YARDSTICKS.value if y], emit=measure.emit_json_line)
  print(markdown(report))
  print(f'{report["wall_s"]:.0f} s; written to {_OUT_DIR.value}/device_check.json and .md')


if __name__ == '__main__':
  cli.run(main)
