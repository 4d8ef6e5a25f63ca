r"""Plain-JAX yardstick: the 2012 AlexNet training step as anyone would first write it.

No flax, no custom gradients, no layout tricks: parameters are a dict of arrays, the grouped
convolutions are lax.conv_general_dilated with feature_group_count=2, LRN and max pooling are
lax.reduce_window, and jax.value_and_grad differentiates all of it the way XLA does by default.
The benchmark times build_step()'s step next to the project's own and reports the ratio.

The network (Krizhevsky et al. 2012, section 3.5 and figure 2), on 227x227x3 images:

  conv1  96 11x11/4 VALID -> ReLU -> LRN -> maxpool 3x3/2
  conv2 256  5x5 pad 2, 2 groups -> ReLU -> LRN -> maxpool 3x3/2
  conv3 384  3x3 pad 1           -> ReLU  (the one layer that crosses the GPUs)
  conv4 384  3x3 pad 1, 2 groups -> ReLU
  conv5 256  3x3 pad 1, 2 groups -> ReLU -> maxpool 3x3/2
  dropout 0.5 -> fc6 4096 ReLU -> dropout 0.5 -> fc7 4096 ReLU -> fc8 num_classes

trained with SGD, lr 0.01, momentum 0.9, weight decay 5e-4 added to the gradient (section 5).

The benchmark times it: python -m alexnet_jax.tools.benchmark (--yardsticks=plain_jax, the
default).
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax

# The paper's LRN constants (section 3.3); alpha is NOT divided by n.
LRN_DEPTH_RADIUS = 2  # n = 5 adjacent channels
LRN_BIAS = 2.0  # k
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

DROPOUT_RATE = 0.5  # section 4.2
WEIGHT_DECAY = 5e-4  # section 5
LEARNING_RATE = 0.01
MOMENTUM = 0.9
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# (name, out channels, kernel, stride, padding, groups, LRN after, max-pool after).
CONVS = (
    ('conv1', 96, 11, 4, 0, 1, True, True),
    ('conv2', 256, 5, 1, 2, 2, True, True),
    ('conv3', 384, 3, 1, 1, 1, False, False),
    ('conv4', 384, 3, 1, 1, 2, False, False),
    ('conv5', 256, 3, 1, 1, 2, False, True),
)
DENSES = (('fc6', 4096), ('fc7', 4096))  # then fc8, num_classes wide
# Section 5: "We initialized the neuron biases in the second, fourth, and fifth convolutional
# layers, as well as in the fully-connected hidden layers, with the constant 1"; 0 elsewhere.
UNIT_BIAS = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')


def feature_size(image_size: int = 227) -> int:
  """Width of the flattened conv5 output (6 * 6 * 256 = 9216 at 227 px)."""
  size = image_size
  for _, _, kernel, stride, padding, _, _, pool in CONVS:
    size = (size + 2 * padding - kernel) // stride + 1
    if pool:
      size = (size - 3) // 2 + 1
  if size < 1:
    raise ValueError(f'{image_size} px images are too small for AlexNet')
  return size * size * CONVS[-1][1]


def init_params(key, num_classes: int = 1000, dtype=jnp.float32, *,
                image_size: int = 227) -> dict:
  """{'conv1': {'kernel' HWIO, 'bias'}, ..., 'fc8': {'kernel' (in, out), 'bias'}}.

  Weights N(0, 0.01) and biases 1 or 0, as in section 5. image_size only sets fc6's width.
  """
  params = {}
  in_channels = 3
  shapes = []
  for name, out, kernel, _, _, groups, _, _ in CONVS:
    shapes.append((name, (kernel, kernel, in_channels // groups, out)))
    in_channels = out
  width = feature_size(image_size)
  for name, out in DENSES + (('fc8', num_classes),):
    shapes.append((name, (width, out)))
    width = out
  # One draw for all the weights, sliced per layer: each jax.random.normal call of a new shape
  # is its own XLA compilation, and eight of them took longer than the draw itself on a CPU.
  sizes = [math.prod(shape) for _, shape in shapes]
  flat = 0.01 * jax.random.normal(key, (sum(sizes),), dtype)
  offset = 0
  for (name, shape), size in zip(shapes, sizes):
    params[name] = {
        'kernel': flat[offset:offset + size].reshape(shape),
        'bias': jnp.full((shape[-1],), 1.0 if name in UNIT_BIAS else 0.0, dtype),
    }
    offset += size
  return params


def param_count(num_classes: int = 1000) -> int:
  """Parameters of the 227 px network; eval_shape runs init_params without allocating."""
  shapes = jax.eval_shape(functools.partial(init_params, num_classes=num_classes),
                          jax.random.PRNGKey(0))
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(shapes))


def local_response_norm(x: jax.Array, depth_radius: int = LRN_DEPTH_RADIUS, bias: float = LRN_BIAS,
        alpha: float = LRN_ALPHA, beta: float = LRN_BETA) -> jax.Array:
  """b = a / (k + alpha * sum_{n adjacent channels} a^2) ** beta over the last axis (NHWC).

  In float32 whatever x's dtype: a bf16 sum of squares loses the mantissa D ** -beta needs.
  Channels past either end count as zero, as in the paper's sum bounds.
  """
  x32 = x.astype(jnp.float32)
  window = 2 * depth_radius + 1
  sums = jax.lax.reduce_window(jnp.square(x32), 0.0, jax.lax.add,
                               (1,) * (x.ndim - 1) + (window,), (1,) * x.ndim,
                               [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
  return (x32 / (bias + alpha * sums) ** beta).astype(x.dtype)


def max_pool(x: jax.Array) -> jax.Array:
  """Overlapping 3x3 stride-2 max pooling (section 3.4), NHWC, no padding."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                               (1, 2, 2, 1), 'VALID')


def dropout(x: jax.Array, key) -> jax.Array:
  keep = jax.random.bernoulli(key, 1.0 - DROPOUT_RATE, x.shape)
  return jnp.where(keep, x / (1.0 - DROPOUT_RATE), 0).astype(x.dtype)


def forward(params: dict, images: jax.Array, *, lrn: bool, train: bool, dropout_key=None,
            dtype=jnp.float32) -> jax.Array:
  """Logits (float32) of NHWC images; compute in dtype, parameters cast at use."""
  x = images.astype(dtype)
  for name, _, _, stride, padding, groups, lrn_after, pool_after in CONVS:
    p = params[name]
    x = jax.lax.conv_general_dilated(
        x, p['kernel'].astype(dtype), (stride, stride), [(padding, padding)] * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)
    x = jax.nn.relu(x + p['bias'].astype(dtype))
    if lrn and lrn_after:
      x = local_response_norm(x)
    if pool_after:
      x = max_pool(x)
  x = x.reshape(x.shape[0], -1)  # (H, W, C) order, as fc6's kernel rows are laid out
  keys = jax.random.split(dropout_key, 2) if train else (None, None)
  for (name, _), key in zip(DENSES, keys):
    if train:
      x = dropout(x, key)
    x = jax.nn.relu(x @ params[name]['kernel'].astype(dtype) + params[name]['bias'].astype(dtype))
  logits = x @ params['fc8']['kernel'].astype(dtype) + params['fc8']['bias'].astype(dtype)
  return logits.astype(jnp.float32)


def optimizer() -> optax.GradientTransformation:
  # Section 5's update, v <- 0.9 v - 0.01 (g + 5e-4 w), as optax writes it.
  return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY),
                     optax.sgd(LEARNING_RATE, momentum=MOMENTUM))


def build_step(batch: int, dtype: str = 'float32', lrn: bool = True, image_size: int = 227,
               num_classes: int = 1000, seed: int = 0):
  """(step, carry, batches) for the benchmark's timing loop.

  step(params, opt_state, images, labels) -> (params, opt_state, loss) is jitted with the
  first two donated; carry = (params, opt_state) and batches (2 synthetic (images, labels)
  pairs) already live on the first device. The dropout key is fixed (masks cost the same
  whatever they are), so the carry is the params and the optimizer state alone.
  """
  compute_dtype = DTYPES[dtype]
  init_key, dropout_key, data_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  tx = optimizer()

  def loss_fn(params, images, labels):
    logits = forward(params, images, lrn=lrn, train=True, dropout_key=dropout_key,
                     dtype=compute_dtype)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # Init and data jitted: eager jax.random compiles primitive by primitive, seconds on a CPU.
  device = jax.devices()[0]
  params = jax.jit(init_params, static_argnums=1, static_argnames='image_size')(
      init_key, num_classes, image_size=image_size)
  carry = jax.device_put((params, tx.init(params)), device)

  @jax.jit
  def synthetic_batches(key):
    batches = []
    for batch_key in jax.random.split(key, 2):
      image_key, label_key = jax.random.split(batch_key)
      # Drawn flat and reshaped: XLA's CPU compiler took several times longer over a 4-D normal
      # than over a flat one (docs/performance.md).
      images = jax.random.normal(image_key, (batch * image_size * image_size * 3,),
                                 compute_dtype)
      batches.append((images.reshape(batch, image_size, image_size, 3),
                      jax.random.randint(label_key, (batch,), 0, num_classes)))
    return batches

  batches = [tuple(b) for b in jax.device_put(synthetic_batches(data_key), device)]
  return step, carry, batches
