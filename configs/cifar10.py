r"""cuda-convnet's CIFAR-10 net and recipe: the paper's LRN claim (section 3.3, footnote 3).

  python launch.py --config=configs/cifar10.py --workdir=runs/cifar10/lrn
  python launch.py --config=configs/cifar10.py --workdir=runs/cifar10/no_lrn \
      --config.model.norm=none
  python launch.py --config=configs/cifar10.py:folder --workdir=runs/cifar10/lrn \
      --config.dataset.folder=DIR   # an image folder: DIR/train, DIR/val (the test images)
  python launch.py --config=configs/sweeps/cifar10_lrn.py --workdir=runs/cifar10_lrn  # 6 runs

The paper: "A four-layer CNN achieved a 13% test error rate without normalization and 11% with
normalization", the net and recipe of cuda-convnet's layers-conv-local-11pct.cfg and
layer-params-conv-local-11pct.cfg (13pct without the norms). Which version of those files, and
why: alexnet_jax/model/cuda_convnet.py. Every number below is from them (cuda-convnet
`layer-params-conv-local-11pct.cfg` at commit 3878e8f) or from cuda-convnet's code:

  net     model.arch='cuda_convnet_cifar10'; model.norm 'lrn' (the 11 % net) or 'none' (13 %)
  data    TFDS 'cifar10' (splits 'train' and 'test': the 10,000 test images are the eval split),
          or an image folder in the same layout (train/ and val/, the test images in val/)
  input   the 32x32 images as they are (resize_size 32: no resize, no crop to a square);
          random 24x24 crops (offsets 0-8) and flips in training; the per-pixel mean image of
          the whole training set (50,000 images), cropped alike; no std scaling, no PCA
          lighting (convdata.py). Evaluation: eval.ten_crop, the softmax averaged over the
          centre and four corner 24x24 crops and their mirrors, cuda-convnet's
          --multiview-test views.
  update  SGD momentum 0.9; epsW 0.001 on weights, epsB 0.002 on biases (bias_lr_mult 2), as
          rates on the mean gradient of the batch of 128 (src/layer.cu scales the summed
          gradient by eps / numCases; our loss is the batch mean); weight decay wc 0.004 on
          local3, local4 and fc10, 0 on conv1 and conv2 (decay_mults), none on biases
          (bias_decay_mult 0): inc <- 0.9 inc - wc epsW w - epsW grad; w <- w + inc.
  lr      cuda-convnet's stages: lr, then lr/10 for 10 epochs, then lr/100 for 10 epochs (the
          file's methodology after its ~450 epochs at lr): 'step' at the epochs
          optimizer.step_at_epochs.

The budget (cuda-convnet trained ~470 epochs for 11 %; not affordable here): 45 epochs, lr
0.001 for 35, 0.0001 until 40, 0.00001 until 45 (the file's two last stages, 10 epochs each,
shortened to 5), the same for both nets. Its size: the sweep's 6 runs (LRN on and off x 3 seeds)
take T = 3 x 45 epochs x 50,000 images x (1 / v_lrn + 1 / v_none) plus three 10-view
evaluations per run (every 15 epochs, 100,000 forward passes of the 10,000 test images each),
v being each net's training speed (images per second) on this project's 2-core machine. With
the speeds docs/experiments.md gives (dated there), 45 epochs is the longest budget in whole
5-epoch stages whose T stays under 6.5 hours, so that the sweep finishes overnight in the
background.

Variants (after ':'):
  (none)  the recipe above on TFDS cifar10 (python -m alexnet_jax.tools.prepare_data
          --dataset=cifar10 prepares it once, where there is internet).
  folder  the same on an image folder, config.dataset.folder: dataset.name='folder' and the
          eval split 'val' (the same as --config.dataset.name=folder
          --config.dataset.eval_split=val on the default).
  tiny    for tests: the same net and update on a folder (config.dataset.folder) of a few
          generated 32x32 images, batch 8, a handful of steps.
"""
import importlib.util
import os

import ml_collections

EPOCHS = 45
STEP_AT_EPOCHS = '35,40'  # lr / 10 at epoch 35, lr / 100 at epoch 40
EVAL_EVERY_EPOCHS = 15.0


def _alexnet_config() -> ml_collections.ConfigDict:
  """configs/alexnet.py's get_config(): every key, with its comment there."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'alexnet.py')
  spec = importlib.util.spec_from_file_location('config_file_configs_alexnet', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _alexnet_config()

  config.dataset.name = 'cifar10'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'  # TFDS cifar10's splits are train and test

  config.input.resize_size = 32  # the images' own size: resize and centre crop do nothing
  config.input.image_size = 24
  config.input.random_crop = True
  config.input.random_flip = True
  config.input.pca_lighting = False
  config.input.mean = 'pixel'
  config.input.standardize = False
  config.input.stats_images = 50000  # the mean image over the whole training set

  config.model.arch = 'cuda_convnet_cifar10'
  config.model.num_classes = 10
  config.model.norm = 'lrn'
  config.model.dropout = 0.0

  config.optimizer.name = 'sgd'
  config.optimizer.lr = 0.001  # epsW
  config.optimizer.momentum = 0.9  # momW, momB
  config.optimizer.weight_decay = 0.004  # wc of local3, local4, fc10
  config.optimizer.decay_mults = 'conv1=0,conv2=0'  # wc=0.00 on the convolutions
  config.optimizer.bias_lr_mult = 2.0  # epsB = 0.002 = 2 epsW
  config.optimizer.bias_decay_mult = 0.0  # biases: no wc
  config.optimizer.lr_scaling = 'none'
  config.optimizer.schedule = 'step'
  config.optimizer.step_at_epochs = STEP_AT_EPOCHS
  config.optimizer.warmup_epochs = 0.0

  config.train.batch_size = 128
  config.train.num_epochs = EPOCHS
  config.train.eval_every_epochs = EVAL_EVERY_EPOCHS
  config.train.checkpoint_every_steps = 390  # an epoch: 50,000 // 128 steps
  config.train.keep_checkpoints = 2
  config.train.log_every_steps = 100

  config.eval.batch_size = 128
  config.eval.ten_crop = True

  if arg in (None, ''):
    pass
  elif arg == 'folder':
    _folder(config)
  elif arg == 'tiny':
    _folder(config)
    _tiny(config)
  else:
    raise ValueError(f'unknown config variant {arg!r}; choose: folder, tiny')
  return config


def _folder(config):
  config.dataset.name = 'folder'  # config.dataset.folder: DIR/train and DIR/val
  config.dataset.eval_split = 'val'


def _tiny(config):
  config.input.workers = 0
  config.input.stats_images = 64
  config.train.batch_size = 8
  config.train.num_epochs = 1
  config.train.eval_every_epochs = 100.0  # at the end only
  config.train.checkpoint_every_steps = 1000
  config.train.log_every_steps = 1
  config.eval.batch_size = 8
