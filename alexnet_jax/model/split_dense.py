"""The paper's fully connected layers, each split over its two GPUs by output units (section
3.2: "the neurons in the fully-connected layers are connected to all neurons in the previous
layer", and each GPU holds half of every layer's neurons).

A layer's kernel is N_in x N_out with its columns split over 'model' (2048 + 2048 for fc6 and
fc7, half the classes for fc8). Its input arrives split the same way, pool5 as the two groups'
maps, fc7's and fc8's input as the units below, and is gathered whole on each device inside the
layer (sharding.split_units): backward, each device then reduce-scatters the input gradient,
keeping only its own half.
"""
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import sharding
from alexnet_jax.model.grouped_conv import merge_groups

def flat_features(x: jax.Array, input_role: str) -> int:
  """Input units of a layer fed x: pool5's G x B x h x w x C/G maps are h*w*C of them."""
  if input_role == 'grouped':
    return x.shape[0] * math.prod(x.shape[2:])
  return x.shape[-1]


class SplitDense(nn.Module):
  """y = x @ kernel + bias with kernel N_in x features, parameters named as nn.Dense's.

  input_role 'grouped': x is pool5, G x B x h x w x C/G, flattened as B x (h, w, C) with group
  g's channels at [g*C/G, (g+1)*C/G) (merge_groups); 'units': x is B x N_in.
  """
  features: int
  input_role: str
  kernel_init: Callable[..., jax.Array]
  bias_init: Callable[..., jax.Array]
  dtype: Any = jnp.float32
  precision: Any = None  # jax.lax.Precision of the matmul; None: the backend's default

  @nn.compact
  def __call__(self, x: jax.Array, input_scale: jax.Array | None = None) -> jax.Array:
    """input_scale, B x N_in or None, multiplies the flattened input (torchvision's dropout of
    pool5: the mask scaled by 1/keep, drawn in the flat layout so that it is the unsplit
    net's)."""
    kernel = self.param('kernel', self.kernel_init, (flat_features(x, self.input_role),
                                                     self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)

    def layer(x, kernel, bias, *input_scale):
      if self.input_role == 'grouped':
        x = merge_groups(x)
        x = x.reshape(x.shape[0], -1)
      if input_scale:
        x = x * input_scale[0]
      return (jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype), precision=self.precision)
              + bias.astype(self.dtype))

    run = sharding.split_units(layer, self.input_role, f'{self.name}/kernel', kernel.shape,
                               n_extra=0 if input_scale is None else 1)
    return run(x, kernel, bias, *(() if input_scale is None else (input_scale,)))
