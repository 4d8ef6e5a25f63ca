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
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.model import pooling

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
REGIMES = ('paper', 'modern')
CONV_FEATURES = (32, 32, 64)
LAYERS = ('conv1', 'conv2', 'conv3', 'dense')
PAPER_STD = 0.01  # section 5: "a zero-mean Gaussian distribution with standard deviation 0.01"


def max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """Max pooling of B x H x W x C with 'SAME' padding (-inf), through the library's pooling,
  whose backward XLA:CPU runs fast (flax's nn.max_pool's select_and_scatter is several times
  slower here)."""
  pads = [(0, 0)]
  for n in x.shape[1:3]:
    total = max((-(-n // stride) - 1) * stride + window - n, 0)
    pads.append((total // 2, total - total // 2))
  x = jnp.pad(x, pads + [(0, 0)], constant_values=-jnp.inf)
  return pooling.grouped_max_pool(x[None], window, stride)[0]


class Net(nn.Module):
  """Three 5x5 conv layers, each followed by 3/2 max pooling, and one dense layer."""
  activation: str
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    for i, features in enumerate(CONV_FEATURES):
      x = nn.Conv(features, (5, 5), padding='SAME', name=f'conv{i + 1}')(x)
      x = max_pool(act(x))
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
    params[layer] = {'kernel': std * jax.random.normal(jax.random.fold_in(key, i), shape),
                     'bias': jnp.zeros(shapes[layer]['bias'].shape, jnp.float32)}
  return params


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
