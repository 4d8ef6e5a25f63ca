"""preprocessing.decode_image's fast JPEG path (simplejpeg) against PIL, the independent truth.

simplejpeg and PIL both wrap libjpeg-turbo; builds may differ in IDCT / upsampling rounding, so
real photos are compared with a tolerance (mean abs diff < 0.5 level, max <= 8 levels; measured
0 and 0 with simplejpeg 1.9.0 and Pillow 13.0.0). Anything simplejpeg does not handle exactly
like PIL (CMYK, PNG, a JPEG it rejects as corrupt) must come out exactly as PIL decodes it.
"""
import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import preprocessing as pp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL_JPEGS = sorted(glob.glob(os.path.join(ROOT, 'data/clothing10-128/val/*/*.jpg')))


def pil_rgb(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as img:
    return np.asarray(img.convert('RGB'))


def encode(img: Image.Image, fmt: str = 'JPEG', **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def photo(seed=0, shape=(40, 50, 3)) -> Image.Image:
  """A smooth random image (JPEG-friendly), RGB."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (shape[0] // 5, shape[1] // 5, 3), dtype=np.uint8)
  return Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)


@pytest.fixture
def no_pil(monkeypatch):
  """Makes the PIL path fail, so a passing decode proves the fast path took the file."""
  def fail(data):
    raise AssertionError('PIL path used')
  monkeypatch.setattr(pp, '_decode_with_pil', fail)


def test_simplejpeg_is_installed():
  assert pp.simplejpeg is not None, 'requirements.txt installs simplejpeg'


def test_fast_path_matches_pil_on_real_photos(no_pil):
  diffs, worst = [], 0
  for path in VAL_JPEGS:
    data = open(path, 'rb').read()
    fast, ref = pp.decode_image(data), pil_rgb(data)
    assert fast.dtype == np.uint8 and fast.shape == ref.shape and fast.shape[-1] == 3
    d = np.abs(fast.astype(np.int16) - ref)
    diffs.append(d.mean())
    worst = max(worst, int(d.max()))
  assert len(diffs) == 240
  assert np.mean(diffs) < 0.5 and worst <= 8, (np.mean(diffs), worst)


def test_fast_path_takes_grayscale_and_progressive_jpegs(no_pil):
  gray = photo().convert('L')
  img = pp.decode_image(encode(gray, quality=90))
  assert img.shape == (40, 50, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img[..., 0], img[..., 1])
  np.testing.assert_array_equal(img[..., 0], img[..., 2])
  assert np.abs(img.astype(np.int16) - pil_rgb(encode(gray, quality=90))).max() <= 1
  data = encode(photo(1), quality=90, progressive=True)
  assert np.abs(pp.decode_image(data).astype(np.int16) - pil_rgb(data)).max() <= 1


@pytest.mark.parametrize('case', ['cmyk_jpeg', 'png', 'junk_before_marker'])
def test_fallback_gives_exactly_pil(case):
  if case == 'cmyk_jpeg':
    data = encode(photo(2).convert('CMYK'), quality=90)  # simplejpeg's CMYK->RGB differs by 1
  elif case == 'png':
    data = encode(photo(3), 'PNG')
  else:  # libjpeg warns "extraneous bytes before marker"; simplejpeg (strict) rejects it
    data = encode(photo(4), quality=90)
    i = data.find(b'\xff\xdb')
    data = data[:i] + b'\x00\x00\x00' + data[i:]
  img = pp.decode_image(data)
  assert img.shape == (40, 50, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img, pil_rgb(data))


def test_without_simplejpeg_the_same_pixels(monkeypatch):
  data = open(VAL_JPEGS[0], 'rb').read()
  fast = pp.decode_image(data)
  monkeypatch.setattr(pp, 'simplejpeg', None)
  np.testing.assert_array_equal(pp.decode_image(data), pil_rgb(data))
  assert np.abs(fast.astype(np.int16) - pp.decode_image(data)).max() <= 8


def test_truncated_jpeg_still_raises_value_error():
  data = open(VAL_JPEGS[0], 'rb').read()
  with pytest.raises(ValueError, match='cannot decode image'):
    pp.decode_image(data[:len(data) // 2])
