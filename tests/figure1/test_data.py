"""alexnet_jax/figure1/data.py: the images a balanced subset at the size, each regime's input
against its definition, and the batch order a function of the seed alone (the relu and tanh runs
of a seed see the same batches)."""
import os

import numpy as np

from alexnet_jax.data import preprocessing
from alexnet_jax.figure1 import data
from tests import helpers
from tests.figure1.helpers import SIZE


def test_load_images_is_a_balanced_subset_at_the_size(images):
  assert images.pixels.shape == (20, SIZE, SIZE, 3) and images.pixels.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(images.labels), [2] * 10)
  first = sorted(os.listdir(os.path.join(helpers.DATA, 'train', helpers.CLASSES[0])))[0]
  with open(os.path.join(helpers.DATA, 'train', helpers.CLASSES[0], first), 'rb') as f:
    img = preprocessing.decode_image(f.read())
  np.testing.assert_array_equal(images.pixels[0], preprocessing.center_crop(
      preprocessing.resize_shorter_side(img, SIZE), SIZE))


def test_paper_input_is_raw_pixels_minus_the_mean_image(images):
  raw = images.pixels.astype(np.float64)
  mean_image = raw.mean(axis=0)
  np.testing.assert_allclose(data.regime_inputs(images.pixels, 'paper'), raw - mean_image,
                             atol=1e-4)
  modern = data.regime_inputs(images.pixels, 'modern')
  centred = raw - mean_image
  np.testing.assert_allclose(modern, centred / centred.std(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(modern.std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_the_order_is_a_permutation_per_epoch_fixed_by_the_seed():
  # An epoch of 20 images in batches of 10 is a permutation.
  order = data.batch_order(5, 20, 10, 6)
  np.testing.assert_array_equal(order, data.batch_order(5, 20, 10, 6))
  assert order.shape == (6, 10)
  for epoch in range(3):
    assert sorted(order[2 * epoch:2 * epoch + 2].ravel()) == list(range(20))
  assert not np.array_equal(order, data.batch_order(6, 20, 10, 6))
