"""The Figure 1 net in PyTorch in a process of its own, for the small-net benchmark
(small_net.py).

  python -m alexnet_jax.benchmarks.small_net_torch_worker   # started by small_net.py

It serves worker.py's protocol for 'torch_eager' or 'torch_compile':
yardsticks/small_pytorch.py's TorchSmallNetTimer on the same synthetic set as ours, PyTorch at
its defaults (its threads, its allocator, its init). Neither this module nor the yardstick
imports JAX.
"""
import os

from alexnet_jax.benchmarks import small_net
from alexnet_jax.benchmarks import worker
from alexnet_jax.benchmarks.yardsticks import small_pytorch
from alexnet_jax.errors import UserError

SPECS = ('torch_eager', 'torch_compile')
_SET = ('num_images', 'image_size', 'num_classes')


class Handlers(worker.Handlers):
  """The requests of worker.py's protocol for the PyTorch loop."""

  def setup(self, request: dict) -> dict:
    spec = dict(request['spec'])
    impl = spec.pop('impl')
    if impl not in SPECS:
      raise UserError(f'{impl!r} is not a PyTorch implementation; choose from '
                      f'{", ".join(SPECS)}')
    if not small_pytorch.available():
      raise UserError(f'{impl} needs PyTorch: pip install -r requirements-torch.txt')
    x, y = small_net.synthetic_set(*(spec.pop(k) for k in _SET))
    self.timer = small_pytorch.TorchSmallNetTimer(x, y, compile=impl == 'torch_compile', **spec)
    return {'pid': os.getpid(), **self.timer.info(), 'frameworks': worker.frameworks_loaded(),
            'os_threads': worker.os_threads()}

  def window(self, request: dict) -> dict:
    del request
    return self.timer.window()


if __name__ == '__main__':
  worker.serve(Handlers())
