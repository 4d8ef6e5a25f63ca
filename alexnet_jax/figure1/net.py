"""Figure 1's net and its init in each regime.

The net is cuda-convnet's CIFAR-10 layout (the paper's Figure 1 net was a four-layer net on
CIFAR-10, section 3.1): conv 5x5x32 -> max pool 3/2 -> conv 5x5x32 -> max pool 3/2 -> conv
5x5x64 -> max pool 3/2 -> dense (classes), 'SAME' padding, the activation after each conv (max
pooling commutes with both activations), no LRN, no dropout. On 32x32 RGB and 10 classes: 89,578
parameters.

A regime is an init (here) and an input (data.regime_inputs):
- 'paper': weights N(0, 0.01), zero biases (section 5), on raw pixels minus the mean image;
- 'modern': fan-in normal weights (He, std sqrt(2 / fan_in), before a ReLU; LeCun, sqrt(1 /
  fan_in), before a tanh and for the classifier), zero biases, on standardised pixels.

A seed fixes the init: the relu and tanh nets of a seed share their standard normal draws, so
that their runs are paired.

The layers compute what flax's nn.Conv and a -inf padded reduce_window max pool compute. How
(Net.impl, one of CHOICES; the same params either way):
- 'fast': gradients written as XLA:CPU runs them fast inside a compiled loop (train.py runs K
  SGD steps as one lax.scan): XLA's own gradient convolutions, which permute the convolution's
  dimensions, ran one to two orders of magnitude slower inside a while loop than outside it on
  the 2-core VM, while a forward convolution in NHWC/HWIO ran at full speed in both; so both
  gradients here are such forward convolutions (conv_same). The pooling's gradient is
  elementwise work on strided slices, pooled along W, then H (max_pool), which measured faster
  than model/pooling.py's 3 x 3 window at once;
- 'xla': the plain forms with XLA's own gradients (lax.conv_general_dilated 'SAME', a -inf
  padded reduce_window), what flax's nn.Conv and nn.max_pool compute;
- 'auto' (auto_impl): 'fast' on the CPU, where it was measured; elsewhere 'xla' until a
  measurement there says otherwise (issue 25: nothing tuned for the CPU becomes a GPU or TPU
  default unmeasured; `python -m alexnet_jax.tools.device_check` times both). The forward
  passes are the same convolutions and maxima: only the gradients' rounding differs.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
REGIMES = ('paper', 'modern')
CONV_FEATURES = (32, 32, 64)
LAYERS = ('conv1', 'conv2', 'conv3', 'dense')
PAPER_STD = 0.01  # section 5: "a zero-mean Gaussian distribution with standard deviation 0.01"


IMPLS = ('fast', 'xla')
CHOICES = ('auto',) + IMPLS
_AUTO = {'cpu': 'fast'}  # measured there (module docstring); every other backend: 'xla'

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def auto_impl(backend: str) -> str:
  """What impl='auto' runs on a backend ('cpu', 'gpu', 'tpu', ...)."""
  return _AUTO.get(backend, 'xla')


def resolve_impl(impl: str) -> str:
  """impl, with 'auto' replaced by this process's backend's choice."""
  if impl == 'auto':
    return auto_impl(jax.default_backend())
  if impl not in IMPLS:
    raise ValueError(f'figure1 net impl {impl!r}; choose one of {", ".join(CHOICES)}')
  return impl


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)


@jax.custom_vjp
def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """B x H x W x I (*) k x k x I x O, stride 1, 'SAME' (k odd): nn.Conv's convolution, without
  its bias. The gradients are forward convolutions (module docstring):

    dx = dy (*) the kernel flipped in H and W, I and O swapped ('SAME');
    dk[a, b, i, o] = sum over n, h, w of x_pad[n, h + a, w + b, i] dy[n, h, w, o]: a 'VALID'
      convolution of x_pad, its channels as the batch and its images as the features, with dy
      as the kernel."""
  return _conv(x, kernel, 'SAME')


def _conv_same_fwd(x, kernel):
  return _conv(x, kernel, 'SAME'), (x, kernel)


def _conv_same_bwd(residuals, dy):
  x, kernel = residuals
  k = kernel.shape[0]
  dx = _conv(dy, jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)), 'SAME')
  x_pad = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  dk = _conv(jnp.transpose(x_pad, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), 'VALID')
  return dx, jnp.transpose(dk, (1, 2, 0, 3))


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def _same_pads(n: int, window: int, stride: int) -> tuple[int, int]:
  """'SAME' pooling's -inf padding of a side n: ceil(n / stride) windows, the odd one more at
  the end."""
  total = max((-(-n // stride) - 1) * stride + window - n, 0)
  return total // 2, total - total // 2


def _windows(x_pad: jax.Array, axis: int, count: int, window: int, stride: int) -> list:
  """The window's i-th element of each of `count` windows along axis, for i < window."""
  return [jax.lax.slice_in_dim(x_pad, i, i + (count - 1) * stride + 1, stride, axis)
          for i in range(window)]


def _pool_1d(x: jax.Array, axis: int, window: int, stride: int):
  """'SAME' max pooling along one axis: (the pooled array, x padded with -inf)."""
  n = x.shape[axis]
  pads = [(0, 0)] * x.ndim
  pads[axis] = _same_pads(n, window, stride)
  x_pad = jnp.pad(x, pads, constant_values=-jnp.inf)
  return functools.reduce(jnp.maximum, _windows(x_pad, axis, -(-n // stride), window,
                                                stride)), x_pad


def _pool_1d_grad(x: jax.Array, g: jax.Array, axis: int, window: int,
                  stride: int) -> jax.Array:
  """The gradient of _pool_1d(x) for the output gradient g: g to the first element of each
  window that holds its maximum (select_and_scatter's rule), summed where windows overlap. The
  maximum is recomputed from the very elements it is compared with (as model/pooling.py does:
  XLA does not promise to compute the forward's maximum bit for bit alike twice)."""
  n = x.shape[axis]
  _, x_pad = _pool_1d(x, axis, window, stride)
  elements = _windows(x_pad, axis, g.shape[axis], window, stride)
  y = functools.reduce(jnp.maximum, elements)
  taken = jnp.zeros(y.shape, jnp.bool_)
  zero = jnp.zeros((), g.dtype)
  dx_pad = None
  for i, element in enumerate(elements):
    chosen = (element == y) & ~taken
    taken = taken | chosen
    # Element i of window q sits at stride * q + i of x_pad: zeros in between.
    pads = [(0, 0, 0)] * x.ndim
    pads[axis] = (i, x_pad.shape[axis] - i - (g.shape[axis] - 1) * stride - 1, stride - 1)
    placed = jax.lax.pad(jnp.where(chosen, g, zero), zero, pads)
    dx_pad = placed if dx_pad is None else dx_pad + placed
  low = _same_pads(n, window, stride)[0]
  return jax.lax.slice_in_dim(dx_pad, low, low + n, 1, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """Max pooling of B x H x W x C with 'SAME' padding (-inf): along W, then along H, which is
  the 2-D pooling (the maximum of maxima). Its gradient goes to the first element in row-major
  order of each window that holds the window's maximum (reduce_window's gradient,
  select_and_scatter, keeps the first of tied elements too): pooled along W first, the first
  row that holds the maximum, and in it the first column."""
  return _pool_1d(_pool_1d(x, 2, window, stride)[0], 1, window, stride)[0]


def _max_pool_fwd(x, window, stride):
  rows = _pool_1d(x, 2, window, stride)[0]
  return _pool_1d(rows, 1, window, stride)[0], (x, rows)


def _max_pool_bwd(window, stride, residuals, g):
  x, rows = residuals
  d_rows = _pool_1d_grad(rows, g, 1, window, stride)
  return (_pool_1d_grad(x, d_rows, 2, window, stride),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_xla(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """max_pool's pooling as a -inf padded reduce_window ('SAME'), with XLA's own gradient
  (select_and_scatter): nn.max_pool(x, (3, 3), (2, 2), 'SAME')."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                               (1, stride, stride, 1), 'SAME')


class Conv(nn.Module):
  """nn.Conv(features, (k, k), padding='SAME'): the same 'kernel' (k x k x I x O) and 'bias'
  parameters, nn.Conv's default init (init_params replaces it). impl 'fast': through conv_same;
  'xla': the convolution with XLA's own gradients."""
  features: int
  kernel_size: int = 5
  impl: str = 'fast'

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    if self.impl == 'fast':
      return conv_same(x, kernel) + bias
    return _conv(x, kernel, 'SAME') + bias


class Net(nn.Module):
  """Three 5x5 conv layers, each followed by 3/2 max pooling, and one dense layer. impl: one of
  CHOICES (module docstring)."""
  activation: str
  num_classes: int = 10
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    impl = resolve_impl(self.impl)
    pool = max_pool if impl == 'fast' else max_pool_xla
    for i, features in enumerate(CONV_FEATURES):
      x = Conv(features, impl=impl, name=f'conv{i + 1}')(x)
      x = pool(act(x))
    return nn.Dense(self.num_classes, name='dense')(x.reshape(x.shape[0], -1))


def init_std(regime: str, activation: str, layer: str, fan_in: int) -> float:
  """The weights' standard deviation of one layer in a regime (module docstring)."""
  if regime == 'paper':
    return PAPER_STD
  if regime == 'modern':
    gain = 2.0 if activation == 'relu' and layer != 'dense' else 1.0
    return math.sqrt(gain / fan_in)
  raise ValueError(f'unknown regime {regime!r}; choose: {", ".join(REGIMES)}')


def init_params(seed: int, regime: str, activation: str, image_size: int,
                num_classes: int = 10) -> dict:
  """Normal weights scaled per init_std, zero biases. Layer i draws from fold_in(key(seed), i),
  so that relu and tanh nets of the same seed share their standard normal draws."""
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  shapes = jax.eval_shape(Net(activation, num_classes).init, jax.random.key(0), dummy)['params']
  key = jax.random.key(seed)
  params = {}
  for i, layer in enumerate(LAYERS):
    shape = shapes[layer]['kernel'].shape
    std = init_std(regime, activation, layer, int(np.prod(shape[:-1])))
    params[layer] = {'kernel': std * jax.random.normal(jax.random.fold_in(key, i), shape,
                                                       jnp.float32),
                     'bias': jnp.zeros(shapes[layer]['bias'].shape, jnp.float32)}
  return params


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
