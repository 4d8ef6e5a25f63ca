"""The step benchmark's measurements, without flags (benchmark.py and device_check.py are the
commands): our SGD step and each yardstick timed interleaved on synthetic device-resident data,
one record per setting with MFU, memory and ours / each yardstick; and the LRN alone.
"""
import functools
import importlib.util
import itertools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

from alexnet_jax import config_validation
from alexnet_jax import model as model_lib
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks.yardsticks import plain_jax
from alexnet_jax.benchmarks.yardsticks import pytorch
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import lrn as lrn_lib

YARDSTICKS = ('plain_jax', 'torch_eager', 'torch_compile')

def _synthetic_batches(batch: int, image_size: int, num_classes: int, dtype, n: int = 2):
  keys = jax.random.split(jax.random.PRNGKey(42), n)
  return [(jax.random.normal(k, (batch, image_size, image_size, 3), dtype),
           jax.random.randint(k, (batch,), 0, num_classes)) for k in keys]


def bench_ours(config, batch: int, mesh_shape: tuple[int, int], image_size: int,
               num_classes: int,
               nonfinite_guard: bool = True) -> tuple[measure.StepTimer, float]:
  """train.jit_train_step of config (model and optimizer) on a (data, model) mesh, with a
  constant lr, with or without its non-finite guard; (timer, model FLOPs per step)."""
  data, model_axis = mesh_shape
  needed = data * model_axis
  if jax.device_count() < needed:
    raise UserError(f'mesh {data}x{model_axis} needs {needed} devices, {jax.device_count()} '
                    'present (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)')
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': data, 'model': model_axis}),
                              jax.devices()[:needed])
  config_validation.check_batch('--batch_sizes', batch, data)
  model = model_lib.from_config(config.model)  # the net config.model.arch names
  opt_config = ml_collections.ConfigDict(config.optimizer.to_dict())
  opt_config.schedule = 'constant'
  tx = optim.create_optimizer(opt_config, 1000, 1000, batch)
  with jax.set_mesh(mesh):
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0), image_size, mesh)
    batches = [(sharding.global_batch({'image': x, 'label': y}, mesh),) for x, y in
               _synthetic_batches(batch, image_size, num_classes, jnp.float32)]
    step = train.jit_train_step(state, mesh, nonfinite_guard=nonfinite_guard)
    timer = measure.StepTimer(step, (state,), batches)
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


def run_step_benchmark(config, *, batch_sizes: list[int], dtypes: list[str],
                       lrn_values: list[bool], meshes: list[tuple[int, int]],
                       lrn_impls: list[str], conv_impls: list[str], pool_impls: list[str],
                       yardsticks: list[str], image_size: int, num_classes: int,
                       warmup: int, steps: int, windows: int, peak_tflops: float = 0.0,
                       nonfinite_guards: tuple[bool, ...] = (True,),
                       emit=print) -> list[dict]:
  """One record per (setting, implementation), yardsticks first, each with its ratios;
  nonfinite_guards: our step with and/or without the guard that keeps a non-finite update out
  of the state (train.train_step), timed interleaved: what the guard costs."""
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
              for pool_impl, guard in itertools.product(pool_impls, nonfinite_guards):
                ours = ml_collections.ConfigDict(config.to_dict())
                ours.model.update(num_classes=num_classes, dtype=dtype,
                                  norm='lrn' if lrn else 'none', lrn_impl=lrn_impl,
                                  conv_impl=conv_impl, pool_impl=pool_impl)
                timer, model_flops = bench_ours(ours, batch, mesh, image_size, num_classes,
                                                nonfinite_guard=guard)
                timers.append(timer)
                flops.append(model_flops)
                settings.append(dict(impl='ours', **setting, mesh=f'{mesh[0]}x{mesh[1]}',
                                     devices=mesh[0] * mesh[1], lrn_impl=lrn_impl,
                                     conv_impl=conv_impl, pool_impl=pool_impl,
                                     nonfinite_guard=guard))
        for name in yardsticks:
          timers.append(bench_yardstick(name, batch, dtype, lrn, image_size, num_classes))
          flops.append(flops[0])
          settings.append(dict(impl=f'yardstick:{os.path.basename(name)}', **setting,
                               mesh='1x1', devices=1, lrn_impl='reduce_window',
                               conv_impl='feature_group', pool_impl='xla',
                               nonfinite_guard=False))
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
  header = ('| impl | batch | dtype | LRN | mesh | LRN impl | conv impl | pool impl | guard | '
            'img/s | step ms | compile s | MFU | device MB | host RSS MB |' +
            ''.join(f' ours / {n} |' for n in names))
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  for r in records:
    ratios = ''.join(f' {r["ratio_vs"][n]:.2f}x |' if 'ratio_vs' in r else ' |' for n in names)
    print(f'| {r["impl"]} | {r["batch"]} | {r["dtype"]} | {"on" if r["lrn"] else "off"} | '
          f'{r["mesh"]} | {r["lrn_impl"] if r["lrn"] else "-"} | '
          f'{r["conv_impl"]} | {r["pool_impl"]} | {"on" if r["nonfinite_guard"] else "off"} | '
          f'{r["img_s"]:.1f} | {r["step_ms"]:.0f} | '
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
