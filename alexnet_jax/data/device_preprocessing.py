"""The paper's augmentation and test crops on the accelerator, in JAX under jit.

With config.input.augment_on='device' the host only decodes (and resizes unprepared data) to
the uint8 R x R patch of paper section 2, and sends those bytes: 196,608 per 256 x 256 image
against 618,348 for a float32 227 crop. Everything after that runs here, inside the jitted step:

  training (section 4.1): a random S x S crop, a horizontal flip with probability 1/2, PCA
    lighting (alpha ~ N(0, lighting_std) per image), the mean image subtracted (section 2; the
    window of the mean image under the crop), and the optional division by the std;
  evaluation: the mean subtracted, then the centre crop or the ten patches (four corners and
    centre, and their reflections), and the optional division by the std.

Each example's draws come from a key derived from (seed, epoch, the example's index in that
epoch's order), the host's position of the record in its endless shuffled sequence: the
augmentation does not depend on timing, worker or process counts, and a resumed run draws what
the uninterrupted one would have. The host path (preprocessing.py) draws from Grain's
per-record numpy generator instead, so the two paths give different (equally distributed)
crops; for the same draws their results are equal (tests/data/test_device_preprocessing.py).
"""
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.data import augment_on
from alexnet_jax.data import preprocessing
from alexnet_jax.data.preprocessing import PreprocessParams

@struct.dataclass
class Augmentation:
  """What the device transforms need: the statistics as arrays (passed into the jitted step
  as an argument, not baked into its program), the switches and sizes as static fields."""
  mean: jax.Array  # (R, R, 3) mean image or (3,) channel mean, 0..255 scale
  std: jax.Array | None  # (3,), or None: no division
  eigval: jax.Array  # (3,)
  eigvec: jax.Array  # (3, 3), columns are the eigenvectors
  image_size: int = struct.field(pytree_node=False)
  random_crop: bool = struct.field(pytree_node=False, default=True)
  random_flip: bool = struct.field(pytree_node=False, default=True)
  lighting_std: float = struct.field(pytree_node=False, default=0.1)
  seed: int = struct.field(pytree_node=False, default=0)

  @classmethod
  def of(cls, params: PreprocessParams, seed: int) -> 'Augmentation':
    f32 = lambda a: None if a is None else np.asarray(a, np.float32)  # placed by the caller
    return cls(mean=f32(params.mean), std=f32(params.std), eigval=f32(params.eigval),
               eigvec=f32(params.eigvec), image_size=params.image_size,
               random_crop=params.random_crop, random_flip=params.random_flip,
               lighting_std=float(params.lighting_std), seed=int(seed) % 2**32)


def of_run(config, params: PreprocessParams, on_device: bool | None = None) -> Augmentation | None:
  """The Augmentation a run's jitted steps take when the augmentation is on the device, else
  None (the Grain workers augment). on_device: the run's augment_on.on_device(config), which
  its loaders were given too (None: resolved here the same way)."""
  on_device = augment_on.on_device(config) if on_device is None else on_device
  return Augmentation.of(params, config.seed) if on_device else None


@struct.dataclass
class Draws:
  """One batch's random draws, per example: crop offsets, flip, PCA lighting's alphas."""
  y: jax.Array  # (B,) int32
  x: jax.Array  # (B,) int32
  flip: jax.Array  # (B,) bool
  alpha: jax.Array  # (B, 3) float32, already times lighting_std


def example_keys(seed: int, epoch: jax.Array, index: jax.Array) -> jax.Array:
  """One key per example from (seed, epoch, index in that epoch's order)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda e, i: jax.random.fold_in(jax.random.fold_in(base, e), i))(epoch, index)


def draw(aug: Augmentation, resize_size: int, epoch: jax.Array, index: jax.Array) -> Draws:
  """The draws of a batch of examples (epoch and index: (B,) int32)."""
  s, r = aug.image_size, resize_size

  def one(key):
    crop_key, flip_key, light_key = jax.random.split(key, 3)
    if aug.random_crop:
      y, x = jax.random.randint(crop_key, (2,), 0, r - s + 1)
    else:  # center_crop's window, as preprocessing.train_transform with crop=False
      y = x = jnp.asarray((r - s) // 2, jnp.int32)
    flip = (jax.random.bernoulli(flip_key) if aug.random_flip else jnp.asarray(False))
    alpha = (aug.lighting_std * jax.random.normal(light_key, (3,), jnp.float32)
             if aug.lighting_std > 0 else jnp.zeros((3,), jnp.float32))
    return Draws(y=y.astype(jnp.int32), x=x.astype(jnp.int32), flip=flip, alpha=alpha)

  return jax.vmap(one)(example_keys(aug.seed, epoch, index))


def lighting_shift(aug: Augmentation, alpha: jax.Array) -> jax.Array:
  """Paper 4.1: eigvec @ (alpha * eigval) per example, (B, 3) in 0..255 pixel units."""
  return jnp.einsum('cj,bj->bc', aug.eigvec, alpha * aug.eigval,
                    precision=jax.lax.Precision.HIGHEST)


def augment(aug: Augmentation, images: jax.Array, draws: Draws) -> jax.Array:
  """uint8 (B, R, R, 3) -> float32 (B, S, S, 3) for given draws, in preprocessing's order:
  (crop - mean's crop) + lighting shift, / std, flipped last (every step is per pixel)."""
  s = aug.image_size
  shift = lighting_shift(aug, draws.alpha) if aug.lighting_std > 0 else None

  def one(img, y, x, flip, rgb):
    window = jax.lax.dynamic_slice(img, (y, x, 0), (s, s, 3)).astype(jnp.float32)
    mean = (jax.lax.dynamic_slice(aug.mean, (y, x, 0), (s, s, 3)) if aug.mean.ndim == 3
            else aug.mean)
    out = window - mean
    if rgb is not None:
      out = out + rgb
    if aug.std is not None:
      out = out / aug.std
    return jnp.where(flip, out[:, ::-1], out)

  return jax.vmap(one)(images, draws.y, draws.x, draws.flip, shift)  # None: no leaves to map


def train_images(aug: Augmentation, images: jax.Array, epoch: jax.Array,
                 index: jax.Array) -> jax.Array:
  """The training batch the net sees: uint8 (B, R, R, 3) -> float32 (B, S, S, 3)."""
  return augment(aug, images, draw(aug, images.shape[1], epoch, index))


def eval_images(aug: Augmentation, images: jax.Array, ten_crop: bool) -> jax.Array:
  """uint8 (B, R, R, 3) -> float32 (B, S, S, 3), or (B, 10, S, S, 3) with ten_crop: the
  mean subtracted, the centre crop or the ten patches (paper 4.1), / std; as
  preprocessing.eval_transform."""
  s = aug.image_size
  r_h, r_w = images.shape[1:3]
  x = images.astype(jnp.float32) - aug.mean
  if ten_crop:
    crops = [x[:, y:y + s, c:c + s] for y, c in preprocessing.ten_crop_offsets(r_h, r_w, s)]
    crops += [crop[:, :, ::-1] for crop in crops]
    x = jnp.stack(crops, axis=1)
  else:
    y, c = (r_h - s) // 2, (r_w - s) // 2
    x = x[:, y:y + s, c:c + s]
  if aug.std is not None:
    x = x / aug.std
  return x
