"""A locally connected layer: a convolution without weight sharing, one kernel and one bias per
output position (cuda-convnet's local layers, `LocalUnsharedLayerParser`; the CIFAR-10 net's
local3 and local4).

The parameters are flax's nn.ConvLocal's, named and shaped alike (kernel OH x OW x (C*K*K) x F,
the patch features in conv_general_dilated_patches' order, channel-major; bias OH x OW x F), so
that the same init key gives the same weights and a checkpoint of either loads into the other.
The computation is ours: nn.ConvLocal extracts its patches with a convolution against a one-hot
kernel, whose gradient XLA:CPU runs as a full transposed convolution (its cost:
docs/experiments.md, CIFAR-10's budget); here the patches are K*K shifted slices
of the padded input, stacked, whose gradient is K*K shifted adds.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def patches(x_BxHxWxC: jax.Array, kernel_size: int, padding: int) -> jax.Array:
  """B x OH x OW x (C*K*K): each position's K x K x C window, flattened channel-major (feature
  c*K*K + i*K + j holds x[b, y + i - padding, x + j - padding, c], zero outside the image)."""
  k, p = kernel_size, padding
  b, h, w, c = x_BxHxWxC.shape
  oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (p, p), (p, p), (0, 0)))
  shifted = [padded[:, i:i + oh, j:j + ow, :] for i in range(k) for j in range(k)]
  return jnp.stack(shifted, axis=-1).reshape(b, oh, ow, c * k * k)


class LocallyConnected(nn.Module):
  """y[b, y, x, f] = bias[y, x, f] + sum over the K x K x C window at (y, x) of
  patch * kernel[y, x, :, f]; stride 1, `padding` zeros on every side."""
  features: int
  kernel_size: int
  padding: int
  kernel_init: Callable[..., jax.Array]
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    windows = patches(x, self.kernel_size, self.padding).astype(self.dtype)
    _, oh, ow, n_in = windows.shape
    kernel = self.param('kernel', self.kernel_init, (oh, ow, n_in, self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (oh, ow, self.features), jnp.float32)
    y = jnp.einsum('bhwf,hwfo->bhwo', windows, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)
