"""Timing and accounting shared by the benchmarks (no flags: each command owns its own).

StepTimer compiles a step and times windows of it; time_interleaved steps several timers in
turn, so that a burst of load on a shared machine hits every candidate alike and the ratios
stay fair. device_peak, model_flops_per_image and the memory readers give MFU and memory.
"""
import functools
import json
import os
import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from alexnet_jax import compiler_options
from alexnet_jax.benchmarks import worker
from alexnet_jax.model import cuda_convnet

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


def device_peak(device, dtype: str, peak_tflops: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the figure comes from); peak_tflops > 0 is the user's.

  On CPU the peak is what a float32 matmul measures on this machine (matmul_peak_flops): the
  nominal cores x clock x FLOP/cycle, from /proc/cpuinfo's clock, is printed beside it but is
  no bound (on the 2-core EPYC VM a 2048^2 matmul measured above it: docs/performance.md).
  Accelerators: the data sheet's dense peak.
  """
  if peak_tflops > 0:
    return peak_tflops * 1e12, '--peak_tflops'
  if device.platform == 'cpu':
    cores = len(os.sched_getaffinity(0))
    ghz = _cpu_ghz()
    # x86 with AVX2/AVX-512: 2 FMA pipes x 256 bits = 16 float32 FMAs = 32 FLOP per cycle per
    # core (Zen 4 runs AVX-512 at that width). bf16 is counted at the same rate: XLA:CPU
    # converts bf16 convolutions to float32.
    nominal = cores * ghz * 1e9 * 32
    measured = matmul_peak_flops()
    return measured, (f'a {_MATMUL_N}^2 float32 matmul measured here (nominal {cores} cores x '
                      f'{ghz:.2f} GHz x 32 FLOP/cycle = {nominal / 1e9:.0f} GFLOP/s)')
  for kind, peaks in _ACCELERATOR_PEAKS:
    if kind.lower() in device.device_kind.lower():
      return peaks[dtype] * 1e12, f'{kind} {dtype} dense peak, data sheet'
  return float('nan'), f'unknown peak for {device.device_kind!r} (use --peak_tflops)'


_MATMUL_N = 2048


@functools.cache
def matmul_peak_flops(n: int = _MATMUL_N, repeats: int = 5) -> float:
  """FLOP/s of the fastest of `repeats` n x n float32 matmuls on the default device, compiled
  both with XLA's defaults and with our steps' compiler options (the better counts)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  best = float('inf')
  for options in ({}, compiler_options.for_platform(jax.default_backend())):
    matmul = jax.jit(jnp.matmul).lower(a, a).compile(compiler_options=options)
    jax.block_until_ready(matmul(a, a))
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(matmul(a, a))
      best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def _cpu_ghz() -> float:
  try:
    with open('/proc/cpuinfo') as f:
      mhz = [float(m) for m in re.findall(r'cpu MHz\s*:\s*([\d.]+)', f.read())]
    return max(mhz) / 1e3 if mhz else float('nan')
  except OSError:
    return float('nan')


host_rss_mb = worker.host_rss_mb  # without JAX, so that a torch worker reads it too


def _stat_fields(pid: int) -> list[str] | None:
  """/proc/<pid>/stat after the command name (which may hold spaces): field 3 on, or None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      text = f.read()
  except OSError:  # gone, or not Linux
    return None
  return text[text.rindex(')') + 2:].split()


def process_tree_cpu_s(pid: int | None = None) -> float:
  """User + system CPU seconds so far of a process (all its threads) and of its live
  descendants (Grain's worker processes), read from /proc: what the input pipeline costs the
  host, whichever process or thread did the work. NaN where /proc is not there."""
  root = os.getpid() if pid is None else pid
  parents = {}
  for entry in os.listdir('/proc') if os.path.isdir('/proc') else ():
    if entry.isdigit():
      fields = _stat_fields(int(entry))
      if fields:
        parents[int(entry)] = (int(fields[1]), fields)
  if root not in parents:
    return float('nan')
  tree, frontier = {root}, [root]
  while frontier:
    parent = frontier.pop()
    children = [p for p, (ppid, _) in parents.items() if ppid == parent and p not in tree]
    tree.update(children)
    frontier.extend(children)
  ticks = os.sysconf('SC_CLK_TCK')
  # fields[11], fields[12]: utime, stime (stat fields 14 and 15), in clock ticks
  return sum(int(parents[p][1][11]) + int(parents[p][1][12]) for p in tree) / ticks


def device_memory_mb(compiled) -> tuple[float, str]:
  """Peak device memory: the allocator's figure where there is one (GPU, TPU), else XLA's
  compile-time estimate of the step (arguments + outputs + temporaries - aliased)."""
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
  (the backward computes input and weight gradients: twice the forward). model: the AlexNet,
  or cuda-convnet's CIFAR-10 net (its locally connected layers count as layers)."""
  if isinstance(model, cuda_convnet.CudaConvnetCifar10):
    return 3 * 2 * cuda_convnet.macs_per_image(image_size, model.num_classes)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables, (_, state) = jax.eval_shape(
      lambda x: (model.init(jax.random.PRNGKey(0), x, train=False),
                 model.apply(model.init(jax.random.PRNGKey(0), x, train=False), x,
                             train=False, mutable=['intermediates'])), images)
  params = variables['params']
  inter = state['intermediates']
  macs = 0
  for name in (n for n in PAPER_CONV_LAYERS if n in params):  # the depth ablation drops some
    g, k, _, cin, _ = params[name]['kernel'].shape
    out = inter[f'{name}_out'][0].shape  # G x B x H x W x C/G
    macs += out[0] * out[2] * out[3] * out[4] * k * k * cin
  for name in ('fc6', 'fc7', 'fc8'):
    fan_in, fan_out = params[name]['kernel'].shape
    macs += fan_in * fan_out
  return 3 * 2 * macs


class StepTimer:
  """Compiles step(*carry, *batch) -> (*carry, loss or metrics) and times windows of it; carry
  is donated. A metrics dict's 'loss' is the loss reported.

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
            'compile_s': self.compile_s, 'final_loss': loss_value(self.loss),
            'compiled': self.compiled}


def time_interleaved(timers: list, *, warmup: int, steps: int,
                     windows: int) -> list[dict[str, Any]]:
  for timer in timers:
    timer.run(1 + warmup)  # the first call also loads the executable
  for _ in range(windows):
    for timer in timers:
      timer.window(steps)
  return [timer.result() for timer in timers]


def loss_value(out) -> float:
  """The loss a step returned: a scalar, or a metrics dict's 'loss'."""
  return float(out['loss'] if isinstance(out, dict) else out)


def emit_json_line(record: dict, json_out: str = '') -> None:
  """One measurement as a JSON line on stdout, and appended to json_out if given ."""
  line = json.dumps(record)
  print(line, flush=True)
  if json_out:
    with open(json_out, 'a') as f:
      f.write(line + '\n')
