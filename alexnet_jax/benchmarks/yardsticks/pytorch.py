r"""PyTorch yardstick: the same 2012 AlexNet and update as plain_jax, written the PyTorch way.

nn.Conv2d with groups=2 for conv2/4/5, nn.LocalResponseNorm (alpha rescaled, below),
nn.MaxPool2d(3, 2), nn.Dropout, and torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4),
which adds 5e-4 w to the gradient before the momentum, as optax.add_decayed_weights does
(Krizhevsky et al. 2012, section 5). tests/benchmarks/test_yardsticks.py checks that, given the same
weights, this network's logits equal plain_jax's.

torch is optional (requirements-torch.txt) and imported only when a model is built, so this
module imports without it; available() says whether it is there. It imports no JAX either (not
even plain_jax): the benchmark's torch worker (torch_worker.py) runs it in a process where JAX
was never loaded. It runs on the GPU when torch sees one, else on the CPU. The benchmark times
it:

  python -m alexnet_jax.tools.benchmark --yardsticks=plain_jax,torch_eager,torch_compile
"""
import importlib
import statistics
import time
from typing import Any

# The same constants as plain_jax (sections 3.3, 4.2 and 5); alpha is the paper's, un-divided.
LRN_SIZE = 5
LRN_BIAS = 2.0
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
DROPOUT_RATE = 0.5
WEIGHT_DECAY = 5e-4
LEARNING_RATE = 0.01
MOMENTUM = 0.9
DTYPES = ('float32', 'bfloat16')
# (out channels, kernel, stride, padding, groups, LRN after, max-pool after), as plain_jax.CONVS.
CONVS = (
    (96, 11, 4, 0, 1, True, True),
    (256, 5, 1, 2, 2, True, True),
    (384, 3, 1, 1, 1, False, False),
    (384, 3, 1, 1, 2, False, False),
    (256, 3, 1, 1, 2, False, True),
)
# Section 5: biases 1 in conv2, conv4, conv5, fc6 and fc7; 0 elsewhere.
UNIT_BIAS_CONVS = (1, 3, 4)
DENSES = (4096, 4096)  # fc6, fc7; then fc8, num_classes wide


def _conv_sides(image_size: int) -> list[tuple[int, int]]:
  """(conv output side, side after its pooling) of each conv layer at image_size px."""
  sides, size = [], image_size
  for _, kernel, stride, padding, _, _, pool_after in CONVS:
    size = (size + 2 * padding - kernel) // stride + 1
    pooled = (size - 3) // 2 + 1 if pool_after else size
    sides.append((size, pooled))
    size = pooled
  if size < 1:
    raise ValueError(f'{image_size} px images are too small for AlexNet')
  return sides


def feature_size(image_size: int = 227) -> int:
  """Width of the flattened conv5 output (6 * 6 * 256 = 9216 at 227 px), as plain_jax's."""
  return _conv_sides(image_size)[-1][1] ** 2 * CONVS[-1][0]


def model_flops_per_image(image_size: int = 227, num_classes: int = 1000) -> float:
  """2 x multiply-adds of every conv and dense layer for one image, x3 for the training step
  (forward, input gradient, weight gradient), from the layer table above: the count
  measure.model_flops_per_image takes from the flax model's shapes, without JAX."""
  macs, in_channels = 0, 3
  for (out, kernel, _, _, groups, _, _), (side, _) in zip(CONVS, _conv_sides(image_size)):
    macs += side * side * out * kernel * kernel * in_channels // groups
    in_channels = out
  widths = (feature_size(image_size),) + DENSES + (num_classes,)
  macs += sum(a * b for a, b in zip(widths[:-1], widths[1:]))
  return 3 * 2 * macs


def runtime_info() -> dict[str, Any]:
  """torch's version, its intra-op and inter-op thread counts and the device it runs on."""
  import torch  # pylint: disable=g-import-not-at-top
  return {'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
          'torch_interop_threads': torch.get_num_interop_threads(),
          'torch_device': 'cuda' if torch.cuda.is_available() else 'cpu'}


def available() -> bool:
  """Whether torch imports (a found but broken install counts as absent)."""
  try:
    importlib.import_module('torch')
  except ImportError:
    return False
  return True


def sees_gpu() -> bool:
  """Whether torch imports and sees a CUDA device."""
  return available() and importlib.import_module('torch').cuda.is_available()


def local_response_norm():
  """nn.LocalResponseNorm with the paper's constants, computed in float32.

  PyTorch (like Caffe) divides alpha by the window size n; the paper does not (section 3.3),
  so alpha is passed as n * 1e-4. The float32 cast mirrors plain_jax: under bf16 autocast
  the sum of squares would otherwise be bf16.
  """
  from torch import nn  # pylint: disable=g-import-not-at-top

  class LocalResponseNorm32(nn.LocalResponseNorm):

    def forward(self, x):
      return super().forward(x.float()).to(x.dtype)

  return LocalResponseNorm32(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA, k=LRN_BIAS)


def build_model(num_classes: int = 1000, lrn: bool = True, image_size: int = 227,
                seed: int = 0):
  """nn.Sequential of the network on NCHW images, initialised as in section 5.

  Weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere. The layers
  are built on the current default device (torch.device('meta') builds no storage).
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  layers, in_channels = [], 3
  convs = []
  for out, kernel, stride, padding, groups, lrn_after, pool_after in CONVS:
    conv = nn.Conv2d(in_channels, out, kernel, stride, padding, groups=groups)
    convs.append(conv)
    layers += [conv, nn.ReLU(inplace=True)]
    if lrn and lrn_after:
      layers.append(local_response_norm())
    if pool_after:
      layers.append(nn.MaxPool2d(3, 2))
    in_channels = out
  fc6 = nn.Linear(feature_size(image_size), DENSES[0])
  fc7 = nn.Linear(*DENSES)
  fc8 = nn.Linear(DENSES[1], num_classes)
  layers += [nn.Flatten(),  # (C, H, W) order: plain_jax's fc6 rows are (H, W, C)
             nn.Dropout(DROPOUT_RATE), fc6, nn.ReLU(inplace=True),
             nn.Dropout(DROPOUT_RATE), fc7, nn.ReLU(inplace=True), fc8]
  model = nn.Sequential(*layers)
  unit_bias = [convs[i] for i in UNIT_BIAS_CONVS] + [fc6, fc7]
  meta = fc8.weight.is_meta
  generator = None if meta else torch.Generator(fc8.weight.device).manual_seed(seed)
  with torch.no_grad():
    for layer in convs + [fc6, fc7, fc8]:
      if not meta:
        layer.weight.normal_(0.0, 0.01, generator=generator)
      layer.bias.fill_(1.0 if any(layer is u for u in unit_bias) else 0.0)
  return model


def param_count(num_classes: int = 1000) -> int:
  """Parameters of the 227 px network, counted on the meta device (nothing allocated)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.device('meta'):
    model = build_model(num_classes)
  return sum(p.numel() for p in model.parameters())


class TorchStepTimer:
  """The PyTorch training step in the benchmark's timing interface (its StepTimer's).

  The first step runs in __init__ and its time is compile_s: torch.compile's compilation
  when compile=True, else the eager warm-up (allocator, oneDNN/cuDNN kernel choice).
  """

  def __init__(self, batch: int, dtype: str = 'float32', lrn: bool = True,
               compile: bool = False,  # pylint: disable=redefined-builtin
               image_size: int = 227, num_classes: int = 1000, seed: int = 0):
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top

    if dtype not in DTYPES:
      raise ValueError(f'dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
    self._torch = torch
    self.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    bf16 = dtype == 'bfloat16'
    model = build_model(num_classes, lrn, image_size, seed).to(self.device)
    model.train()
    self.model = model
    self.optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                                     weight_decay=WEIGHT_DECAY)
    device_type = self.device.type

    class Loss(nn.Module):
      """Model and float32 cross-entropy: the unit torch.compile sees (backward included)."""

      def __init__(self):
        super().__init__()
        self.model = model

      def forward(self, images, labels):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
          logits = self.model(images)
        return nn.functional.cross_entropy(logits.float(), labels)

    loss_fn = Loss()
    self._loss_fn = torch.compile(loss_fn) if compile else loss_fn
    generator = torch.Generator(self.device).manual_seed(seed + 1)
    image_dtype = torch.bfloat16 if bf16 else torch.float32
    self.batches = [
        (torch.randn(batch, 3, image_size, image_size, generator=generator,
                     device=self.device).to(image_dtype),
         torch.randint(0, num_classes, (batch,), generator=generator, device=self.device))
        for _ in range(2)]
    self.times: list[float] = []
    self.loss = float('nan')
    self._step_count = 0
    self.compile_s = self.run(1)

  def _step(self, images, labels):
    loss = self._loss_fn(images, labels)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return loss.detach()

  def _sync(self) -> None:
    if self.device.type == 'cuda':
      self._torch.cuda.synchronize(self.device)

  def run(self, steps: int) -> float:
    """Seconds per step over `steps` steps, the batches cycled, the device synchronised."""
    self._sync()
    t0 = time.perf_counter()
    loss = None
    for _ in range(steps):
      loss = self._step(*self.batches[self._step_count % len(self.batches)])
      self._step_count += 1
    if loss is not None:
      self.loss = float(loss)  # waits for the device, like block_until_ready
    self._sync()
    return (time.perf_counter() - t0) / max(steps, 1)

  def window(self, steps: int) -> None:
    self.times.append(self.run(steps))

  def result(self) -> dict[str, Any]:
    return {'step_s': statistics.median(self.times), 'window_s': self.times,
            'compile_s': self.compile_s, 'final_loss': float(self.loss), 'compiled': None}
