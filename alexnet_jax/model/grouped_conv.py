"""The paper's grouped convolution (section 3.2): G convolutions side by side, one per GPU.

A kernel has a leading group axis, G x kh x kw x Cin x Cout/G, and so do its outputs,
G x B x H x W x Cout/G: each half is a real array that the sharding rules place on its own
device ('model' axis), instead of being hidden inside `feature_group_count`. conv2, conv4 and
conv5 see only their own group's maps; conv1 and conv3 see the whole input (a shared input)
but each GPU still held half of their kernels.
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import sharding

GROUPS = 2  # the paper's two GPUs (section 3.2)
# How a device runs the groups it holds, chosen per backend by measurement
# (`python -m alexnet_jax.tools.benchmark --conv_impls=halves,feature_group,im2col`; the
# figures are in docs/performance.md):
#   'halves'        one plain convolution per group;
#   'feature_group' the groups merged into one convolution (feature_group_count=G, or one conv
#                   with G x the outputs for a shared input);
#   'im2col'        halves, except a strided conv on a shared input (conv1: 11x11 stride 4 on
#                   3 channels) is one matmul of its 11*11*3 patches with both groups' kernels.
# On CPU 'auto' is halves, the one backend where they were measured: XLA:CPU's own strided
# convolution runs conv1 faster than the patch matmul since the step's other costs went down
# (the patches are a large copy the kernel must zero-fill; docs/performance.md has the figures),
# and XLA's feature_group_count backward is a slow path. No GPU or TPU has timed them in this
# project, so 'auto' is the plain XLA form there, feature_group, what a plain JAX AlexNet
# writes (the benchmark's yardstick), until a measurement there (tools/device_check.py) says
# otherwise. Under the paper's split (mesh.model=2) each device holds one group: halves and
# feature_group are then the same single convolution.
CONV_IMPLS = ('auto', 'halves', 'feature_group', 'im2col')
_AUTO_CONV_IMPL = {'cpu': 'halves'}
_UNMEASURED_BACKEND_CONV_IMPL = 'feature_group'


def auto_conv_impl(backend: str) -> str:
  """What conv_impl='auto' runs on a backend ('cpu', 'gpu', 'tpu', ...)."""
  return _AUTO_CONV_IMPL.get(backend, _UNMEASURED_BACKEND_CONV_IMPL)


def kernel_init(init: str, grouped: bool = False) -> Callable[..., jax.Array]:
  if init == 'paper':
    return nn.initializers.normal(stddev=0.01)  # section 5: N(0, 0.01) for every layer
  if grouped:  # He et al. 2015 per group: fan-in = kh * kw * Cin, the group axis is a batch
    return nn.initializers.variance_scaling(2.0, 'fan_in', 'normal', in_axis=(1, 2, 3),
                                            out_axis=-1, batch_axis=(0,))
  return nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def bias_init(init: str, paper_value: float) -> Callable[..., jax.Array]:
  # Section 5: biases 1 in conv2, conv4, conv5, fc6, fc7 give ReLUs positive input early.
  return nn.initializers.constant(paper_value if init == 'paper' else 0.0)

class GroupedConv(nn.Module):
  """GROUPS convolutions side by side: kernel G x kh x kw x Cin x Cout/G, bias G x Cout/G.

  input_layout 'grouped': x is G x B x H x W x Cin/G and group g sees only x[g] (conv2, 4, 5);
  'shared': x is B x H x W x Cin and every group sees all of it (conv1, on the image);
  'gathered': x is G x B x H x W x Cin/G and every group sees all of it, merged (conv3: the
  paper's exchange, gathered over 'model' by sharding.per_group).
  Returns G x B x H' x W' x Cout/G.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  input_layout: str = 'grouped'
  init_scheme: str = 'paper'
  bias_value: float = 0.0
  dtype: Any = jnp.float32
  impl: str = 'auto'  # CONV_IMPLS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    shared = self.input_layout != 'grouped'
    in_features = x.shape[-1] * (x.shape[0] if self.input_layout == 'gathered' else 1)
    kernel_GxKxKxIxO = self.param('kernel', kernel_init(self.init_scheme, grouped=True),
                                  (GROUPS, k, k, in_features, self.features // GROUPS),
                                  jnp.float32)
    bias_GxO = self.param('bias', bias_init(self.init_scheme, self.bias_value),
                          (GROUPS, self.features // GROUPS), jnp.float32)
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(self.stride, self.stride),
        padding=[(self.padding, self.padding)] * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    impl = self.impl
    if impl == 'auto':
      impl = auto_conv_impl(jax.default_backend())

    def local_groups(x, kernel, bias):
      # The groups this device holds: both on one device, one each with the paper's split.
      groups = kernel.shape[0]
      if self.input_layout == 'gathered':
        x = merge_groups(x)
      if impl == 'im2col' and shared and self.stride > 1:
        return _im2col_conv(x, kernel.astype(self.dtype), bias.astype(self.dtype),
                            self.stride, self.padding)
      if impl == 'feature_group' and groups > 1:
        return _merged_groups_conv(conv, x, kernel.astype(self.dtype), bias.astype(self.dtype),
                                   shared)
      outs = []
      for g in range(groups):
        x_g = x if shared else x[g]
        outs.append(conv(x_g, kernel[g].astype(self.dtype)) + bias[g].astype(self.dtype))
      return jnp.stack(outs)

    return sharding.per_group(local_groups, self.input_layout)(
        x.astype(self.dtype), kernel_GxKxKxIxO, bias_GxO)


def _im2col_conv(x_BxHxWxC, kernel_GxKxKxIxO, bias_GxO, stride: int, padding: int) -> jax.Array:
  """A strided convolution as one matmul: the k*k*C patch under every output position
  (strided slices, no gradient needed: this is the input image) times all local groups'
  kernels at once. Returns G x B x H' x W' x O."""
  x = x_BxHxWxC
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  b, h, w, c = x.shape
  g, k, _, _, o = kernel_GxKxKxIxO.shape
  out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
  columns = [jax.lax.slice(x, (0, i, j, 0),
                           (b, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                           (1, stride, stride, 1))
             for i in range(k) for j in range(k)]
  patches = jnp.concatenate(columns, axis=-1)  # (i, j, c) order, as the kernel's k x k x C
  y = jnp.einsum('bhwp,gpo->gbhwo', patches, kernel_GxKxKxIxO.reshape(g, k * k * c, o))
  return y + bias_GxO[:, None, None, None, :]


def _merged_groups_conv(conv, x, kernel_GxKxKxIxO, bias_GxO, shared_input: bool) -> jax.Array:
  """The same G convolutions as one: a shared input gets one conv with G*O outputs, a grouped
  one a feature_group_count=G conv on the channel-merged input. Returns G x B x H x W x O."""
  g, k, _, cin, o = kernel_GxKxKxIxO.shape
  kernel = jnp.transpose(kernel_GxKxKxIxO, (1, 2, 3, 0, 4)).reshape(k, k, cin, g * o)
  if shared_input:
    y = conv(x, kernel)
  else:
    y = conv(merge_groups(x), kernel, feature_group_count=g)
  b, h, w, _ = y.shape
  y = jnp.transpose(y.reshape(b, h, w, g, o), (3, 0, 1, 2, 4))
  return y + bias_GxO[:, None, None, None, :]


def merge_groups(x_GxBxHxWxC: jax.Array) -> jax.Array:
  """G x B x H x W x C/G -> B x H x W x C, group g's channels at [g*C/G, (g+1)*C/G)."""
  g, b, h, w, c = x_GxBxHxWxC.shape
  return jnp.transpose(x_GxBxHxWxC, (1, 2, 3, 0, 4)).reshape(b, h, w, g * c)
