"""AlexNet as in Krizhevsky, Sutskever, Hinton (NIPS 2012), with its two-GPU channel groups.

Shapes (input 227x227x3; the paper's text says 224, its arithmetic needs 227):

  conv1  96x11x11x3 s4          -> 55x55x96   (48 kernels per group, both groups see the image)
  norm1, pool1 3x3 s2           -> 27x27x96   (norm: LRN, or batch norm / none, model.norm)
  conv2  256x5x5x48 pad 2       -> 27x27x256  (grouped: each half sees only its own 48 maps)
  norm2, pool2                  -> 13x13x256
  conv3  384x3x3x256 pad 1      -> 13x13x384  (the only conv that sees both groups' maps)
  conv4  384x3x3x192 pad 1      -> 13x13x384  (grouped)
  conv5  256x3x3x192 pad 1      -> 13x13x256  (grouped)
  pool5                         -> 6x6x256 = 9216
  fc6 9216->4096, fc7 4096->4096 (dropout 0.5 on their outputs), fc8 4096->num_classes

The paper's groups are explicit: every convolution kernel has a leading group axis of size 2
(G x kh x kw x Cin x Cout/G) and activations inside the convolutional stack are laid out
G x B x H x W x C/G, so each half is a real array that the sharding rules can place on its own
device, instead of being hidden inside `feature_group_count`. conv1 and conv3 are "groups 1"
in the paper's sense (every kernel sees all input maps) but each GPU still held half of their
kernels, so they carry the same leading axis with a shared input.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import sharding
from alexnet_jax.errors import UserError
from alexnet_jax.model import lrn as lrn_lib
from alexnet_jax.model import pooling
from alexnet_jax.model import split_dense
from alexnet_jax.model.grouped_conv import bias_init
from alexnet_jax.model.grouped_conv import CONV_IMPLS
from alexnet_jax.model.grouped_conv import GROUPS
from alexnet_jax.model.grouped_conv import GroupedConv
from alexnet_jax.model.grouped_conv import kernel_init


ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
POOLS = {'overlap': (3, 2), 'disjoint': (2, 2)}  # (window, stride); paper section 3.4
LRN_ORDERS = ('paper', 'caffe')
INITS = ('paper', 'he')
# Where dropout zeroes units (section 4.2: "the output of each hidden neuron" of the first two
# FC layers, i.e. after fc6's and fc7's ReLUs, Caffe's drop6/drop7); torchvision's AlexNet drops
# the inputs of fc6 and fc7 instead (pool5's and fc6's outputs).
DROPOUT_PLACEMENTS = ('paper', 'torchvision')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# The middle conv layers the depth ablation may leave out (paper section 6).
REMOVABLE_CONVS = ('conv3', 'conv4', 'conv5')
# The normalisation ablation: 'lrn' the paper's (section 3.3); 'batchnorm' batch norm (Ioffe &
# Szegedy 2015, after the paper) where the LRNs sit, layers 1 and 2, in lrn_order's place;
# 'batchnorm_all' batch norm after every conv, the later practice; 'none'.
NORMS = ('lrn', 'batchnorm', 'batchnorm_all', 'none')
# Batch norm's running averages and epsilon: PyTorch's defaults (its momentum 0.1 is the new
# batch's weight; flax's momentum is the old average's). With flax's own default 0.99 the
# demo's first evaluation (after 31 steps) would still read 0.99^31 = 73 % of the initial
# 0 and 1; with 0.9, 4 %.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def variables(params, batch_stats=None) -> dict:
  """The variables model.apply takes: the params, and batch norm's statistics where it has any
  (a net without batch norm has none, and is applied exactly as before batch norm existed)."""
  return {'params': params, **({'batch_stats': batch_stats} if batch_stats else {})}


class AlexNet(nn.Module):
  """The 2012 AlexNet. Call with B x H x W x 3 images; returns float32 logits."""
  num_classes: int = 1000
  norm: str = 'lrn'  # NORMS
  lrn_order: str = 'paper'
  pool: str = 'overlap'
  dropout: float = 0.5
  dropout_placement: str = 'paper'  # DROPOUT_PLACEMENTS
  activation: str = 'relu'
  dtype: Any = jnp.float32
  init_scheme: str = 'paper'
  width: float = 1.0  # channel multiplier; 1.0 is the paper's net
  remove_convs: tuple[str, ...] = ()  # REMOVABLE_CONVS left out (depth ablation)
  lrn_impl: str = 'auto'  # lrn.CHOICES: same values, different speed
  conv_impl: str = 'auto'  # CONV_IMPLS: same values, different speed
  pool_impl: str = 'auto'  # pooling.CHOICES: same values, different speed

  def _channels(self, n: int) -> int:
    return max(GROUPS, int(round(n * self.width / GROUPS)) * GROUPS)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool,
               example_mask: jax.Array | None = None) -> jax.Array:
    """example_mask (B bools): the examples batch norm's training statistics are taken over
    (the others, images that could not be decoded, are blanks that would pull them to zero);
    None, or one with no True, takes all of them."""
    act = ACTIVATIONS[self.activation]
    window, stride = POOLS[self.pool]
    pool = functools.partial(pooling.grouped_max_pool, window=window, stride=stride,
                             impl=self.pool_impl)
    conv = functools.partial(GroupedConv, init_scheme=self.init_scheme, dtype=self.dtype,
                             impl=self.conv_impl)

    def batch_norm(x, name):
      # x is G x B x H x W x C/G: statistics per channel of each group over batch and space
      # (axes 1-3); scale, bias and running statistics are G x C/G, split over 'model' like the
      # conv biases (sharding.PARAM_RULES). Training normalises with this batch's statistics
      # (under jit with the batch split over 'data' the mean over axis 1 is the global batch's:
      # XLA sums across 'data') and updates the running averages; evaluation uses those.
      # Weight decay applies to scale and bias as to every other weight: the paper's update
      # decays all weights, biases included (section 5), and one rule keeps optim.py the
      # paper's (fb.resnet.torch, ResNet's batch-norm ImageNet training, decayed them too).
      mask = None
      if train and example_mask is not None:
        keep = jnp.where(jnp.any(example_mask), example_mask, True)
        mask = keep.reshape((1, -1) + (1,) * (x.ndim - 2))
      return nn.BatchNorm(use_running_average=not train, axis=(0, x.ndim - 1),
                          momentum=BN_MOMENTUM, epsilon=BN_EPSILON, use_fast_variance=False,
                          dtype=self.dtype, param_dtype=jnp.float32, name=name)(x, mask=mask)

    def after_conv(x, name):
      # batchnorm_all: conv -> BN -> ReLU in every conv layer, the placement of the batch-norm
      # paper and of the nets that followed it (VGG with BN, ResNet). The conv biases stay
      # (a BN after them cancels them; kept so every conv's arrays are the same in all nets).
      return batch_norm(x, 'bn' + name[-1]) if self.norm == 'batchnorm_all' else x

    def norm_and_pool(x, name):
      # Section 3.3: LRN follows the ReLU in layers 1 and 2; the paper normalises before
      # pooling, Caffe's CaffeNet after. model.norm=batchnorm puts batch norm in its place.
      if self.norm == 'lrn':
        normalize = functools.partial(lrn_lib.local_response_norm, impl=self.lrn_impl)
      elif self.norm == 'batchnorm':
        normalize = functools.partial(batch_norm, name='bn' + name[-1])
      else:
        normalize = lambda y: y
      if self.lrn_order == 'paper':
        x = pool(normalize(x))
      else:
        x = normalize(pool(x))
      x = sharding.constrain(x, 'grouped')  # LRN and pooling stay on each group's device
      self.sow('intermediates', name, x)
      return x

    x = images.astype(self.dtype)
    x = act(after_conv(conv(self._channels(96), 11, stride=4, input_layout='shared',
                            name='conv1')(x), 'conv1'))
    self.sow('intermediates', 'conv1_out', x)
    x = norm_and_pool(x, 'pool1')
    x = act(after_conv(conv(self._channels(256), 5, padding=2, bias_value=1.0,
                            name='conv2')(x), 'conv2'))
    self.sow('intermediates', 'conv2_out', x)
    x = norm_and_pool(x, 'pool2')
    # conv3: the first place the paper's GPUs exchange activations (section 3.2). A removed
    # layer is skipped: the next one takes its input, each group still its own half.
    if 'conv3' not in self.remove_convs:
      x = act(after_conv(conv(self._channels(384), 3, padding=1, input_layout='gathered',
                              name='conv3')(x), 'conv3'))
      self.sow('intermediates', 'conv3_out', x)
    if 'conv4' not in self.remove_convs:
      x = act(after_conv(conv(self._channels(384), 3, padding=1, bias_value=1.0,
                              name='conv4')(x), 'conv4'))
      self.sow('intermediates', 'conv4_out', x)
    if 'conv5' not in self.remove_convs:
      x = act(after_conv(conv(self._channels(256), 3, padding=1, bias_value=1.0,
                              name='conv5')(x), 'conv5'))
      self.sow('intermediates', 'conv5_out', x)
    x = sharding.constrain(pool(x), 'grouped')
    self.sow('intermediates', 'pool5', x)
    # Section 4.2: dropout 0.5 on the outputs of fc6 and fc7 (inverted dropout: kept units
    # are scaled by 1/(1-rate) in training, the modern equivalent of the paper's test-time
    # x0.5). Each FC layer sees all of its input (both GPUs' units, section 3.2) and computes
    # its own half of the outputs (split_dense.py). Dropout acts on the units-split array
    # below a layer, before the layer gathers it: its mask is a function of each unit's
    # global position, the unsplit net's mask, and nothing extra crosses the 'model' axis.
    dropped = {'paper': {'fc7': 'fc6_out_dropout', 'fc8': 'fc7_out_dropout'},
               'torchvision': {'fc6': 'fc6_in_dropout', 'fc7': 'fc7_in_dropout'}}
    input_role = 'grouped'  # pool5's maps, then the units of the layer below
    for name in ('fc6', 'fc7', 'fc8'):
      dropout_name = dropped[self.dropout_placement].get(name)
      input_scale = None
      if self.dropout > 0 and dropout_name:
        dropout = nn.Dropout(self.dropout, deterministic=not train, name=dropout_name)
        if input_role == 'units':
          x = dropout(x)
        elif train:
          # torchvision's dropout of pool5: the mask of the flat B x 9216 input, scaled by
          # 1/keep, applied inside fc6 to the gathered input.
          input_scale = dropout(jnp.ones((x.shape[1], split_dense.flat_features(x, input_role)),
                                         self.dtype))
      last = name == 'fc8'
      # fc8 computes in float32 whatever model.dtype: its input (fc7's units, gathered in
      # model.dtype) is cast up inside the layer, so bfloat16's 8-bit significand rounds neither
      # the 4096-term sums nor the logits the softmax, the loss and top-k read. HIGHEST keeps
      # it float32 where the backend's default precision would not (TPUs multiply float32 in
      # one bfloat16 pass, recent NVIDIA GPUs in TF32); fc8 is ~0.6 % of the net's FLOPs. Its
      # params are float32 in every dtype, so checkpoints are the same.
      x = split_dense.SplitDense(
          self.num_classes if last else self._channels(4096), input_role,
          kernel_init=kernel_init(self.init_scheme),
          bias_init=bias_init(self.init_scheme, 0.0 if last else 1.0),
          dtype=jnp.float32 if last else self.dtype,
          precision=jax.lax.Precision.HIGHEST if last else None, name=name)(x, input_scale)
      input_role = 'units'
      if not last:
        x = act(x)
        self.sow('intermediates', f'{name}_out', x)  # before dropout: what Figure 4 embeds
    # The logits (float32: fc8's dtype) are gathered whole for the softmax.
    return sharding.constrain(x, 'batch')


def from_config(model_config) -> AlexNet:
  """AlexNet from config.model, checking every switch's value. The keys are today's: a config
  stored by an earlier version is read through config_changes.upgrade first."""
  checks = [('activation', ACTIVATIONS), ('pool', POOLS), ('lrn_order', LRN_ORDERS),
            ('norm', NORMS), ('init', INITS), ('dtype', DTYPES), ('lrn_impl', lrn_lib.CHOICES),
            ('conv_impl', CONV_IMPLS), ('pool_impl', pooling.CHOICES),
            ('dropout_placement', DROPOUT_PLACEMENTS)]
  for key, allowed in checks:
    if model_config[key] not in allowed:
      raise UserError(f'config.model.{key}={model_config[key]!r}; choose one of '
                       f'{", ".join(allowed)}')
  if not 0.0 <= model_config['dropout'] < 1.0:
    raise UserError(f'config.model.dropout={model_config["dropout"]} must be in [0, 1)')
  removed = tuple(c.strip() for c in model_config['remove_convs'].split(',') if c.strip())
  bad = [c for c in removed if c not in REMOVABLE_CONVS]
  if bad:
    raise UserError(f'config.model.remove_convs={model_config["remove_convs"]!r}: '
                    f'{", ".join(bad)} cannot be removed; choose from '
                    f'{", ".join(REMOVABLE_CONVS)} (comma-separated)')
  if model_config['num_classes'] < 2:
    raise UserError(f'config.model.num_classes={model_config["num_classes"]} must be >= 2')
  return AlexNet(num_classes=model_config['num_classes'], norm=model_config['norm'],
                 lrn_order=model_config['lrn_order'],
                 pool=model_config['pool'],
                 dropout=model_config['dropout'],
                 dropout_placement=model_config['dropout_placement'],
                 activation=model_config['activation'],
                 dtype=DTYPES[model_config['dtype']], init_scheme=model_config['init'],
                 width=model_config['width'], lrn_impl=model_config['lrn_impl'],
                 conv_impl=model_config['conv_impl'], pool_impl=model_config['pool_impl'],
                 remove_convs=tuple(sorted(set(removed))))
