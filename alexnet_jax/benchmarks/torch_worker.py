"""The PyTorch yardstick's training step in a process of its own, for the isolated benchmark.

  python -m alexnet_jax.benchmarks.torch_worker    # started by isolated.py, not by hand

It serves worker.py's protocol for one spec, 'torch_eager' or 'torch_compile'
(yardsticks/pytorch.py's TorchStepTimer, PyTorch at its defaults: its own thread count, its
own allocator). Neither this module nor the yardstick imports JAX, so nothing of JAX's (its
thread pool, its allocations) is in this process; the worker reports which frameworks it holds.
"""
import os

from alexnet_jax.benchmarks import worker
from alexnet_jax.benchmarks.yardsticks import pytorch
from alexnet_jax.errors import UserError

SPECS = ('torch_eager', 'torch_compile')


class Handlers(worker.Handlers):
  """The requests of worker.py's protocol for one PyTorch step."""

  def setup(self, request: dict) -> dict:
    spec = request['spec']
    if spec['impl'] not in SPECS:
      raise UserError(f'{spec["impl"]!r} is not a PyTorch implementation; choose from '
                      f'{", ".join(SPECS)}')
    if not pytorch.available():
      raise UserError(f'{spec["impl"]} needs PyTorch: pip install -r requirements-torch.txt')
    self.timer = pytorch.TorchStepTimer(
        spec['batch'], spec['dtype'], spec['lrn'], compile=spec['impl'] == 'torch_compile',
        image_size=spec['image_size'], num_classes=spec['num_classes'])
    self.timer.run(spec['warmup'])
    model_flops = pytorch.model_flops_per_image(spec['image_size'],
                                                spec['num_classes']) * spec['batch']
    return {'pid': os.getpid(), **pytorch.runtime_info(), 'compile_s': self.timer.compile_s,
            'model_flops': model_flops, 'platform': self.timer.device.type,
            'cores': len(os.sched_getaffinity(0)), 'frameworks': worker.frameworks_loaded(),
            'os_threads': worker.os_threads()}

  def window(self, request: dict) -> dict:
    return worker.measured(lambda: self.timer.run(request['steps']))

  def finish(self, request: dict) -> dict:
    del request
    rss, rss_peak = worker.host_rss_mb()
    return {'final_loss': float(self.timer.loss), 'host_rss_mb': rss,
            'host_rss_peak_mb': rss_peak}


if __name__ == '__main__':
  worker.serve(Handlers())
