"""The small-net benchmark's measurements, without flags (tools/small_net_benchmark.py is the
command): the Figure 1 protocol's work timed as the protocol does it, and the records and table
that compare it with the same net in PyTorch (yardsticks/small_pytorch.py).

A window is `segments` segments of the protocol: eval_every SGD steps on batches of a set held
in memory (figure1.train.Loop.steps), then the full-pass training error over the whole set
(Loop.training_error). The steps and the full pass are timed apart: step ms and img/s are the
SGD step's, and the protocol's img/s counts both (the training images per second a Figure 1
run gets).

The images are synthetic: standardised normal pixels (the 'modern' regime's input) and balanced
labels, so that the command needs no data; speed does not depend on the pixels' values.
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.benchmarks import measure
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import train

KERNEL = 5  # the net's 5x5 convolutions (net.py)
LEARNING_RATE = 0.003  # the modern regime's ReLU lr (docs/experiments.md): no divergence
MOMENTUM = 0.9


def synthetic_set(num_images: int, image_size: int, num_classes: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(N x S x S x 3 float32 standard normal pixels, N int32 labels, each class as often)."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_images, image_size, image_size, 3), np.float32)
  y = rng.permutation(np.arange(num_images) % num_classes).astype(np.int32)
  return x, y


def forward_flops_per_image(image_size: int, num_classes: int) -> float:
  """2 x the multiply-adds of the net's layers for one image: each 'SAME' 5x5 conv at its input
  size (S, then S/2, S/4 after each 3/2 pool, rounded up) and the dense layer."""
  macs, size, channels = 0, image_size, 3
  for features in net.CONV_FEATURES:
    macs += size * size * features * KERNEL * KERNEL * channels
    size, channels = -(-size // 2), features
  return 2.0 * (macs + size * size * channels * num_classes)


def train_flops_per_image(image_size: int, num_classes: int) -> float:
  """The SGD step's: the forward, and the backward's input and weight gradients (twice it)."""
  return 3 * forward_flops_per_image(image_size, num_classes)


class OursTimer:
  """figure1.train.Loop on a synthetic set, from the modern regime's init, timed by window."""

  def __init__(self, activation: str = 'relu', batch_size: int = 100, image_size: int = 32,
               num_images: int = 1000, num_classes: int = 10, eval_every: int = 10,
               segments: int = 1, warmup: int = 1, seed: int = 0):
    x, y = synthetic_set(num_images, image_size, num_classes, seed)
    self.loop = train.Loop(x, y, activation)
    self.params = net.init_params(seed, 'modern', activation, image_size, num_classes)
    self.velocity = jax.tree.map(jnp.zeros_like, self.params)
    per_epoch = num_images // batch_size
    self.order = data.batch_order(seed, num_images, batch_size, 10 * per_epoch * eval_every)
    self.eval_every, self.segments, self._next = eval_every, segments, 0
    self.loss = self.error = float('nan')
    t0 = time.perf_counter()
    self.run(max(warmup, 1))  # the first segment compiles the step and the full pass
    self.compile_s = time.perf_counter() - t0

  def _indices(self) -> np.ndarray:
    if self._next + self.eval_every > len(self.order):
      self._next = 0
    rows = self.order[self._next:self._next + self.eval_every]
    self._next += self.eval_every
    return rows

  def run(self, segments: int) -> tuple[float, float]:
    """(seconds in SGD steps, seconds in full passes) over `segments` segments."""
    steps_s = pass_s = 0.0
    for _ in range(segments):
      indices = self._indices()
      t0 = time.perf_counter()
      self.params, self.velocity, losses = self.loop.steps(self.params, self.velocity, indices,
                                                           LEARNING_RATE, MOMENTUM)
      jax.block_until_ready((self.params, self.velocity, losses))
      t1 = time.perf_counter()
      self.error, self.loss = self.loop.training_error(self.params)
      pass_s += time.perf_counter() - t1
      steps_s += t1 - t0
    return steps_s, pass_s

  def window(self) -> dict:
    steps_s, pass_s = self.run(self.segments)
    return {'steps_s': steps_s, 'pass_s': pass_s, 'loss': float(self.loss),
            'error': float(self.error)}

  def info(self, peak_tflops: float = 0.0) -> dict:
    """What the worker reports: the framework, the compile time, and the device's peak
    (measured unless peak_tflops > 0: measure.device_peak)."""
    peak, source = measure.device_peak(jax.devices()[0], 'float32', peak_tflops)
    return {'framework': f'jax {jax.__version__}', 'compile_s': self.compile_s,
            'peak_flops': peak, 'peak_source': source}


def record(name: str, info: dict, windows: list[dict], *, batch_size: int, eval_every: int,
           segments: int, num_images: int, image_size: int, num_classes: int,
           peak_flops: float) -> dict:
  """One implementation's medians over its windows: step ms, img/s and MFU of the SGD step,
  full-pass ms, and the protocol's img/s and MFU (steps and full passes together)."""
  steps = eval_every * segments
  step_s = statistics.median(w['steps_s'] / steps for w in windows)
  pass_s = statistics.median(w['pass_s'] / segments for w in windows)
  protocol_s = statistics.median((w['steps_s'] + w['pass_s']) / steps for w in windows)
  train_flops = train_flops_per_image(image_size, num_classes) * batch_size
  pass_flops = forward_flops_per_image(image_size, num_classes) * num_images
  return {'impl': name, 'framework': info.get('framework'), 'threads': info.get('threads'),
          'step_ms': 1e3 * step_s, 'img_s': batch_size / step_s,
          'mfu': train_flops / step_s / peak_flops, 'full_pass_ms': 1e3 * pass_s,
          'protocol_img_s': batch_size / protocol_s,
          'protocol_mfu': (train_flops + pass_flops / eval_every) / protocol_s / peak_flops,
          'window_step_ms': [1e3 * w['steps_s'] / steps for w in windows],
          'window_pass_ms': [1e3 * w['pass_s'] / segments for w in windows],
          'final_loss': windows[-1]['loss'], 'compile_s': info.get('compile_s'),
          'batch_size': batch_size, 'image_size': image_size, 'eval_every': eval_every,
          'num_images': num_images, 'peak_gflops': peak_flops / 1e9}


def add_ratios(records: list[dict], against: str) -> None:
  """Each record's other / ours (above 1: `against` is faster): the step time's and the
  protocol's."""
  base = next((r for r in records if r['impl'] == against), None)
  for r in records:
    r['ratio_step'] = r['step_ms'] / base['step_ms'] if base else float('nan')
    r['ratio_protocol'] = base['protocol_img_s'] / r['protocol_img_s'] if base else float('nan')


def table(records: list[dict], against: str) -> list[str]:
  r0 = records[0]
  lines = [f'{time.strftime("%Y-%m-%d")} | batch {r0["batch_size"]}, {r0["image_size"]} px, '
           f'full pass over {r0["num_images"]} images every {r0["eval_every"]} steps | MFU over '
           f'a matmul peak of {r0["peak_gflops"]:.0f} GFLOP/s measured in this run', '',
           f'| impl | framework | step ms | img/s | MFU | full pass ms | protocol img/s | '
           f'protocol MFU | it / {against} (step) | it / {against} (protocol) |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in records:
    framework = r['framework'] + (f', {r["threads"]} threads' if r.get('threads') else '')
    lines.append(f'| {r["impl"]} | {framework} | {r["step_ms"]:.1f} | {r["img_s"]:.0f} | '
                 f'{100 * r["mfu"]:.1f} % | {r["full_pass_ms"]:.0f} | '
                 f'{r["protocol_img_s"]:.0f} | {100 * r["protocol_mfu"]:.1f} % | '
                 f'{r["ratio_step"]:.2f} | {r["ratio_protocol"]:.2f} |')
  return lines
