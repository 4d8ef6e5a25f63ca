r"""PyTorch yardstick for the Figure 1 net (alexnet_jax/figure1/net.py), written plainly.

nn.Conv2d(5, padding=2) three times (32, 32, 64 features), each followed by the activation and
nn.MaxPool2d(3, 2, ceil_mode=True), then nn.Linear to the classes; cross-entropy and
torch.optim.SGD(lr, momentum), whose v <- mu v + g; w <- w - lr v is figure1.train's
v <- mu v - lr g; w <- w + v at a constant lr (section 5 without the weight decay). On even
sizes ceil_mode's last window, one element past the edge, is the 'SAME' pooling's (-inf padding,
0 before, 1 after: net.max_pool). PyTorch's defaults otherwise: its init, NCHW, its threads.
tests/benchmarks/test_small_net.py checks that, from the same weights, its logits and one SGD
step equal ours.

torch is optional (requirements-torch.txt) and imported only when a model is built; this module
imports neither torch nor JAX. The benchmark times it:

  python -m alexnet_jax.tools.small_net_benchmark --impls=ours,torch_eager

(in a process of its own: alexnet_jax/benchmarks/small_net_torch_worker.py).
"""
import importlib
import time

import numpy as np

CONV_FEATURES = (32, 32, 64)  # figure1.net.CONV_FEATURES
KERNEL = 5


def available() -> bool:
  """Whether torch imports (a found but broken install counts as absent)."""
  try:
    importlib.import_module('torch')
  except ImportError:
    return False
  return True


def build_model(activation: str = 'relu', num_classes: int = 10, image_size: int = 32,
                seed: int = 0):
  """nn.Sequential of the net on NCHW images, PyTorch's default init from `seed`."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  activations = {'relu': nn.ReLU, 'tanh': nn.Tanh}
  if activation not in activations:
    raise ValueError(f'activation {activation!r}; choose: {", ".join(activations)}')
  torch.manual_seed(seed)
  layers, channels, size = [], 3, image_size
  for features in CONV_FEATURES:
    layers += [nn.Conv2d(channels, features, KERNEL, padding=KERNEL // 2),
               activations[activation](), nn.MaxPool2d(3, 2, ceil_mode=True)]
    channels, size = features, -(-size // 2)
  layers += [nn.Flatten(), nn.Linear(channels * size * size, num_classes)]
  return nn.Sequential(*layers)


def load_params(model, params: dict) -> None:
  """Copies figure1.net's params (numpy or JAX arrays) into build_model's layers: HWIO kernels
  to OIHW, and the dense rows from (H, W, C) order, flax's flatten of NHWC, to nn.Flatten's
  (C, H, W)."""
  import torch  # pylint: disable=g-import-not-at-top

  convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
  dense = [m for m in model if isinstance(m, torch.nn.Linear)][0]
  with torch.no_grad():
    for i, conv in enumerate(convs):
      p = params[f'conv{i + 1}']
      conv.weight.copy_(torch.from_numpy(np.asarray(p['kernel']).transpose(3, 2, 0, 1).copy()))
      conv.bias.copy_(torch.from_numpy(np.array(p['bias'])))
    kernel = np.asarray(params['dense']['kernel'])
    channels = convs[-1].out_channels
    side = int(round((kernel.shape[0] // channels) ** 0.5))
    kernel = kernel.reshape(side, side, channels, -1).transpose(2, 0, 1, 3)
    dense.weight.copy_(torch.from_numpy(kernel.reshape(-1, kernel.shape[-1]).T.copy()))
    dense.bias.copy_(torch.from_numpy(np.array(params['dense']['bias'])))


class TorchSmallNetTimer:
  """The protocol's work in PyTorch, in the interface of small_net_timing.OursTimer: SGD steps
  on batches x[idx] of a set held in memory (a fresh permutation each epoch), the full-pass
  training error (eval mode, no gradients) after every eval_every steps."""

  def __init__(self, x: np.ndarray, y: np.ndarray, activation: str = 'relu',
               batch_size: int = 100, eval_every: int = 10, segments: int = 1,
               warmup: int = 1, lr: float = 0.003, momentum: float = 0.9,
               compile: bool = False, seed: int = 0):  # pylint: disable=redefined-builtin
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top

    self._torch = torch
    num_classes = int(y.max()) + 1
    self.model = build_model(activation, num_classes, x.shape[1], seed)
    self.model.train()
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
    model = self.model

    class Loss(nn.Module):
      """The unit torch.compile sees (its backward included)."""

      def __init__(self):
        super().__init__()
        self.model = model

      def forward(self, images, labels):
        return nn.functional.cross_entropy(self.model(images), labels)

    self._loss_fn = torch.compile(Loss()) if compile else Loss()
    self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    self.y = torch.from_numpy(y.astype(np.int64))
    rng = np.random.default_rng(seed)
    per_epoch = len(x) // batch_size
    self.order = torch.from_numpy(np.concatenate(
        [rng.permutation(len(x))[:per_epoch * batch_size].reshape(per_epoch, batch_size)
         for _ in range(10 * eval_every)]))
    self.eval_every, self.segments, self._next = eval_every, segments, 0
    self.loss = self.error = float('nan')
    t0 = time.perf_counter()
    self.run(max(warmup, 1))
    self.compile_s = time.perf_counter() - t0

  def _step(self, idx):
    loss = self._loss_fn(self.x[idx], self.y[idx])
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return loss.detach()

  def training_error(self) -> tuple[float, float]:
    torch = self._torch
    self.model.eval()
    with torch.no_grad():
      logits = self.model(self.x)
      wrong = int((logits.argmax(-1) != self.y).sum())
      loss = float(torch.nn.functional.cross_entropy(logits, self.y))
    self.model.train()
    return wrong / len(self.y), loss

  def run(self, segments: int) -> tuple[float, float]:
    """(seconds in SGD steps, seconds in full passes) over `segments` segments."""
    steps_s = pass_s = 0.0
    for _ in range(segments):
      if self._next + self.eval_every > len(self.order):
        self._next = 0
      t0 = time.perf_counter()
      losses = [self._step(idx) for idx in self.order[self._next:self._next + self.eval_every]]
      self._torch.stack(losses).sum().item()  # the CPU ran them already; kept for a GPU
      t1 = time.perf_counter()
      self.error, self.loss = self.training_error()
      pass_s += time.perf_counter() - t1
      steps_s += t1 - t0
      self._next += self.eval_every
    return steps_s, pass_s

  def window(self) -> dict:
    steps_s, pass_s = self.run(self.segments)
    return {'steps_s': steps_s, 'pass_s': pass_s, 'loss': self.loss, 'training_error': self.error}

  def info(self) -> dict:
    """torch's version and thread counts, and the first segment's time (compile_s)."""
    torch = self._torch
    return {'framework': f'torch {torch.__version__}, {torch.get_num_threads()} threads',
            'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
            'torch_interop_threads': torch.get_num_interop_threads(),
            'compile_s': self.compile_s}
