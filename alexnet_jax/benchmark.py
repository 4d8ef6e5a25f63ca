r"""Speed of the whole training step, against the plain-JAX yardstick in the same process.

  python -m alexnet_jax.benchmark                                   # float32, batch 32, CPU
  python -m alexnet_jax.benchmark --batch_sizes=128,512 --dtypes=bfloat16     # a GPU
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m alexnet_jax.benchmark \
      --meshes=1x1,1x2                                              # the paper's split, CPU
  python -m alexnet_jax.benchmark --mode=lrn                        # LRN forward+backward only

For every batch size x dtype x LRN on/off it times our SGD step (the paper's update, 1000
classes, synthetic device-resident data) for each mesh, LRN implementation and conv
implementation asked for, then the yardstick's step (../shared/reference/
jax_naive_alexnet2012.py: feature_group_count convs, reduce_window LRN, one device) on the
same setting, and prints one JSON line per measurement and a table with ours / yardstick.
Machines are noisy: compare the ratios, which come from one run, not absolute times.

Step time is the median over --windows timed windows of --steps steps each, after compilation
and --warmup steps. MFU = model FLOPs per step (counted from the layer shapes: 2 x MACs, x3
for forward + backward; 4.3 GFLOP per 227 px image at 1000 classes) / step time / the device's
peak, whose figure and source are printed. XLA's own cost-analysis count is printed beside it.
"""
import importlib.util
import json
import os
import pathlib
import re
import resource
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_YARDSTICK = _REPO_ROOT.parent / 'shared' / 'reference' / 'jax_naive_alexnet2012.py'

def define_flags() -> None:
  """The command's flags; defined by main only, so that importing this module (tests,
  notebooks, loader_benchmark in the same process) adds no global flags."""
  flags.DEFINE_enum('mode', 'step', ['step', 'lrn'], 'step: the whole training step; '
                    'lrn: LRN forward+backward alone, per implementation.')
  flags.DEFINE_list('batch_sizes', ['32'], 'Global batch sizes.')
  flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes: float32, bfloat16.')
  flags.DEFINE_list('lrn', ['on'], 'LRN on and/or off.')
  flags.DEFINE_list('meshes', ['1x1'], "Meshes 'DATAxMODEL'; 1x2 is the paper's split. "
                    'On CPU, fake devices: XLA_FLAGS=--xla_force_host_platform_'
                    'device_count=N.')
  flags.DEFINE_list('lrn_impls', ['fast'], 'LRN implementations (lrn.IMPLS).')
  flags.DEFINE_list('conv_impls', ['auto'], 'Grouped conv implementations '
                    '(models.CONV_IMPLS).')
  flags.DEFINE_list('pool_impls', ['fast'], 'Max-pool implementations '
                    '(pooling.IMPLS).')
  flags.DEFINE_integer('num_classes', 1000, 'Classes (the paper: 1000).')
  flags.DEFINE_integer('image_size', 227, 'Input crop size.')
  flags.DEFINE_integer('warmup', 1, 'Untimed steps after compilation.')
  flags.DEFINE_integer('steps', 2, 'Steps per timed window.')
  flags.DEFINE_integer('windows', 3, 'Timed windows; the median is reported.')
  flags.DEFINE_string('yardstick', str(DEFAULT_YARDSTICK),
                      "The plain-JAX yardstick's file; '' skips it.")
  flags.DEFINE_float('peak_tflops', 0.0, "The device's peak TFLOP/s for MFU; "
                     '0 = from the built-in table.')
  flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')


PAPER_CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')

# Dense peak TFLOP/s per device by device_kind substring, {dtype: peak} (vendor data sheets,
# SXM parts, without sparsity).
_ACCELERATOR_PEAKS = (
    ('H200', {'bfloat16': 989.0, 'float32': 67.0}),
    ('H100', {'bfloat16': 989.0, 'float32': 67.0}),
    ('A100', {'bfloat16': 312.0, 'float32': 19.5}),
    ('TPU v5p', {'bfloat16': 459.0, 'float32': 459.0}),
    ('TPU v5', {'bfloat16': 197.0, 'float32': 197.0}),
    ('TPU v4', {'bfloat16': 275.0, 'float32': 275.0}),
)


def device_peak(device, dtype: str) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the figure comes from)."""
  if FLAGS.peak_tflops > 0:
    return FLAGS.peak_tflops * 1e12, '--peak_tflops'
  if device.platform == 'cpu':
    cores = len(os.sched_getaffinity(0))
    ghz = _cpu_ghz()
    # x86 with AVX2/AVX-512: 2 FMA pipes x 256 bits = 16 float32 FMAs = 32 FLOP per cycle per
    # core (Zen 4 runs AVX-512 at that width). bf16 is counted at the same rate: XLA:CPU
    # converts bf16 convolutions to float32.
    per_cycle = 32
    note = f'{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle (2x256-bit FMA)'
    return cores * ghz * 1e9 * per_cycle, note
  for kind, peaks in _ACCELERATOR_PEAKS:
    if kind.lower() in device.device_kind.lower():
      return peaks[dtype] * 1e12, f'{kind} {dtype} dense peak, data sheet'
  return float('nan'), f'unknown peak for {device.device_kind!r} (use --peak_tflops)'


def _cpu_ghz() -> float:
  try:
    with open('/proc/cpuinfo') as f:
      mhz = [float(m) for m in re.findall(r'cpu MHz\s*:\s*([\d.]+)', f.read())]
    return max(mhz) / 1e3 if mhz else float('nan')
  except OSError:
    return float('nan')


def host_rss_mb() -> tuple[float, float]:
  """(current, peak) resident memory of this process in MB."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
  current = float('nan')
  try:
    with open('/proc/self/status') as f:
      match = re.search(r'VmRSS:\s*(\d+) kB', f.read())
    current = int(match.group(1)) / 1024 if match else current
  except OSError:
    pass
  return current, peak


def device_memory_mb(compiled) -> tuple[float, str]:
  """Peak device memory: the allocator's figure where there is one (GPU, TPU), else XLA's
  compile-time estimate of the step (arguments + outputs + temporaries - aliased)."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20, 'allocator peak'
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
             m.alias_size_in_bytes)
    return total / 2**20, 'XLA estimate'
  except Exception:  # pylint: disable=broad-except
    return float('nan'), 'unavailable'


def xla_flops(compiled) -> float:
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return float(analysis.get('flops', float('nan')))
  except Exception:  # pylint: disable=broad-except
    return float('nan')


def model_flops_per_image(model, image_size: int) -> float:
  """2 x multiply-adds of every conv and dense layer for one image, x3 for the training step
  (the backward computes input and weight gradients: twice the forward)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables, (_, state) = jax.eval_shape(
      lambda x: (model.init(jax.random.PRNGKey(0), x, train=False),
                 model.apply(model.init(jax.random.PRNGKey(0), x, train=False), x,
                             train=False, mutable=['intermediates'])), images)
  params = variables['params']
  inter = state['intermediates']
  macs = 0
  for name in PAPER_CONV_LAYERS:
    g, k, _, cin, _ = params[name]['kernel'].shape
    out = inter[f'{name}_out'][0].shape  # G x B x H x W x C/G
    macs += out[0] * out[2] * out[3] * out[4] * k * k * cin
  for name in ('fc6', 'fc7', 'fc8'):
    fan_in, fan_out = params[name]['kernel'].shape
    macs += fan_in * fan_out
  return 3 * 2 * macs


class StepTimer:
  """Compiles step(*carry, *batch) -> (*carry, loss) and times windows of it; carry is donated.

  Several timers are stepped in turn (window 1 of each, then window 2 of each, ...), so that a
  burst of load on a shared machine hits every candidate alike and the ratios stay fair.
  """

  def __init__(self, step: Callable, carry: tuple, batches: list):
    t0 = time.perf_counter()
    self.compiled = step.lower(*carry, *batches[0]).compile()
    self.compile_s = time.perf_counter() - t0
    self.carry, self.batches, self.times = carry, batches, []
    self.loss = float('nan')

  def run(self, steps: int) -> float:
    import jax  # pylint: disable=g-import-not-at-top
    t0 = time.perf_counter()
    out = None
    for i in range(steps):
      out = self.compiled(*self.carry, *self.batches[i % len(self.batches)])
      self.carry = out[:-1]
    jax.block_until_ready(out)
    self.loss = out[-1]
    return (time.perf_counter() - t0) / max(steps, 1)

  def window(self, steps: int) -> None:
    self.times.append(self.run(steps))

  def result(self) -> dict[str, Any]:
    return {'step_s': statistics.median(self.times), 'window_s': self.times,
            'compile_s': self.compile_s, 'final_loss': float(self.loss),
            'compiled': self.compiled}


def time_interleaved(timers: list[StepTimer], *, warmup: int, steps: int,
                     windows: int) -> list[dict[str, Any]]:
  for timer in timers:
    timer.run(1 + warmup)  # the first call also loads the executable
  for _ in range(windows):
    for timer in timers:
      timer.window(steps)
  return [timer.result() for timer in timers]


def _synthetic_batches(batch: int, image_size: int, num_classes: int, dtype, n: int = 2):
  import jax  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.PRNGKey(42), n)
  return [(jax.random.normal(k, (batch, image_size, image_size, 3), dtype),
           jax.random.randint(k, (batch,), 0, num_classes)) for k in keys]


def bench_ours(batch: int, dtype: str, lrn: bool, mesh_shape: tuple[int, int], lrn_impl: str,
               conv_impl: str, pool_impl: str) -> tuple[StepTimer, float]:
  """Our train.train_step with the paper's SGD on a (data, model) mesh; (timer, model FLOPs)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models, optim, sharding, train  # pylint: disable=g-import-not-at-top
  from configs import alexnet as alexnet_config  # pylint: disable=g-import-not-at-top

  config = alexnet_config.get_config()
  config.model.update(num_classes=FLAGS.num_classes, dtype=dtype, lrn=lrn, lrn_impl=lrn_impl,
                      conv_impl=conv_impl, pool_impl=pool_impl)
  config.optimizer.schedule = 'constant'
  data, model_axis = mesh_shape
  needed = data * model_axis
  if jax.device_count() < needed:
    raise FlagError(f'mesh {data}x{model_axis} needs {needed} devices, {jax.device_count()} '
                    'present (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)')
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': data, 'model': model_axis}),
                              jax.devices()[:needed])
  sharding.check_batch(batch, mesh)
  model = models.from_config(config.model)
  tx = optim.create_optimizer(config.optimizer, 1000, 1000, batch)
  with jax.set_mesh(mesh):
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0), FLAGS.image_size, mesh)
    state_shardings = sharding.tree_shardings(state, mesh)
    batch_sharding = sharding.batch_sharding(mesh)

    def step(state, images, labels):
      state, metrics = train.train_step(state, {'image': images, 'label': labels})
      return state, metrics['loss']

    jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding, batch_sharding),
                     out_shardings=(state_shardings, None), donate_argnums=0)
    batches = [tuple(jax.device_put(a, batch_sharding) for a in b) for b in _synthetic_batches(
        batch, FLAGS.image_size, FLAGS.num_classes, jnp.float32)]
    timer = StepTimer(jitted, (state,), batches)
  return timer, model_flops_per_image(model, FLAGS.image_size) * batch


def load_yardstick(path: str):
  spec = importlib.util.spec_from_file_location('alexnet_yardstick', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def bench_yardstick(module, batch: int, dtype: str, lrn: bool) -> StepTimer:
  """The yardstick's own model and step (as its bench() builds them), in our timing loop.

  Its bench() fixes bf16 and 50-step windows; this runs the same model and update at the
  requested dtype and window length, on one device, as the yardstick does.
  """
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top

  jdtype = models.DTYPES[dtype]
  net = module.AlexNet(use_lrn=lrn, dtype=jdtype)
  key = jax.random.PRNGKey(0)
  params = net.init({'params': key, 'dropout': key},
                    jnp.zeros((1, FLAGS.image_size, FLAGS.image_size, 3), jdtype))['params']
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
  opt = tx.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt, x, y):
    def loss_fn(p):
      logits = net.apply({'params': p}, x, rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                             y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  device = jax.devices()[0]
  batches = [tuple(jax.device_put(a, device) for a in b) for b in _synthetic_batches(
      batch, FLAGS.image_size, 1000, jdtype)]
  return StepTimer(step, (params, opt), batches)


def _record(result: dict, model_flops: float | None = None, **setting) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  compiled = result.pop('compiled')
  batch = setting['batch']
  n_devices = setting.get('devices', 1)
  peak, peak_note = device_peak(jax.devices()[0], setting['dtype'])
  step_s = result['step_s']
  memory, memory_note = device_memory_mb(compiled)
  rss, rss_peak = host_rss_mb()
  flops = model_flops
  record = {
      **setting, 'img_s': batch / step_s, 'step_ms': 1e3 * step_s,
      'window_ms': [round(1e3 * t, 1) for t in result['window_s']],
      'compile_s': round(result['compile_s'], 2), 'final_loss': result['final_loss'],
      'xla_gflop_per_step': xla_flops(compiled) / 1e9,
      'device_memory_mb': round(memory, 1), 'device_memory_source': memory_note,
      'host_rss_mb': round(rss, 1), 'host_rss_peak_mb': round(rss_peak, 1),
      'platform': jax.devices()[0].platform, 'device_kind': jax.devices()[0].device_kind,
      'peak_tflops_per_device': peak / 1e12, 'peak_source': peak_note,
  }
  if flops is not None:
    record['model_gflop_per_step'] = flops / 1e9
    # A CPU's peak already counts every core, which its (fake) devices share.
    total_peak = peak if record['platform'] == 'cpu' else peak * n_devices
    record['mfu'] = flops / step_s / total_peak
  return record


def emit_json_line(record: dict, json_out: str = '') -> None:
  """One measurement as a JSON line on stdout, and appended to json_out if given (shared with
  loader_benchmark)."""
  line = json.dumps(record)
  print(line, flush=True)
  if json_out:
    with open(json_out, 'a') as f:
      f.write(line + '\n')


def _emit(record: dict) -> None:
  emit_json_line(record, FLAGS.json_out)


class FlagError(ValueError):
  """A bad flag value: reported as one line."""


def _parse_mesh(text: str) -> tuple[int, int]:
  match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
  if not match:
    raise FlagError(f"--meshes: {text!r} is not 'DATAxMODEL' (e.g. 1x2)")
  return int(match.group(1)), int(match.group(2))


def run_step_benchmark() -> list[dict]:
  from alexnet_jax import lrn as lrn_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  from alexnet_jax import pooling  # pylint: disable=g-import-not-at-top
  for value, allowed, name in ((FLAGS.dtypes, models.DTYPES, 'dtypes'),
                               (FLAGS.pool_impls, pooling.IMPLS, 'pool_impls'),
                               (FLAGS.lrn_impls, lrn_lib.IMPLS, 'lrn_impls'),
                               (FLAGS.conv_impls, models.CONV_IMPLS, 'conv_impls'),
                               (FLAGS.lrn, ('on', 'off'), 'lrn')):
    bad = [v for v in value if v not in allowed]
    if bad:
      raise FlagError(f'--{name}: {", ".join(bad)}; choose from {", ".join(allowed)}')
  meshes = [_parse_mesh(m) for m in FLAGS.meshes]
  yardstick = None
  if FLAGS.yardstick:
    if os.path.isfile(FLAGS.yardstick):
      yardstick = load_yardstick(FLAGS.yardstick)
    else:
      print(f'note: no yardstick at {FLAGS.yardstick}; timing ours only', file=sys.stderr)
  records = []
  for batch in [int(b) for b in FLAGS.batch_sizes]:
    for dtype in FLAGS.dtypes:
      for lrn in [v == 'on' for v in FLAGS.lrn]:
        setting = {'batch': batch, 'dtype': dtype, 'lrn': lrn}
        timers, settings, flops = [], [], []
        for mesh in meshes:
          for lrn_impl in (FLAGS.lrn_impls if lrn else FLAGS.lrn_impls[:1]):
            for conv_impl in FLAGS.conv_impls:
              for pool_impl in FLAGS.pool_impls:
                timer, model_flops = bench_ours(batch, dtype, lrn, mesh, lrn_impl, conv_impl,
                                                pool_impl)
                timers.append(timer)
                flops.append(model_flops)
                settings.append(dict(impl='ours', **setting, mesh=f'{mesh[0]}x{mesh[1]}',
                                     devices=mesh[0] * mesh[1], lrn_impl=lrn_impl,
                                     conv_impl=conv_impl, pool_impl=pool_impl))
        if yardstick is not None:
          timers.append(bench_yardstick(yardstick, batch, dtype, lrn))
          flops.append(flops[0])
          settings.append(dict(impl='yardstick', **setting, mesh='1x1', devices=1,
                               lrn_impl='reduce_window', conv_impl='feature_group',
                               pool_impl='xla'))
        results = time_interleaved(timers, warmup=FLAGS.warmup, steps=FLAGS.steps,
                                   windows=FLAGS.windows)
        del timers  # frees the states before the next setting
        group = [_record(r, model_flops=f, **s) for r, f, s in zip(results, flops, settings)]
        if yardstick is not None:
          ref = group[-1]
          for record in group[:-1]:
            record['ratio_vs_yardstick'] = record['img_s'] / ref['img_s']
          group = [ref] + group[:-1]
        for record in group:
          _emit(record)
        records.extend(group)
  return records


def print_step_table(records: list[dict]) -> None:
  if not records:
    return
  r0 = records[0]
  print(f'\n{time.strftime("%Y-%m-%d")} | {r0["platform"]} ({r0["device_kind"]}), '
        f'{os.cpu_count()} host cores | peak {r0["peak_tflops_per_device"]:.3g} TFLOP/s per '
        f'device ({r0["peak_source"]})')
  header = ('| impl | batch | dtype | LRN | mesh | LRN impl | conv impl | pool impl | img/s | '
            'step ms | compile s | MFU | device MB | host RSS MB | ours / yardstick |')
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  for r in records:
    ratio = r.get('ratio_vs_yardstick')
    mfu = r.get('mfu', float('nan'))
    print(f'| {r["impl"]} | {r["batch"]} | {r["dtype"]} | {"on" if r["lrn"] else "off"} | '
          f'{r["mesh"]} | {r["lrn_impl"] if r["lrn"] else "-"} | '
          f'{r["conv_impl"]} | {r["pool_impl"]} | {r["img_s"]:.1f} | {r["step_ms"]:.0f} | '
          f'{r["compile_s"]:.1f} | {100 * mfu:.1f}% | {r["device_memory_mb"]:.0f} | '
          f'{r["host_rss_peak_mb"]:.0f} | {"" if ratio is None else f"{ratio:.2f}x"} |')


def run_lrn_benchmark() -> list[dict]:
  """LRN forward+backward on conv1's and conv2's outputs, per implementation."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alexnet_jax import lrn as lrn_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  records = []
  for batch in [int(b) for b in FLAGS.batch_sizes]:
    for dtype in FLAGS.dtypes:
      for layer, (hw, channels) in {'norm1': (55, 96), 'norm2': (27, 256)}.items():
        x = jax.random.normal(jax.random.PRNGKey(0), (2, batch, hw, hw, channels // 2),
                              models.DTYPES[dtype]) * 30
        g = jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype)
        timers = []
        for impl in lrn_lib.IMPLS:
          def step(x, g, impl=impl):
            y, vjp = jax.vjp(lambda v: lrn_lib.local_response_norm(v, impl=impl), x)
            dx = vjp(g)[0]
            return x, g, jnp.sum(y.astype(jnp.float32)) + jnp.sum(dx.astype(jnp.float32))
          timers.append(StepTimer(jax.jit(step), (x, g), [()]))
        results = time_interleaved(timers, warmup=FLAGS.warmup, steps=max(FLAGS.steps, 5),
                                   windows=FLAGS.windows)
        by_impl = {impl: r['step_s'] for impl, r in zip(lrn_lib.IMPLS, results)}
        for impl in lrn_lib.IMPLS:
          record = {'mode': 'lrn', 'layer': layer, 'batch': batch, 'dtype': dtype,
                    'shape': list(x.shape), 'impl': impl, 'ms': 1e3 * by_impl[impl],
                    'speedup_vs_autodiff': by_impl['autodiff'] / by_impl[impl],
                    'speedup_vs_reduce_window': by_impl['reduce_window'] / by_impl[impl]}
          _emit(record)
          records.append(record)
  print('\n| layer | batch | dtype | impl | fwd+bwd ms | vs autodiff | vs reduce_window |')
  print('|---|---|---|---|---|---|---|')
  for r in records:
    print(f'| {r["layer"]} | {r["batch"]} | {r["dtype"]} | {r["impl"]} | {r["ms"]:.2f} | '
          f'{r["speedup_vs_autodiff"]:.2f}x | {r["speedup_vs_reduce_window"]:.2f}x |')
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # JAX logs its backend probing at INFO.
  sys.path.insert(0, str(_REPO_ROOT))  # configs/ is a top-level folder of the repo
  from alexnet_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.mode == 'lrn':
      run_lrn_benchmark()
    else:
      print_step_table(run_step_benchmark())
  except (FlagError, UserError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  define_flags()
  app.run(main)
