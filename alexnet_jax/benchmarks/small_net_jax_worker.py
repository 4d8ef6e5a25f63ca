"""Our Figure 1 loop in a process of its own, for the small-net benchmark (small_net.py).

  python -m alexnet_jax.benchmarks.small_net_jax_worker   # started by small_net.py, not by hand

It serves worker.py's protocol: 'setup' builds OursTimer (figure1.train.Loop on a synthetic
set, from the modern regime's init) and runs the warm-up, which compiles; 'window' times the
window's segments; 'peak' measures the matmul peak (measure.device_peak). The spec
'matmul_peak' builds nothing and only answers 'peak'. torch is never imported here.

StepsTimer times the SGD steps alone, in this process: tools/device_check.py's Figure 1 row.
"""
import os
import statistics
import time

import jax
import jax.numpy as jnp
import jaxlib

from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks import small_net
from alexnet_jax.benchmarks import worker
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import train

LEARNING_RATE = 0.003  # the modern regime's ReLU lr (docs/experiments.md): no divergence
MOMENTUM = 0.9


def _start(net_impl, activation, batch_size, image_size, num_images, num_classes, seed, *,
           epochs_of_steps: int):
  """A timer's starting point: the Loop on a synthetic set, the modern regime's init, zero
  velocity, and the batch order for epochs_of_steps epochs' worth of steps."""
  x, y = small_net.synthetic_set(num_images, image_size, num_classes, seed)
  loop = train.Loop(x, y, activation, **_impl_kwargs(net_impl))
  params = net.init_params(seed, 'modern', activation, image_size, num_classes)
  per_epoch = num_images // batch_size
  order = data.batch_order(seed, num_images, batch_size, epochs_of_steps * per_epoch)
  return loop, params, jax.tree.map(jnp.zeros_like, params), order


class OursTimer:
  """figure1.train.Loop on a synthetic set, from the modern regime's init, timed by window."""

  def __init__(self, activation: str = 'relu', batch_size: int = 100, image_size: int = 32,
               num_images: int = 1000, num_classes: int = 10, eval_every: int = 10,
               segments: int = 1, warmup: int = 1, seed: int = 0, net_impl: str = 'auto'):
    """net_impl: the net's layers (figure1.net.CHOICES); passed on only when not 'auto', so
    that a revision from before the switch (the `before` worker) still runs."""
    self.loop, self.params, self.velocity, self.order = _start(
        net_impl, activation, batch_size, image_size, num_images, num_classes, seed,
        epochs_of_steps=10 * eval_every)
    self.eval_every, self.segments, self._next = eval_every, segments, 0
    self.loss = self.error = float('nan')
    t0 = time.perf_counter()
    self.run(max(warmup, 1))  # the first segment compiles the steps and the full pass
    self.compile_s = time.perf_counter() - t0

  def run(self, segments: int) -> tuple[float, float]:
    """(seconds in SGD steps, seconds in full passes) over `segments` segments."""
    steps_s = pass_s = 0.0
    for _ in range(segments):
      if self._next + self.eval_every > len(self.order):
        self._next = 0
      indices = self.order[self._next:self._next + self.eval_every]
      self._next += self.eval_every
      t0 = time.perf_counter()
      self.params, self.velocity, losses = self.loop.steps(self.params, self.velocity, indices,
                                                           LEARNING_RATE, MOMENTUM)
      jax.block_until_ready((self.params, self.velocity, losses))
      t1 = time.perf_counter()
      self.error, self.loss = self.loop.training_error(self.params)
      pass_s += time.perf_counter() - t1
      steps_s += t1 - t0
    return steps_s, pass_s


def _impl_kwargs(net_impl: str) -> dict:
  return {} if net_impl == 'auto' else {'impl': net_impl}


def layers_of(net_impl: str) -> str:
  """The layers net_impl runs here ('fast', 'xla'); a revision without the switch: 'as written'."""
  resolve = getattr(net, 'resolve_impl', None)
  return resolve(net_impl) if resolve else 'as written'


class StepsTimer:
  """The Figure 1 net's SGD steps alone (figure1.train.Loop.steps: `scan` steps per call, one
  lax.scan, as the protocol runs them), from the modern regime's init on a synthetic set of
  10 batches; measure.time_interleaved's timer: run(calls) returns seconds per SGD step."""

  def __init__(self, net_impl: str = 'auto', activation: str = 'relu', batch_size: int = 100,
               image_size: int = 32, num_classes: int = 10, scan: int = 25, seed: int = 0):
    num_images = max(10 * batch_size, num_classes)
    self.loop, self.params, self.velocity, self.order = _start(
        net_impl, activation, batch_size, image_size, num_images, num_classes, seed,
        epochs_of_steps=4 * scan)
    self.scan, self._next, self.times = scan, 0, []
    self.loss = float('nan')
    t0 = time.perf_counter()
    self._call()  # compiles
    self.compile_s = time.perf_counter() - t0

  def _call(self):
    if self._next + self.scan > len(self.order):
      self._next = 0
    indices = self.order[self._next:self._next + self.scan]
    self._next += self.scan
    self.params, self.velocity, losses = self.loop.steps(self.params, self.velocity, indices,
                                                         LEARNING_RATE, MOMENTUM)
    jax.block_until_ready((self.params, self.velocity, losses))
    self.loss = float(losses[-1])

  def run(self, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
      self._call()
    return (time.perf_counter() - t0) / (max(calls, 1) * self.scan)

  def window(self, calls: int) -> None:
    self.times.append(self.run(calls))

  def result(self) -> dict:
    return {'step_s': statistics.median(self.times), 'window_s': self.times,
            'compile_s': self.compile_s, 'final_loss': self.loss}


class Handlers(worker.Handlers):
  """The requests of worker.py's protocol for our loop (or none, for the peak)."""

  def setup(self, request: dict) -> dict:
    spec = dict(request['spec'])
    info = {'pid': os.getpid(), 'framework': f'jax {jax.__version__}',
            'figure1': os.path.dirname(train.__file__),
            'jaxlib': jaxlib.__version__, 'platform': jax.devices()[0].platform,
            'cores': len(os.sched_getaffinity(0))}
    if spec.pop('impl') != 'matmul_peak':
      self.timer = OursTimer(**spec)
      info['compile_s'] = self.timer.compile_s
      info['net_impl'] = layers_of(spec.get('net_impl', 'auto'))
    return {**info, 'frameworks': worker.frameworks_loaded(), 'os_threads': worker.os_threads()}

  def window(self, request: dict) -> dict:
    del request
    steps_s, pass_s = self.timer.run(self.timer.segments)
    return {'steps_s': steps_s, 'pass_s': pass_s, 'loss': float(self.timer.loss),
            'training_error': float(self.timer.error)}

  def peak(self, request: dict) -> dict:
    peak, source = measure.device_peak(jax.devices()[0], 'float32', request['peak_tflops'])
    return {'peak_flops': peak, 'peak_source': source}


if __name__ == '__main__':
  worker.serve(Handlers())
