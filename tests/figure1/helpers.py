"""What the Figure 1 tests share: the image size of their photos and a run's Setup."""
from alexnet_jax.figure1 import train

SIZE = 16


def setup(**changes) -> train.Setup:
  base = dict(folder='data/clothing10-128', split='train', image_size=SIZE, num_images=20,
              batch_size=10, momentum=0.9, eval_every=2, target=0.5, stuck_steps=0)
  return train.Setup(**dict(base, **changes))
