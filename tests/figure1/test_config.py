"""alexnet_jax/figure1/config.py: the cifar10 variant's numbers are the ones its docstring gives
(CIFAR-10's 50,000 images at 32 px, 60 epochs, a pass over 10,000 of them every epoch located to
25 steps, the same net, grids and protocol), and the photos' config is what it was."""
from alexnet_jax.figure1 import config as figure1_config
from alexnet_jax.figure1 import train

CIFAR10_TRAIN_IMAGES = 50_000


def test_the_cifar10_variant_is_the_photos_protocol_on_cifar10_for_longer():
  photos, cifar = figure1_config.get_config(), figure1_config.get_config('cifar10')
  epoch = CIFAR10_TRAIN_IMAGES // cifar.batch_size
  assert (cifar.num_images, cifar.image_size, cifar.folder, cifar.dataset) == (0, 32, '', 'folder')
  assert cifar.batch_size == 100 and epoch == 500 and cifar.eval_every == epoch
  assert cifar.error_images == 10_000 and tuple(cifar.eval_refine) == (100, 25)
  assert cifar.stuck_steps == 10 * epoch
  assert cifar.tuning_seed == 0 and tuple(cifar.seeds) == (1, 2, 3)
  for name in ('paper', 'modern'):
    regime = cifar.regimes[name]
    assert regime.max_steps == 60 * epoch == 30_000
    assert tuple(regime.seeds) == (1, 2, 3)
    assert regime.lr_grid.to_dict() == photos.regimes[name].lr_grid.to_dict()  # 1-3-10
    train.check_setup(train.setup_of(cifar), regime.max_steps)
  for key in ('momentum', 'target', 'extend_grid', 'split'):
    assert cifar[key] == photos[key], key
  # The crossing located to 25 steps: at most 2 % of any crossing from 1,250 steps on.
  assert cifar.eval_refine[-1] <= 0.02 * 1_250


def test_the_photos_setup_is_stored_as_before():
  # Runs stored before CIFAR-10 hold this setup: they must still be found, not refused.
  assert train.setup_of(figure1_config.get_config()).record() == {
      'folder': 'data/clothing10-128', 'split': 'train', 'image_size': 32, 'num_images': 1000,
      'batch_size': 100, 'momentum': 0.9, 'eval_every': 10, 'target': 0.25, 'stuck_steps': 100}
  assert train.setup_of(figure1_config.get_config('cifar10')).record()['eval_refine'] == [100, 25]
