"""Figure 1's data: the images held in memory, each regime's input, and the batch order.

Today one source: an image folder split (the embedded photos), each image's shorter side
resized to image_size px, then the centre crop. Another source (CIFAR-10, issue 26) is another
loader that returns Images; balanced_subset, regime_inputs and batch_order work on any.
"""
import dataclasses

import numpy as np

from alexnet_jax.data import preprocessing
from alexnet_jax.data import sources
from alexnet_jax.figure1 import net


@dataclasses.dataclass(frozen=True)
class Images:
  pixels: np.ndarray  # N x S x S x 3 uint8
  labels: np.ndarray  # N int32
  class_names: tuple[str, ...]


def balanced_subset(labels: np.ndarray, num_classes: int, num_images: int) -> np.ndarray:
  """The indices of the first num_images // num_classes (at least 1) images of each class, class
  by class."""
  per_class = max(1, num_images // num_classes)
  return np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in range(num_classes)])


def load_images(folder: str, split: str, image_size: int, num_images: int = 0) -> Images:
  """A folder split (root/split/<class>/<images>, as ImageFolderSource lists it) at image_size:
  the shorter side resized, then the centre crop. num_images > 0 keeps a balanced subset (the
  first num_images // classes files of each class)."""
  source = sources.ImageFolderSource(folder, split)
  paths, labels = np.array(source.paths), np.array(source.labels, np.int32)
  if num_images:
    keep = balanced_subset(labels, len(source.class_names), num_images)
    paths, labels = paths[keep], labels[keep]
  pixels = []
  for path in paths:
    with open(path, 'rb') as f:
      img = preprocessing.decode_image(f.read())
    pixels.append(preprocessing.center_crop(preprocessing.resize_shorter_side(img, image_size),
                                            image_size))
  return Images(np.stack(pixels), labels, tuple(source.class_names))


def regime_inputs(pixels: np.ndarray, regime: str) -> np.ndarray:
  """The net's float32 input: raw pixels minus the per-pixel mean image ('paper', section 2),
  then over the per-channel std of that difference ('modern')."""
  x = pixels.astype(np.float64)
  x = x - x.mean(axis=0)
  if regime == 'modern':
    x = x / x.std(axis=(0, 1, 2))
  elif regime != 'paper':
    raise ValueError(f'unknown regime {regime!r}; choose: {", ".join(net.REGIMES)}')
  return x.astype(np.float32)


def batch_order(seed: int, num_images: int, batch_size: int, num_steps: int) -> np.ndarray:
  """num_steps x batch_size indices: a fresh permutation from the seed every epoch (the last
  incomplete batch of an epoch dropped). A function of the seed alone: the relu and tanh runs
  of a seed see the same batches."""
  per_epoch = num_images // batch_size
  if per_epoch < 1:
    raise ValueError(f'batch {batch_size} is larger than the {num_images} images')
  rng = np.random.default_rng(seed)
  epochs = -(-num_steps // per_epoch)
  order = [rng.permutation(num_images)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
           for _ in range(epochs)]
  return np.concatenate(order)[:num_steps].astype(np.int32)
