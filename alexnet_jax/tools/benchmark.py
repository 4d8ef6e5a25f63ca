r"""Speed of the whole training step, against the yardsticks in the same process.

  python -m alexnet_jax.tools.benchmark                                    # float32, batch 32
  python -m alexnet_jax.tools.benchmark --batch_sizes=128,512 --dtypes=bfloat16      # a GPU
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m alexnet_jax.tools.benchmark \
      --meshes=1x1,1x2                                               # the paper's split, CPU
  python -m alexnet_jax.tools.benchmark --yardsticks=plain_jax,torch_eager,torch_compile
  python -m alexnet_jax.tools.benchmark --mode=lrn                # LRN forward+backward only

For every batch size x dtype x LRN on/off it times our SGD step (train.jit_train_step: the
paper's update, 1000 classes, synthetic device-resident data) for each mesh, LRN implementation
and conv implementation asked for, then each yardstick's step on the same setting, and prints one
JSON line per measurement and a table with ours / yardstick. The yardsticks
(alexnet_jax/tools/yardsticks/): `plain_jax` (feature_group_count convolutions, reduce_window
LRN and pooling, XLA's own gradients), `torch_eager` and `torch_compile` (needs
`pip install -r requirements-torch.txt`), or the path of a .py file defining a flax
`AlexNet(use_lrn, dtype)` module. Machines are noisy: compare the ratios, which come from one
run, not absolute times.

Step time is the median over --windows timed windows of --steps steps each, after compilation
and --warmup steps. MFU = model FLOPs per step (counted from the layer shapes: 2 x MACs, x3
for forward + backward; 4.3 GFLOP per 227 px image at 1000 classes) / step time / the device's
peak, whose figure and source are printed. XLA's own cost-analysis count is printed beside it.
"""
import functools
import importlib.util
import os
import pathlib
import re
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import optax

from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import lrn as lrn_lib
from alexnet_jax.model import pooling
from alexnet_jax.tools import cli
from alexnet_jax.tools import measure
from alexnet_jax.tools.yardsticks import plain_jax
from alexnet_jax.tools.yardsticks import pytorch

_PAPER_CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'alexnet.py'
YARDSTICKS = ('plain_jax', 'torch_eager', 'torch_compile')

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(_PAPER_CONFIG), "The base config of our step (the paper's by default); the "
    'flags below set its batch, dtype, LRN and implementation switches.', lock_config=False)
_MODE = flags.DEFINE_enum('mode', 'step', ['step', 'lrn'], 'step: the whole training step; '
                          'lrn: LRN forward+backward alone, per implementation.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32'], 'Global batch sizes.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes: float32, bfloat16.')
_LRN = flags.DEFINE_list('lrn', ['on'], 'LRN on and/or off.')
_MESHES = flags.DEFINE_list('meshes', ['1x1'], "Meshes 'DATAxMODEL'; 1x2 is the paper's split. "
                            'On CPU, fake devices: XLA_FLAGS=--xla_force_host_platform_'
                            'device_count=N.')
_LRN_IMPLS = flags.DEFINE_list('lrn_impls', ['fast'], 'LRN implementations (lrn.IMPLS).')
_CONV_IMPLS = flags.DEFINE_list('conv_impls', ['auto'], 'Grouped conv implementations '
                                '(grouped_conv.CONV_IMPLS).')
_POOL_IMPLS = flags.DEFINE_list('pool_impls', ['fast'], 'Max-pool implementations '
                                '(pooling.IMPLS).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Classes (the paper: 1000).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 227, 'Input crop size.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps after compilation.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Steps per timed window.')
_WINDOWS = flags.DEFINE_integer('windows', 3, 'Timed windows; the median is reported.')
_YARDSTICKS = flags.DEFINE_list(
    'yardsticks', ['plain_jax'], f'Yardsticks timed beside ours: {", ".join(YARDSTICKS)}, or '
    "a .py file defining a flax AlexNet(use_lrn, dtype); '' for none. Ratios are against the "
    'first.')
_PEAK_TFLOPS = flags.DEFINE_float('peak_tflops', 0.0, "The device's peak TFLOP/s for MFU; "
                                  '0 = from the built-in table.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')


def _synthetic_batches(batch: int, image_size: int, num_classes: int, dtype, n: int = 2):
  keys = jax.random.split(jax.random.PRNGKey(42), n)
  return [(jax.random.normal(k, (batch, image_size, image_size, 3), dtype),
           jax.random.randint(k, (batch,), 0, num_classes)) for k in keys]


def bench_ours(config, batch: int, mesh_shape: tuple[int, int], image_size: int,
               num_classes: int) -> tuple[measure.StepTimer, float]:
  """train.jit_train_step of config (model and optimizer) on a (data, model) mesh, with a
  constant lr; (timer, model FLOPs per step)."""
  data, model_axis = mesh_shape
  needed = data * model_axis
  if jax.device_count() < needed:
    raise UserError(f'mesh {data}x{model_axis} needs {needed} devices, {jax.device_count()} '
                    'present (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)')
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': data, 'model': model_axis}),
                              jax.devices()[:needed])
  sharding.check_batch(batch, mesh)
  model = alexnet.from_config(config.model)
  opt_config = ml_collections.ConfigDict(config.optimizer.to_dict())
  opt_config.schedule = 'constant'
  tx = optim.create_optimizer(opt_config, 1000, 1000, batch)
  with jax.set_mesh(mesh):
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0), image_size, mesh)
    batches = [(sharding.global_batch({'image': x, 'label': y}, mesh),) for x, y in
               _synthetic_batches(batch, image_size, num_classes, jnp.float32)]
    timer = measure.StepTimer(train.jit_train_step(state, mesh), (state,), batches)
  return timer, measure.model_flops_per_image(model, image_size) * batch


def load_flax_yardstick(path: str):
  """A .py file defining a flax AlexNet(use_lrn, dtype) module."""
  if not os.path.isfile(path):
    raise UserError(f'--yardsticks: {path!r} is neither a file nor one of '
                    f'{", ".join(YARDSTICKS)}')
  spec = importlib.util.spec_from_file_location('alexnet_yardstick', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def bench_flax_yardstick(module, batch: int, dtype: str, lrn: bool, image_size: int,
                         num_classes: int) -> measure.StepTimer:
  """A flax AlexNet from a file, under the same update as plain_jax, on one device."""
  jdtype = alexnet.DTYPES[dtype]
  net = module.AlexNet(use_lrn=lrn, dtype=jdtype)
  key = jax.random.PRNGKey(0)
  params = net.init({'params': key, 'dropout': key},
                    jnp.zeros((1, image_size, image_size, 3), jdtype))['params']
  tx = plain_jax.optimizer()
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
      batch, image_size, num_classes, jdtype)]
  return measure.StepTimer(step, (params, opt), batches)


def bench_yardstick(name: str, batch: int, dtype: str, lrn: bool, image_size: int,
                    num_classes: int):
  """A timer of yardstick `name` (YARDSTICKS or a file) on one device."""
  if name == 'plain_jax':
    step, carry, batches = plain_jax.build_step(batch, dtype, lrn, image_size, num_classes)
    return measure.StepTimer(step, carry, batches)
  if name in ('torch_eager', 'torch_compile'):
    return pytorch.TorchStepTimer(batch, dtype, lrn, compile=name == 'torch_compile',
                                  image_size=image_size, num_classes=num_classes)
  return bench_flax_yardstick(load_flax_yardstick(name), batch, dtype, lrn, image_size,
                              num_classes)


def _record(result: dict, model_flops: float, peak_tflops: float, **setting) -> dict:
  compiled = result.pop('compiled')
  batch = setting['batch']
  device = jax.devices()[0]
  platform = device.platform
  peak, peak_note = measure.device_peak(device, setting['dtype'], peak_tflops)
  step_s = result['step_s']
  memory, memory_note = measure.device_memory_mb(compiled)
  rss, rss_peak = measure.host_rss_mb()
  # A CPU's peak already counts every core, which its (fake) devices share.
  total_peak = peak if platform == 'cpu' else peak * setting.get('devices', 1)
  return {
      **setting, 'img_s': batch / step_s, 'step_ms': 1e3 * step_s,
      'window_ms': [round(1e3 * t, 1) for t in result['window_s']],
      'compile_s': round(result['compile_s'], 2), 'final_loss': result['final_loss'],
      'xla_gflop_per_step': measure.xla_flops(compiled) / 1e9,
      'device_memory_mb': round(memory, 1), 'device_memory_source': memory_note,
      'host_rss_mb': round(rss, 1), 'host_rss_peak_mb': round(rss_peak, 1),
      'platform': platform, 'device_kind': device.device_kind,
      'peak_tflops_per_device': peak / 1e12, 'peak_source': peak_note,
      'model_gflop_per_step': model_flops / 1e9, 'mfu': model_flops / step_s / total_peak,
  }


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


def run_step_benchmark(config, *, batch_sizes: list[int], dtypes: list[str],
                       lrn_values: list[bool], meshes: list[tuple[int, int]],
                       lrn_impls: list[str], conv_impls: list[str], pool_impls: list[str],
                       yardsticks: list[str], image_size: int, num_classes: int,
                       warmup: int, steps: int, windows: int, peak_tflops: float = 0.0,
                       emit=print) -> list[dict]:
  """One record per (setting, implementation), yardsticks first, each with its ratios."""
  for name in yardsticks:
    if name in ('torch_eager', 'torch_compile') and not pytorch.available():
      raise UserError(f'--yardsticks={name} needs PyTorch: pip install -r '
                      'requirements-torch.txt')
    if name not in YARDSTICKS:
      load_flax_yardstick(name)  # a missing file is an error before anything compiles
  records = []
  for batch in batch_sizes:
    for dtype in dtypes:
      for lrn in lrn_values:
        setting = {'batch': batch, 'dtype': dtype, 'lrn': lrn}
        timers, settings, flops = [], [], []
        for mesh in meshes:
          for lrn_impl in (lrn_impls if lrn else lrn_impls[:1]):
            for conv_impl in conv_impls:
              for pool_impl in pool_impls:
                ours = ml_collections.ConfigDict(config.to_dict())
                ours.model.update(num_classes=num_classes, dtype=dtype, lrn=lrn,
                                  lrn_impl=lrn_impl, conv_impl=conv_impl, pool_impl=pool_impl)
                timer, model_flops = bench_ours(ours, batch, mesh, image_size, num_classes)
                timers.append(timer)
                flops.append(model_flops)
                settings.append(dict(impl='ours', **setting, mesh=f'{mesh[0]}x{mesh[1]}',
                                     devices=mesh[0] * mesh[1], lrn_impl=lrn_impl,
                                     conv_impl=conv_impl, pool_impl=pool_impl))
        for name in yardsticks:
          timers.append(bench_yardstick(name, batch, dtype, lrn, image_size, num_classes))
          flops.append(flops[0])
          settings.append(dict(impl=f'yardstick:{os.path.basename(name)}', **setting,
                               mesh='1x1', devices=1, lrn_impl='reduce_window',
                               conv_impl='feature_group', pool_impl='xla'))
        results = measure.time_interleaved(timers, warmup=warmup, steps=steps, windows=windows)
        del timers  # frees the states before the next setting
        group = [_record(r, f, peak_tflops, **s) for r, f, s in zip(results, flops, settings)]
        refs = [r for r in group if r['impl'].startswith('yardstick:')]
        for record in group:
          if record['impl'] == 'ours':
            record['ratio_vs'] = {ref['impl'].split(':', 1)[1]: record['img_s'] / ref['img_s']
                                  for ref in refs}
        group = refs + [r for r in group if r['impl'] == 'ours']
        for record in group:
          emit(record)
        records.extend(group)
  return records


def print_step_table(records: list[dict]) -> None:
  if not records:
    return
  r0 = records[0]
  names = list(next((r['ratio_vs'] for r in records if 'ratio_vs' in r), {}))
  print(f'\n{time.strftime("%Y-%m-%d")} | {r0["platform"]} ({r0["device_kind"]}), '
        f'{os.cpu_count()} host cores | peak {r0["peak_tflops_per_device"]:.3g} TFLOP/s per '
        f'device ({r0["peak_source"]})')
  header = ('| impl | batch | dtype | LRN | mesh | LRN impl | conv impl | pool impl | img/s | '
            'step ms | compile s | MFU | device MB | host RSS MB |' +
            ''.join(f' ours / {n} |' for n in names))
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  for r in records:
    ratios = ''.join(f' {r["ratio_vs"][n]:.2f}x |' if 'ratio_vs' in r else ' |' for n in names)
    print(f'| {r["impl"]} | {r["batch"]} | {r["dtype"]} | {"on" if r["lrn"] else "off"} | '
          f'{r["mesh"]} | {r["lrn_impl"] if r["lrn"] else "-"} | '
          f'{r["conv_impl"]} | {r["pool_impl"]} | {r["img_s"]:.1f} | {r["step_ms"]:.0f} | '
          f'{r["compile_s"]:.1f} | {100 * r["mfu"]:.1f}% | {r["device_memory_mb"]:.0f} | '
          f'{r["host_rss_peak_mb"]:.0f} |{ratios}')


def run_lrn_benchmark(*, batch_sizes: list[int], dtypes: list[str], warmup: int, steps: int,
                      windows: int, emit=print) -> list[dict]:
  """LRN forward+backward on conv1's and conv2's outputs, per implementation."""
  records = []
  for batch in batch_sizes:
    for dtype in dtypes:
      for layer, (hw, channels) in {'norm1': (55, 96), 'norm2': (27, 256)}.items():
        x = jax.random.normal(jax.random.PRNGKey(0), (2, batch, hw, hw, channels // 2),
                              alexnet.DTYPES[dtype]) * 30
        g = jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype)
        timers = []
        for impl in lrn_lib.IMPLS:
          def step(x, g, impl=impl):
            y, vjp = jax.vjp(lambda v: lrn_lib.local_response_norm(v, impl=impl), x)
            dx = vjp(g)[0]
            return x, g, jnp.sum(y.astype(jnp.float32)) + jnp.sum(dx.astype(jnp.float32))
          timers.append(measure.StepTimer(jax.jit(step), (x, g), [()]))
        results = measure.time_interleaved(timers, warmup=warmup, steps=max(steps, 5),
                                           windows=windows)
        by_impl = {impl: r['step_s'] for impl, r in zip(lrn_lib.IMPLS, results)}
        for impl in lrn_lib.IMPLS:
          record = {'mode': 'lrn', 'layer': layer, 'batch': batch, 'dtype': dtype,
                    'shape': list(x.shape), 'impl': impl, 'ms': 1e3 * by_impl[impl],
                    'speedup_vs_autodiff': by_impl['autodiff'] / by_impl[impl],
                    'speedup_vs_reduce_window': by_impl['reduce_window'] / by_impl[impl]}
          emit(record)
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
  emit = functools.partial(measure.emit_json_line, json_out=_JSON_OUT.value)
  _check_choices((_DTYPES.value, alexnet.DTYPES, 'dtypes'),
                 (_POOL_IMPLS.value, pooling.IMPLS, 'pool_impls'),
                 (_LRN_IMPLS.value, lrn_lib.IMPLS, 'lrn_impls'),
                 (_CONV_IMPLS.value, alexnet.CONV_IMPLS, 'conv_impls'),
                 (_LRN.value, ('on', 'off'), 'lrn'))
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  if _MODE.value == 'lrn':
    run_lrn_benchmark(batch_sizes=batch_sizes, dtypes=_DTYPES.value, warmup=_WARMUP.value,
                      steps=_STEPS.value, windows=_WINDOWS.value, emit=emit)
    return
  records = run_step_benchmark(
      _CONFIG.value, batch_sizes=batch_sizes, dtypes=_DTYPES.value,
      lrn_values=[v == 'on' for v in _LRN.value],
      meshes=[_parse_mesh(m) for m in _MESHES.value], lrn_impls=_LRN_IMPLS.value,
      conv_impls=_CONV_IMPLS.value, pool_impls=_POOL_IMPLS.value,
      yardsticks=[y for y in _YARDSTICKS.value if y], image_size=_IMAGE_SIZE.value,
      num_classes=_NUM_CLASSES.value, warmup=_WARMUP.value, steps=_STEPS.value,
      windows=_WINDOWS.value, peak_tflops=_PEAK_TFLOPS.value, emit=emit)
  print_step_table(records)


if __name__ == '__main__':
  cli.run(main)
