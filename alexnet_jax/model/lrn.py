"""Local Response Normalization, the paper's formula (Krizhevsky et al. 2012, section 3.3).

    b[c] = a[c] / D[c] ** beta,  D[c] = k + alpha * sum_{j=max(0, c-n/2)}^{min(N-1, c+n/2)} a[j]^2

over the channels of one group (the paper's GPUs never normalised across the split), with
n=5, k=2, alpha=1e-4, beta=0.75. alpha is NOT divided by n: that is the paper's and
tf.nn.local_response_normalization's convention, unlike PyTorch/Caffe/MXNet (alpha/n).

The computation is float32 even for bfloat16 activations: D^-beta of a bf16 sum of squares
loses most of its mantissa. Three implementations, equal in value (tested):

  'fast'          (default) a jax.custom_vjp with the closed-form backward
                    da[i] = g[i] D[i]^-beta - 2 alpha beta a[i] sum_{c in window(i)} g[c] b[c] / D[c]
                  i.e. one more window sum over channels, recomputing D from the saved input
                  rather than storing it (the step is memory-bound). Both window sums are
                  reduce_windows of materialised arrays, which XLA runs as fast as anything
                  here; only reduce_window's autodiff transpose is slow.
  'autodiff'      the window sum as 2r+1 shifted slices of the zero-padded squares,
                  differentiated by JAX (pads and slices transposed).
  'reduce_window' the window sum as lax.reduce_window, differentiated by JAX, as the plain-JAX
                  yardstick writes it.

`python -m alexnet_jax.tools.benchmark --mode=lrn` times the three alone, and the step benchmark
with --lrn_impls=fast,autodiff,reduce_window inside the whole training step.
"""
import functools

import jax
import jax.numpy as jnp

# The paper's constants (section 3.3), named as in tf.nn.local_response_normalization.
DEPTH_RADIUS = 2  # n = 2 * DEPTH_RADIUS + 1 = 5 channels
BIAS = 2.0  # k
ALPHA = 1e-4
BETA = 0.75
IMPLS = ('fast', 'autodiff', 'reduce_window')
# 'auto': 'fast' on CPU, the one backend where the three were timed; elsewhere the plain XLA
# form (reduce_window, what a plain JAX AlexNet writes) until a measurement there
# (tools/device_check.py times fast and reduce_window) says otherwise.
CHOICES = ('auto',) + IMPLS
_AUTO = {'cpu': 'fast'}


def from_cuda_convnet(size: int, scale: float, power: float) -> dict:
  """Our (depth_radius, bias, alpha, beta) for cuda-convnet's cross-map response norm
  x / (1 + (scale / size) * sum_{window} x^2)^pow: n = size, k = 1, alpha = scale / size,
  beta = pow. cuda-convnet divides scale by size itself (layer.py line 1045 at 3878e8f) and adds
  1 (src/cudaconv2/conv_util.cu line 1085); its window starts at f - size/2 (line 1054) and
  holds size maps (line 1071), i.e. f-r..f+r for an odd size 2r+1: ours. An even size would
  be off-centre, which this op does not do."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f'cuda-convnet norm size {size}: only an odd size has a centred window')
  return {'depth_radius': size // 2, 'bias': 1.0, 'alpha': scale / size, 'beta': power}


def auto_impl(backend: str) -> str:
  """What impl='auto' runs on a backend ('cpu', 'gpu', 'tpu', ...)."""
  return _AUTO.get(backend, 'reduce_window')


def window_sum(x: jax.Array, depth_radius: int) -> jax.Array:
  """sum_{j=c-r}^{c+r} x[j] over the last axis, channels outside [0, N) counting zero."""
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
  n_channels = x.shape[-1]
  total = padded[..., 0:n_channels]
  for offset in range(1, 2 * depth_radius + 1):
    total = total + padded[..., offset:offset + n_channels]
  return total


def _window_sum_reduce_window(x: jax.Array, depth_radius: int) -> jax.Array:
  n = 2 * depth_radius + 1
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1,) * (x.ndim - 1) + (n,),
                               (1,) * x.ndim,
                               [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])


def _inverse_power(denom: jax.Array, beta: float) -> jax.Array:
  # D ** -beta as exp(-beta * log D): D >= k = 2 > 0, and it avoids pow's special cases.
  return jnp.exp(-beta * jnp.log(denom))


def _lrn_forward(x32, depth_radius, bias, alpha, beta, sum_fn):
  """(b, D, D^-beta): the backward needs all three."""
  denom = bias + alpha * sum_fn(jnp.square(x32), depth_radius)
  scale = _inverse_power(denom, beta)
  return x32 * scale, denom, scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn_fast(x, depth_radius, bias, alpha, beta):
  out, _, _ = _lrn_forward(x.astype(jnp.float32), depth_radius, bias, alpha, beta,
                           _window_sum_reduce_window)
  return out.astype(x.dtype)


def _lrn_fast_fwd(x, depth_radius, bias, alpha, beta):
  return _lrn_fast(x, depth_radius, bias, alpha, beta), x


def _lrn_fast_bwd(depth_radius, bias, alpha, beta, x, g):
  x32 = x.astype(jnp.float32)
  out, denom, scale = _lrn_forward(x32, depth_radius, bias, alpha, beta,
                                   _window_sum_reduce_window)
  g32 = g.astype(jnp.float32)
  # d b[c] / d a[i] = delta_ci D[c]^-beta - 2 alpha beta a[i] b[c] / D[c]  (i in c's window);
  # the window is symmetric, so summing over c is the same window sum as the forward's.
  spread = _window_sum_reduce_window(g32 * out / denom, depth_radius)
  grad = g32 * scale - (2.0 * alpha * beta) * x32 * spread
  return (grad.astype(x.dtype),)


_lrn_fast.defvjp(_lrn_fast_fwd, _lrn_fast_bwd)


def local_response_norm(x: jax.Array,
                        *,
                        groups: int = 1,
                        depth_radius: int = DEPTH_RADIUS,
                        bias: float = BIAS,
                        alpha: float = ALPHA,
                        beta: float = BETA,
                        impl: str = 'fast') -> jax.Array:
  """LRN over the last axis, within each of `groups` equal channel groups; returns x.dtype.
  impl: one of CHOICES ('auto' per backend).

  An input that already carries its groups on a leading axis (our model's G x B x H x W x C/G
  layout) needs groups=1: the window then never leaves the array.
  """
  n_channels = x.shape[-1]
  if n_channels % groups:
    raise ValueError(f'{n_channels} channels do not split into {groups} groups')
  if impl == 'auto':
    impl = auto_impl(jax.default_backend())
  if impl not in IMPLS:
    raise ValueError(f'LRN impl {impl!r}; choose one of {", ".join(CHOICES)}')
  grouped = x.reshape(x.shape[:-1] + (groups, n_channels // groups))
  if impl == 'fast':
    out = _lrn_fast(grouped, depth_radius, float(bias), float(alpha), float(beta))
  else:
    sum_fn = window_sum if impl == 'autodiff' else _window_sum_reduce_window
    out, _, _ = _lrn_forward(grouped.astype(jnp.float32), depth_radius, bias, alpha, beta,
                             sum_fn)
  return out.reshape(x.shape).astype(x.dtype)
