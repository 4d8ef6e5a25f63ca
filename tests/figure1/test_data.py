"""alexnet_jax/figure1/data.py: the images a balanced subset at the size, each regime's input
against its definition, and the batch order a function of the seed alone (the relu and tanh runs
of a seed see the same batches); the fixed subset the training error is measured on, the
loaders' progress, and TFDS's cifar10 (on records tfds.testing.mock_data generates) read into the
same Images, or one error line when it is not there."""
import os

import numpy as np
import pytest

from alexnet_jax.data import preprocessing
from alexnet_jax.errors import UserError
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


# --- CIFAR-10: the error subset, the loaders' progress, TFDS ---


def test_the_error_subset_is_fixed_balanced_and_drawn_from_each_class():
  labels = np.repeat(np.arange(10), 50)[np.random.default_rng(1).permutation(500)]
  subset = data.error_subset(labels, 10, 100)
  np.testing.assert_array_equal(subset, data.error_subset(labels, 10, 100))  # no run seed in it
  assert len(set(subset)) == 100 and list(subset) == sorted(subset)
  np.testing.assert_array_equal(np.bincount(labels[subset]), [10] * 10)
  # Not the first images of each class: a draw (10 of each class's 50 at random).
  assert not all(np.array_equal(np.sort(subset[labels[subset] == c]),
                                np.nonzero(labels == c)[0][:10]) for c in range(10))
  assert data.error_subset(labels, 10, 0) is None and data.error_subset(labels, 10, 500) is None


def test_load_images_reports_its_progress(monkeypatch):
  monkeypatch.setattr(data, 'PROGRESS_S', 0.0)
  lines = []
  images = data.load_images(helpers.DATA, 'train', SIZE, num_images=10, log=lines.append)
  assert len(images.labels) == 10 and len(lines) == 10
  assert lines[-1].startswith(f'decoding {helpers.DATA}/train: 10 / 10 images (')


def test_the_tfds_source_gives_the_records_as_images(tmp_path):
  import tensorflow_datasets as tfds  # a requirement, imported here for its start-up time
  data_dir = str(tmp_path / 'tfds')
  with tfds.testing.mock_data(num_examples=30, data_dir=data_dir):  # generated records
    images = data.load('cifar10', '', data_dir, 'train', 32)
    few = data.load('cifar10', '', data_dir, 'train', 32, num_images=10)
    records = tfds.data_source('cifar10', split='train', data_dir=data_dir)
    want = [records[i] for i in range(30)]
    names = tuple(records.dataset_info.features['label'].names)
  assert images.pixels.shape == (30, 32, 32, 3) and images.pixels.dtype == np.uint8
  np.testing.assert_array_equal(images.pixels, np.stack([r['image'] for r in want]))
  np.testing.assert_array_equal(images.labels, [int(r['label']) for r in want])
  assert images.class_names == names and len(names) == 10
  keep = data.balanced_subset(images.labels, 10, 10)  # the first of each class present
  np.testing.assert_array_equal(few.labels, images.labels[keep])
  np.testing.assert_array_equal(few.pixels, images.pixels[keep])


def test_missing_data_is_one_error_line(tmp_path):
  with pytest.raises(UserError, match='not prepared in .*prepare_data --dataset=cifar10') as e:
    data.load('cifar10', '', str(tmp_path), 'train', 32)
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match='config.folder is empty'):
    data.load('folder', '', '', 'train', 32)
  with pytest.raises(UserError, match='unknown config.dataset'):
    data.load('mnist', '', '', 'train', 32)
