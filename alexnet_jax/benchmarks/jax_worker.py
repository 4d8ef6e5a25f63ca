"""A JAX implementation's training step in a process of its own, for the isolated benchmark.

  python -m alexnet_jax.benchmarks.jax_worker    # started by isolated.py, not by hand

It serves worker.py's protocol for one spec (isolated.py builds them):
  - 'ours': train.jit_train_step of the config's model and the paper's SGD update, with or
    without its non-finite guard, on a (data, model) mesh (step_timing.bench_ours);
  - 'plain_jax', or the path of a file defining a flax AlexNet: the yardstick's step;
  - 'ours_beside_torch_eager': ours and the PyTorch eager step in this one process, each window
    a torch window, the pause, then ours, as the benchmark timed them before it isolated them
    (but for the pause): it measures what a second framework in the process does to our step
    (and ours to torch's), apart from torch's threads spinning on into ours;
  - 'matmul_peak': no step; its 'peak' request measures measure.device_peak.
torch is imported here by the 'ours_beside_torch_eager' spec alone.
"""
import os
import time

import jax
import jaxlib
import ml_collections

from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks import step_timing
from alexnet_jax.benchmarks import worker
from alexnet_jax.benchmarks.yardsticks import pytorch
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet

SPECS = ('ours', 'plain_jax', 'ours_beside_torch_eager', 'matmul_peak')


def _ours(spec: dict):
  config = ml_collections.ConfigDict(spec['config'])
  config.model.update(num_classes=spec['num_classes'], dtype=spec['dtype'],
                      norm='lrn' if spec['lrn'] else 'none', lrn_impl=spec['lrn_impl'],
                      conv_impl=spec['conv_impl'], pool_impl=spec['pool_impl'])
  return step_timing.bench_ours(config, spec['batch'], tuple(spec['mesh']), spec['image_size'],
                                spec['num_classes'], nonfinite_guard=spec['nonfinite_guard'])


class Handlers(worker.Handlers):
  """The requests of worker.py's protocol for one JAX step (or none, for the peak)."""

  def __init__(self):
    super().__init__()
    self.beside = None
    self.spec: dict = {}

  def setup(self, request: dict) -> dict:
    spec = self.spec = request['spec']
    impl = spec['impl']
    device = jax.devices()[0]
    info = {'pid': os.getpid(), 'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
            'platform': device.platform, 'device_kind': device.device_kind,
            'cores': len(os.sched_getaffinity(0)), 'xla_flags': os.environ.get('XLA_FLAGS', '')}
    if impl == 'matmul_peak':
      return {**info, 'frameworks': worker.frameworks_loaded(), 'os_threads': worker.os_threads()}
    setting = (spec['batch'], spec['dtype'], spec['lrn'], spec['image_size'],
               spec['num_classes'])
    # The net timed: ours is the one config.model.arch names, every yardstick the AlexNet.
    info['arch'] = (spec['config']['model'].get('arch', 'alexnet') if 'config' in spec
                    else 'alexnet')
    if impl in ('ours', 'ours_beside_torch_eager'):
      self.timer, model_flops = _ours(spec)
    elif impl in ('torch_eager', 'torch_compile'):
      raise UserError(f'{impl!r} is not a JAX implementation (torch_worker runs it)')
    else:  # plain_jax or a flax file; the paper's net's FLOPs
      self.timer = step_timing.bench_yardstick(impl, *setting)
      model_flops = measure.model_flops_per_image(
          alexnet.AlexNet(num_classes=spec['num_classes']), spec['image_size']) * spec['batch']
    if impl == 'ours_beside_torch_eager':
      self.beside = pytorch.TorchStepTimer(*setting[:3], compile=False, image_size=setting[3],
                                           num_classes=setting[4])
      self.beside.run(spec['warmup'])
      info.update(pytorch.runtime_info())
    self.timer.run(1 + spec['warmup'])  # the first call also loads the executable
    return {**info, 'compile_s': self.timer.compile_s, 'model_flops': model_flops,
            'frameworks': worker.frameworks_loaded(), 'os_threads': worker.os_threads()}

  def window(self, request: dict) -> dict:
    steps = request['steps']
    beside_s = None
    if self.beside:
      beside_s = self.beside.run(steps)
      # The same pause as between workers: torch's spinning threads are not what is measured.
      time.sleep(request.get('pause_s', 0.0))
    reply = worker.measured(lambda: self.timer.run(steps))
    if beside_s is not None:
      reply['beside_step_s'] = beside_s
    return reply

  def peak(self, request: dict) -> dict:
    measure.matmul_peak_flops.cache_clear()  # measured anew each time it is asked
    peak, source = measure.device_peak(jax.devices()[0], request['dtype'],
                                       request['peak_tflops'])
    return {'peak_flops': peak, 'peak_source': source}

  def finish(self, request: dict) -> dict:
    del request
    compiled = self.timer.compiled
    memory, memory_source = measure.device_memory_mb(compiled)
    rss, rss_peak = measure.host_rss_mb()
    return {'final_loss': measure.loss_value(self.timer.loss), 'xla_gflop_per_step':
            measure.xla_flops(compiled) / 1e9, 'device_memory_mb': memory,
            'device_memory_source': memory_source, 'host_rss_mb': rss,
            'host_rss_peak_mb': rss_peak}


if __name__ == '__main__':
  worker.serve(Handlers())
