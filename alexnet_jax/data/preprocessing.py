"""The paper's image preprocessing as small pure numpy/PIL functions (Krizhevsky et al. 2012).

Section 2: rescale the shorter side to 256, take the central 256x256 patch, subtract the mean
activity over the training set from each pixel. Section 4.1: random 224 (here configurable, 227
by default) crops with horizontal reflections, PCA colour augmentation; at test time the softmax
is averaged over ten patches (four corners + centre, and their reflections).

One API in two layers. The reference: one named function per step of the paper, in the paper's
order (decode_image, resize_shorter_side, center_crop, subtract_mean, random_crop, random_flip,
pca_lighting, standardize, ten_crops); read these to see what the pipeline does. What the loaders
call: train_transform, the fast path, which fuses the training steps (crop first, whole rows at a
time) and is tested equal to the reference chain, bit for bit, for the same random draws; and
eval_transform, which is the reference steps composed (centre crop or ten crops).

Everything here runs inside Grain worker processes: numpy, PIL and simplejpeg only, never jax.
Pixel values are in the 0..255 scale throughout.
"""
import dataclasses
import io

import numpy as np
from PIL import Image

try:
  import simplejpeg  # pylint: disable=g-import-not-at-top
except ImportError:  # requirements.txt installs it; without it JPEGs decode (same pixels) via PIL
  simplejpeg = None

# Well-known ImageNet values (fb.resnet.torch, 0..1 scale) times 255. eigval is 255 x the
# eigenvalues of the RGB covariance measured in 0..1 units, so `eigvec @ (alpha * eigval)` is a
# shift in 0..255 pixel units of the size the paper's recipe gives (see dataset_stats.py).
IMAGENET_EIGVAL = np.array([55.46, 4.794, 1.148], np.float64)
# Columns are the eigenvectors (R, G, B components), in eigval's order.
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float64)
IMAGENET_MEAN = np.array([123.68, 116.78, 103.94], np.float64)
IMAGENET_STD = np.array([58.393, 57.12, 57.375], np.float64)

_RESAMPLE = Image.Resampling.BILINEAR  # Pillow's filters widen on downscaling: antialiased.


@dataclasses.dataclass(frozen=True)
class PreprocessParams:
  """What the transforms need, picklable into the Grain worker processes."""
  resize_size: int
  image_size: int
  mean: np.ndarray  # (R, R, 3) mean image or (3,) channel mean, 0..255 scale.
  std: np.ndarray | None  # divide by it after the mean (config.input.standardize), or None.
  random_flip: bool
  lighting_std: float  # 0 = no PCA lighting.
  eigval: np.ndarray
  eigvec: np.ndarray
  random_crop: bool = True  # False: the centre crop in training too (crop ablation).


# JPEG colour spaces that simplejpeg decodes to the same RGB as PIL (CMYK/YCCK differ by 1 level).
_FAST_JPEG_COLORSPACES = ('YCbCr', 'Gray')


# libjpeg's scaled IDCT: a JPEG decodes at 1/2, 1/4 or 1/8 of its size for a fraction of the
# work (the SIMD-accelerated scales, and the ones Pillow's draft mode uses).
_JPEG_REDUCTIONS = (8, 4, 2)
# A reduced decode keeps at least twice the target on the shorter side, so that the resize after
# it still averages over 2+ pixels (Pillow's reducing_gap=2, Image.thumbnail's default): a
# smaller pixel difference to a full decode than the bare target gives (docs/input_pipeline.md).
REDUCING_GAP = 2
# ... and at least this many pixels: a JPEG under 512 px decodes hardly faster at 1/2 than in
# full (docs/input_pipeline.md), so small photos keep their exact full decode at any target (the
# embedded 128 px ones among them).
REDUCED_DECODE_MIN_SIDE = 256


def decode_image(data: bytes, min_size: int = 0) -> np.ndarray:
  """Encoded image bytes (JPEG, PNG, ...) -> uint8 (H, W, 3) RGB.

  JPEGs go through simplejpeg: the same libjpeg-turbo as PIL and the same pixels, without PIL's
  per-image overhead (measured: docs/input_pipeline.md). Other formats, CMYK JPEGs and any
  file it rejects go through PIL, at full size.

  min_size > 0: a JPEG much larger than that decodes at reduced scale (see jpeg_reduction), so
  the result's shorter side is >= min_size but may be less than the file's.
  """
  return decode_image_reduced(data, min_size)[0]


def decode_image_reduced(data: bytes, min_size: int) -> tuple[np.ndarray, int]:
  """decode_image(data, min_size) and the reduction it was decoded at (1, 2, 4 or 8)."""
  size = _fast_jpeg_size(data)
  if size is not None:
    reduction = _reduction(size, min_size)
    fast = _decode_jpeg_fast(data, size=size, reduction=reduction)
    if fast is not None:
      return fast, reduction
  return _decode_with_pil(data), 1  # whatever simplejpeg does not take: the full decode.


def jpeg_reduction(data: bytes, min_size: int) -> int:
  """The largest of 8, 4, 2 (else 1) by which decode_image(data, min_size) scales this JPEG down
  as it decodes: its shorter side // reduction stays >= REDUCING_GAP * min_size and >=
  REDUCED_DECODE_MIN_SIDE (Pillow's draft rule, with that size).

  libjpeg computes the reduced image from the low-frequency DCT coefficients of each 8 x 8
  block, a low-pass filter ahead of the resize's own; after resize_shorter_side to min_size the
  pixels differ from a full decode's by a fraction of a level on average (measured:
  docs/input_pipeline.md). 1 for min_size <= 0 and for anything decode_image gives to PIL (not
  a JPEG, CMYK, a header simplejpeg rejects), which decodes at full size.
  """
  size = _fast_jpeg_size(data)
  return 1 if size is None else _reduction(size, min_size)


def _reduction(size: tuple[int, int], min_size: int) -> int:
  if min_size <= 0:
    return 1
  keep = max(REDUCING_GAP * min_size, REDUCED_DECODE_MIN_SIDE)
  return next((r for r in _JPEG_REDUCTIONS if min(size) >= r * keep), 1)


def _fast_jpeg_size(data: bytes) -> tuple[int, int] | None:
  """(height, width) of a JPEG simplejpeg decodes to RGB, or None where PIL should decide (not
  a JPEG, CMYK, a header simplejpeg rejects)."""
  if simplejpeg is None or not simplejpeg.is_jpeg(data):
    return None
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
  except ValueError:
    return None
  return (height, width) if colorspace in _FAST_JPEG_COLORSPACES else None


def _decode_jpeg_fast(data: bytes, buffer: np.ndarray | None = None, *,
                      size: tuple[int, int] | None = None,
                      reduction: int = 1) -> np.ndarray | None:
  """simplejpeg's RGB decode (into `buffer`, where given; at 1/reduction of the size, known from
  the header as `size` where given), or None where PIL should decide."""
  size = size or _fast_jpeg_size(data)
  if size is None:
    return None
  # simplejpeg takes the smallest libjpeg scale whose output is at least min_height x
  # min_width: the size at exactly 1/reduction (rounded up, as libjpeg does) selects it.
  min_height, min_width = (0, 0)
  if reduction > 1:
    min_height, min_width = -(-size[0] // reduction), -(-size[1] // reduction)
  try:
    return simplejpeg.decode_jpeg(data, colorspace='RGB', buffer=buffer, min_height=min_height,
                                  min_width=min_width)
  except ValueError:  # strict about recoverable errors that PIL tolerates; PIL raises the others.
    return None


def _decode_with_pil(data: bytes) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      # Grayscale, palette, CMYK and alpha images exist in ImageNet and in user folders; the net
      # takes 3 channels (alpha is dropped).
      if img.mode != 'RGB':
        img = img.convert('RGB')
      return np.asarray(img, dtype=np.uint8)
  except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, ...).
    raise ValueError(
        f'cannot decode image ({len(data)} bytes, starting {bytes(data[:8])!r}): {e}') from e


def as_rgb(img: np.ndarray) -> np.ndarray:
  """An already decoded uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3)."""
  img = np.asarray(img)
  if img.dtype != np.uint8:
    raise ValueError(f'expected a uint8 image, got dtype {img.dtype}')
  if img.ndim == 2:
    img = img[:, :, None]
  if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
    raise ValueError(f'expected an (H, W, 1|3|4) image, got shape {img.shape}')
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  return img[:, :, :3]


def resize_shorter_side(img: np.ndarray, size: int) -> np.ndarray:
  """Rescales so the shorter side is exactly `size` (paper section 2), keeping aspect ratio.

  The longer side becomes round(longer * size / shorter). uint8 in, uint8 out.
  """
  h, w = img.shape[:2]
  if min(h, w) <= 0:
    raise ValueError(f'empty image of shape {img.shape}')
  if h <= w:
    new_h, new_w = size, max(size, int(round(w * size / h)))
  else:
    new_h, new_w = max(size, int(round(h * size / w))), size
  if (new_h, new_w) == (h, w):
    return img
  return np.asarray(Image.fromarray(img).resize((new_w, new_h), _RESAMPLE))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """The central size x size patch; offsets (H - size) // 2 and (W - size) // 2."""
  h, w = img.shape[:2]
  if h < size or w < size:
    raise ValueError(f'cannot crop {size}x{size} from an image of shape {img.shape}')
  y, x = (h - size) // 2, (w - size) // 2
  return img[y:y + size, x:x + size]


def _crop_offsets(shape, size: int, rng: np.random.Generator) -> tuple[int, int]:
  h, w = shape[:2]
  if h < size or w < size:
    raise ValueError(f'cannot crop {size}x{size} from an image of shape {tuple(shape)}')
  return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random size x size patch (paper 4.1: random 224x224 patches of the 256x256)."""
  y, x = _crop_offsets(img.shape, size, rng)
  return img[y:y + size, x:x + size]


def random_flip(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Horizontal reflection with probability 1/2 (paper 4.1)."""
  return img[:, ::-1] if rng.random() < 0.5 else img


def pca_shift(rng: np.random.Generator, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC,
              std: float = 0.1) -> np.ndarray:
  """The RGB vector eigvec @ (alpha * eigval), alpha ~ N(0, std) (3 draws), as float32."""
  alpha = rng.normal(0.0, std, size=3)
  rgb = np.asarray(eigvec, np.float64) @ (alpha * np.asarray(eigval, np.float64))
  return rgb.astype(np.float32)


def pca_lighting(img: np.ndarray, rng: np.random.Generator, eigval=IMAGENET_EIGVAL,
                 eigvec=IMAGENET_EIGVEC, std: float = 0.1) -> np.ndarray:
  """Paper 4.1 PCA colour augmentation: adds [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T to every pixel.

  alpha_i ~ N(0, std) is drawn once per image (per presentation); p_i are the columns of eigvec.
  Float image in, float32 out.
  """
  return (img + pca_shift(rng, eigval, eigvec, std)).astype(np.float32, copy=False)


def subtract_mean(img: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """Subtracts a per-pixel mean image (H, W, 3) (paper section 2) or a per-channel mean (3,)."""
  mean = np.asarray(mean, np.float32)
  if mean.ndim == 3 and mean.shape != img.shape:
    raise ValueError(f'mean image of shape {mean.shape} does not match image {img.shape}')
  return img.astype(np.float32) - mean


def standardize(img: np.ndarray, std: np.ndarray) -> np.ndarray:
  """Divides by the per-channel std (not in the paper; config.input.standardize)."""
  return (img / np.asarray(std, np.float32)).astype(np.float32, copy=False)


def ten_crop_offsets(h: int, w: int, size: int) -> list[tuple[int, int]]:
  """(y, x) of paper 4.1's five test patches: the four corners, then the centre."""
  return [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
          ((h - size) // 2, (w - size) // 2)]


def ten_crops(img: np.ndarray, size: int) -> np.ndarray:
  """Paper 4.1 test-time patches: four corners + centre, then their reflections -> (10, s, s, C)."""
  h, w = img.shape[:2]
  if h < size or w < size:
    raise ValueError(f'cannot crop {size}x{size} from an image of shape {img.shape}')
  crops = [img[y:y + size, x:x + size] for y, x in ten_crop_offsets(h, w, size)]
  crops += [c[:, ::-1] for c in crops]
  return np.stack(crops)


# --- Composed pipelines (what the Grain transforms call). ---


def decode_and_resize(image, resize_size: int) -> np.ndarray:
  """Encoded bytes or a decoded uint8 array -> the central resize x resize uint8 patch (sec. 2)."""
  if isinstance(image, (bytes, bytearray, memoryview)):
    img = decode_image(bytes(image), min_size=resize_size)
  else:
    img = as_rgb(image)
  return center_crop(resize_shorter_side(img, resize_size), resize_size)


def decode_and_resize_into(image, out: np.ndarray) -> None:
  """decode_and_resize(image, out.shape[0]) written into `out` (uint8 R x R x 3). A JPEG that
  is already R x R (a prepared copy's central patch) is decoded by simplejpeg straight into
  `out`, with no copy; anything else goes through decode_and_resize."""
  size = out.shape[0]
  if (isinstance(image, (bytes, bytearray, memoryview))
      and _fast_jpeg_size(image) == (size, size)
      and _decode_jpeg_fast(image, buffer=out) is not None):
    return
  out[...] = decode_and_resize(image, size)


def _per_row(values, width: int) -> np.ndarray:
  """A per-channel (3,) vector repeated along a row of `width` pixels: (width * 3,) float32.

  Broadcasting a (3,) operand makes numpy's inner loop 3 elements long (measured far slower than
  a whole row: docs/input_pipeline.md); against a (S, S * 3) view of the image the loop runs
  over the row instead.
  """
  return np.tile(np.broadcast_to(np.asarray(values, np.float32), (3,)), width)


def _flip_pixels(img: np.ndarray) -> np.ndarray:
  """img[:, ::-1] of a C-contiguous (H, W, C) float32 array, copied as one C*4-byte item per
  pixel (numpy's copy of the reversed view moves one float at a time)."""
  pixel = np.dtype((np.void, img.shape[-1] * img.itemsize))
  out = np.empty_like(img)
  out.view(pixel)[...] = img.view(pixel)[:, ::-1]
  return out


def train_transform(img: np.ndarray, rng: np.random.Generator, *, image_size: int,
                    mean: np.ndarray, std: np.ndarray | None = None, flip: bool = True,
                    lighting_std: float = 0.1, eigval=IMAGENET_EIGVAL,
                    eigvec=IMAGENET_EIGVEC, crop: bool = True) -> np.ndarray:
  """uint8 (R, R, 3) -> float32 (S, S, 3): mean, random crop + flip, PCA lighting, optional /std.

  Same result, bit for bit, as subtract_mean (the whole R x R mean image, paper section 2) ->
  random_crop -> random_flip -> pca_lighting -> standardize with the same rng draws (tested), but
  it crops the image and the mean image first, so the float work is on S x S pixels only, runs
  the per-channel steps over whole rows, and flips the result last (every step is per pixel, so
  flipping commutes with them). docs/input_pipeline.md has its cost per image.
  lighting_std <= 0 turns the PCA augmentation off; crop=False takes center_crop's window
  instead of a random one (and draws no offsets).
  """
  mean = np.asarray(mean, np.float32)
  if mean.ndim == 3 and mean.shape != img.shape:
    raise ValueError(f'mean image of shape {mean.shape} does not match image {img.shape}')
  s = image_size
  if crop:
    y, x = _crop_offsets(img.shape, s, rng)
  else:
    y, x = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2  # as center_crop
  window = (slice(y, y + s), slice(x, x + s))
  flipped = flip and rng.random() < 0.5
  # Rows of S * 3 values: a new float32 array, then in place.
  if mean.ndim == 3:
    out = np.subtract(img[window], mean[window], dtype=np.float32).reshape(s, s * 3)
  else:
    out = np.subtract(img[window].reshape(s, s * 3), _per_row(mean, s), dtype=np.float32)
  if lighting_std > 0:
    out += _per_row(pca_shift(rng, eigval, eigvec, lighting_std), s)
  if std is not None:
    out /= _per_row(std, s)
  out = out.reshape(s, s, 3)
  return _flip_pixels(out) if flipped else out


def eval_transform(img: np.ndarray, *, image_size: int, mean: np.ndarray,
                   std: np.ndarray | None = None, ten_crop: bool = False) -> np.ndarray:
  """uint8 (R, R, 3) -> float32 (S, S, 3), or (10, S, S, 3) with ten_crop (paper 4.1)."""
  x = subtract_mean(img, mean)
  x = ten_crops(x, image_size) if ten_crop else center_crop(x, image_size)
  if std is not None:
    x = standardize(x, std)
  return np.ascontiguousarray(x, dtype=np.float32)
