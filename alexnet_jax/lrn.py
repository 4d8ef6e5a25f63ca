"""Local Response Normalization, the paper's formula (Krizhevsky et al. 2012, section 3.3).

    b[c] = a[c] / (k + alpha * sum_{j=max(0, c-n/2)}^{min(N-1, c+n/2)} a[j]^2) ** beta

over the channels of one group (the paper's GPUs never normalised across the split), with
n=5, k=2, alpha=1e-4, beta=0.75. alpha is NOT divided by n: that is the paper's and
tf.nn.local_response_normalization's convention, unlike PyTorch/Caffe/MXNet (alpha/n).

The window sum is written as 2r+1 shifted slices of the zero-padded squares, not as a
reduce_window: it fuses with its neighbours and its autodiff is plain adds, where XLA's
reduce_window gradient is a slow generic path. The computation is float32 even for bfloat16
activations: D^-beta of a bf16 sum of squares loses most of its mantissa.
"""
import jax
import jax.numpy as jnp

# The paper's constants (section 3.3), named as in tf.nn.local_response_normalization.
DEPTH_RADIUS = 2  # n = 2 * DEPTH_RADIUS + 1 = 5 channels
BIAS = 2.0  # k
ALPHA = 1e-4
BETA = 0.75


def window_sum_of_squares(x32: jax.Array, depth_radius: int) -> jax.Array:
  """sum_{j=c-r}^{c+r} x[j]^2 over the last axis, channels outside [0, N) counting zero."""
  sq = jnp.square(x32)
  padded = jnp.pad(sq, [(0, 0)] * (sq.ndim - 1) + [(depth_radius, depth_radius)])
  n_channels = sq.shape[-1]
  total = padded[..., 0:n_channels]
  for offset in range(1, 2 * depth_radius + 1):
    total = total + padded[..., offset:offset + n_channels]
  return total


def local_response_norm(x: jax.Array,
                        *,
                        groups: int = 1,
                        depth_radius: int = DEPTH_RADIUS,
                        bias: float = BIAS,
                        alpha: float = ALPHA,
                        beta: float = BETA) -> jax.Array:
  """LRN over the last axis, within each of `groups` equal channel groups; returns x.dtype.

  An input that already carries its groups on a leading axis (our model's G x B x H x W x C/G
  layout) needs groups=1: the window then never leaves the array.
  """
  n_channels = x.shape[-1]
  if n_channels % groups:
    raise ValueError(f'{n_channels} channels do not split into {groups} groups')
  x32 = x.astype(jnp.float32)
  grouped = x32.reshape(x.shape[:-1] + (groups, n_channels // groups))
  denom = bias + alpha * window_sum_of_squares(grouped, depth_radius)
  # D ** -beta as exp(-beta * log D): D >= k = 2 > 0, and it avoids pow's special cases.
  out = grouped * jnp.exp(-beta * jnp.log(denom))
  return out.reshape(x.shape).astype(x.dtype)
