"""cuda-convnet's CIFAR-10 net, the one behind the paper's LRN claim on CIFAR-10 (section 3.3:
"A four-layer CNN achieved a 13% test error rate without normalization and 11% with
normalization"; footnote 3 points to cuda-convnet's `layers-conv-local-11pct.cfg` and
`layers-conv-local-13pct.cfg`).

The version followed: cuda-convnet `example-layers/layers-conv-local-11pct.cfg` at commit
3878e8f (dnouri/cuda-convnet, the mirror's first commit of that file), with its
`layer-params-conv-local-11pct.cfg`:

  input  24x24x3 (a crop of the 32x32 image)
  conv1  5x5x3 -> 64, pad 2, ReLU            -> 24x24x64   initW 1e-4
  rnorm1 cross-map response norm, size 5, scale 0.001, pow 0.75
  pool1  max 3x3 stride 2 (cuda-convnet's ceil rule)  -> 12x12x64
  conv2  5x5x64 -> 64, pad 2, ReLU           -> 12x12x64   initW 1e-2
  rnorm2 as rnorm1
  pool2  max 3x3 stride 2                    -> 6x6x64
  local3 3x3x64 -> 32, pad 1, unshared, ReLU -> 6x6x32     initW 4e-2
  local4 3x3x32 -> 32, pad 1, unshared, ReLU -> 6x6x32     initW 4e-2
  fc10   1152 -> 10                                        initW 1e-2
  biases 0 everywhere (layer.py's initB default); weights N(0, initW^2) (layer.py make_weights:
  initW * randn).

Why 3878e8f and not a2a6af8 (the mirror's head): at 3878e8f the 11pct net is the 13pct net
(`layers-conv-local-13pct.cfg`, the same at both commits) plus the two norms and nothing else;
layer widths and weight decays are the same in both files. So model.norm='lrn' is cuda-convnet's
11 % file and model.norm='none' its 13 % file, exactly, and the ablation changes only the norm,
which is the paper's claim. a2a6af8's 11pct file also widens local3 to 64 maps, raises fc10's
weight decay to 0.01, pools conv1 before its norm and uses a norm of size 9: against the 13 %
file it changes four things at once.

The norm (layer.py line 1045 at 3878e8f: scale /= size for crossMap; src/cudaconv2/conv_util.cu
lines 1054-1087: the window [f - size/2, f - size/2 + size) clipped to the maps, then
x * (1 + scale' * sum x^2)^-pow) is our LRN op with n=size, k=1, alpha=scale/size, beta=pow:
lrn.from_cuda_convnet. For size 5 the window is f-2..f+2, centred, as our op's.

The pools: cuda-convnet computes outputsX = ceil((imgSize - start - sizeX) / stride) + 1
(layer.py line 1018 at 3878e8f) and max-pools over the part of each window inside the image:
24 -> 12 -> 6, where an unpadded pool would give 11 -> 5. So each pool here pads the bottom and
right edges with -inf (never a window's maximum: every window holds at least one pixel).

The locally connected layers (locally_connected.py): one 3x3xC kernel and one bias per output
position and map (layer.py LocalUnsharedLayerParser: modules * filters biases), with flax's
nn.ConvLocal's parameters and a faster gradient.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.errors import UserError
from alexnet_jax.model import locally_connected
from alexnet_jax.model import lrn as lrn_lib
from alexnet_jax.model import pooling

ARCH = 'cuda_convnet_cifar10'
NORMS = ('lrn', 'none')  # model.norm: the 11 % net and the 13 % net
COMMIT = '3878e8f'
# layers-conv-local-11pct.cfg at 3878e8f, [rnorm1] and [rnorm2].
NORM_SIZE, NORM_SCALE, NORM_POW = 5, 0.001, 0.75
POOL_WINDOW, POOL_STRIDE = 3, 2  # [pool1], [pool2]: sizeX=3, stride=2
# Each layer's (kernel size, padding, maps, initW) from the same file.
CONVS = (('conv1', 5, 2, 64, 1e-4), ('conv2', 5, 2, 64, 1e-2))
LOCALS = (('local3', 3, 1, 32, 4e-2), ('local4', 3, 1, 32, 4e-2))
FC = ('fc10', 1e-2)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# config.model switches of the AlexNet that this net has no place for, with the one value each
# may hold here (configs/alexnet.py's default, or the value that says what this net does).
FIXED_SWITCHES = {
    'activation': 'relu',  # every layer's neuron=relu (fc10: ident)
    'pool': 'overlap',  # 3x3 stride 2
    'lrn_order': 'paper',  # ReLU -> norm -> pool, as in 3878e8f
    'init': 'paper',  # here: the file's initW per layer, biases 0
    'width': 1.0,
    'remove_convs': '',
    'dropout': 0.0,  # cuda-convnet's file has no dropout
}


def pooled_size(size: int) -> int:
  """cuda-convnet's pool output size (layer.py line 1018 at 3878e8f; start=0), 0 if the image
  is smaller than the window."""
  if size < POOL_WINDOW:
    return 0
  return -(-(size - POOL_WINDOW) // POOL_STRIDE) + 1


def fc_input_size(image_size: int) -> int:
  """The side of local4's maps for image_size inputs (6 for 24): two pools; the padded convs
  and locally connected layers keep the size."""
  return pooled_size(pooled_size(image_size))


def min_image_size() -> int:
  return next(s for s in range(1, 100) if fc_input_size(s) >= 1)


def macs_per_image(image_size: int, num_classes: int = 10) -> int:
  """Multiply-adds of the net's conv, locally connected and dense layers for one image_size x
  image_size image: the padded convs and locally connected layers keep their input's size, the
  pools shrink it (pooled_size)."""
  size, maps_in, macs = image_size, 3, 0
  for _, kernel, _, maps, _ in CONVS:
    macs += size * size * kernel * kernel * maps_in * maps
    size, maps_in = pooled_size(size), maps
  for _, kernel, _, maps, _ in LOCALS:
    macs += size * size * kernel * kernel * maps_in * maps
    maps_in = maps
  return macs + size * size * maps_in * num_classes


def max_pool(x: jax.Array, impl: str) -> jax.Array:
  """cuda-convnet's 3x3 stride-2 max pool of B x H x W x C: the windows that start inside the
  image, each over its part inside (the bottom and right edges padded with -inf)."""
  h, w = x.shape[1:3]
  pad_h = (pooled_size(h) - 1) * POOL_STRIDE + POOL_WINDOW - h
  pad_w = (pooled_size(w) - 1) * POOL_STRIDE + POOL_WINDOW - w
  x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
  # pooling.grouped_max_pool takes G x B x H x W x C: one group.
  return pooling.grouped_max_pool(x[None], POOL_WINDOW, POOL_STRIDE, impl=impl)[0]


class CudaConvnetCifar10(nn.Module):
  """cuda-convnet's layers-conv-local-11pct net (norm='lrn') or -13pct net (norm='none').
  Call with B x H x W x 3 images (24 x 24 in the recipe); returns float32 logits."""
  num_classes: int = 10
  norm: str = 'lrn'  # NORMS
  dtype: Any = jnp.float32
  lrn_impl: str = 'auto'  # lrn.CHOICES: same values, different speed
  pool_impl: str = 'auto'  # pooling.CHOICES: same values, different speed

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool,
               example_mask: jax.Array | None = None) -> jax.Array:
    """train and example_mask are the AlexNet's call signature: this net has no dropout and no
    batch norm, so both change nothing."""
    del train, example_mask
    normal = nn.initializers.normal
    norm = functools.partial(lrn_lib.local_response_norm, impl=self.lrn_impl,
                             **lrn_lib.from_cuda_convnet(NORM_SIZE, NORM_SCALE, NORM_POW))
    x = images.astype(self.dtype)
    for name, kernel, pad, maps, init_w in CONVS:
      x = nn.Conv(maps, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                  kernel_init=normal(init_w), bias_init=nn.initializers.zeros,
                  dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
      x = nn.relu(x)
      if self.norm == 'lrn':
        x = norm(x)
      x = max_pool(x, self.pool_impl)
      self.sow('intermediates', 'pool' + name[-1], x)  # what the tests check the layers on
    for name, kernel, pad, maps, init_w in LOCALS:
      x = locally_connected.LocallyConnected(
          maps, kernel, pad, kernel_init=normal(init_w), bias_init=nn.initializers.zeros,
          dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
      self.sow('intermediates', name + '_out', x)
    x = x.reshape((x.shape[0], -1))
    name, init_w = FC
    # fc10 in float32 whatever the compute dtype, as the AlexNet's fc8: the logits feed the
    # softmax, the loss and top-k.
    return nn.Dense(self.num_classes, kernel_init=normal(init_w),
                    bias_init=nn.initializers.zeros, dtype=jnp.float32,
                    param_dtype=jnp.float32, name=name)(x.astype(jnp.float32))


def from_config(model_config) -> CudaConvnetCifar10:
  """The net from config.model (model.arch == ARCH), refusing a switch it has no place for."""
  if model_config['norm'] not in NORMS:
    raise UserError(f'config.model.norm={model_config["norm"]!r} with model.arch={ARCH!r}; '
                    f'choose one of {", ".join(NORMS)}')
  for key, value in FIXED_SWITCHES.items():
    if model_config[key] != value:
      raise UserError(f'config.model.{key}={model_config[key]!r} does not apply to '
                      f'model.arch={ARCH!r} (cuda-convnet\'s file fixes it); leave it at '
                      f'{value!r}')
  if model_config['dtype'] not in DTYPES:
    raise UserError(f'config.model.dtype={model_config["dtype"]!r}; choose one of '
                    f'{", ".join(DTYPES)}')
  for key, allowed in (('lrn_impl', lrn_lib.CHOICES), ('pool_impl', pooling.CHOICES)):
    if model_config[key] not in allowed:
      raise UserError(f'config.model.{key}={model_config[key]!r}; choose one of '
                      f'{", ".join(allowed)}')
  if model_config['num_classes'] < 2:
    raise UserError(f'config.model.num_classes={model_config["num_classes"]} must be >= 2')
  return CudaConvnetCifar10(num_classes=model_config['num_classes'], norm=model_config['norm'],
                            dtype=DTYPES[model_config['dtype']],
                            lrn_impl=model_config['lrn_impl'],
                            pool_impl=model_config['pool_impl'])
