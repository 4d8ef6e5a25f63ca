r"""The paper's Figure 1 (section 3.1): ReLU against tanh, each at its fastest learning rate.

  python -m alexnet_jax.figure1 --workdir=runs/figure1  # this file is its default --config

The net and the regimes are in net.py and data.py beside this file, the rules in protocol.py.
For each regime and activation, the lr is chosen from lr_grid on tuning_seed (the one that
reaches `target` training error in the fewest steps without diverging); then both activations
train at their lr on every seed of `seeds` (never the tuning seed), and the command reports the
steps each needs, the ratio tanh / relu per seed and its geometric mean with a 95 % t-interval.

The folder is relative to the working directory. Variants (--config=alexnet_jax/figure1/
config.py:VARIANT):
- quick: a few images at 16 px, a tiny grid, a few steps: for tests;
- cifar10: the paper's data, CIFAR-10's 50,000 training images at their 32 px (no resize),
  the same net, protocol and grids. The data: --config.folder=DIR (CIFAR-10 as an image
  folder, DIR/train/<class>/<images>) or --config.dataset=cifar10 (TFDS's cifar10, prepared
  in --config.data_dir; never downloaded). The numbers and why:
  - max_steps 30,000 in both regimes (60 epochs of 500 steps at batch 100): in the paper tanh
    reaches 25 % after about 35 epochs (section 3.1, Figure 1); 60 leaves it room at an lr that
    is not its fastest;
  - the training error over a fixed subset of 10,000 training images, 1,000 per class
    (error_images; data.error_subset, seeded, the same for every run), every 500 steps (one
    epoch: a forward pass over a fifth of an epoch's images after the forward and backward
    passes over all of them, a small share of the time; docs/experiments.md gives the time);
    where a pass finds the error at or below 25 %, the step it was crossed is found on the
    params kept every 25 steps of that epoch (eval_refine (100, 25): at most 4 + 3 more passes,
    once a run). So the steps to 25 % are known to 25 steps, at most 2 % of any crossing from
    1,250 steps (2.5 epochs) on, where a pass every 25 steps would cost more than the training;
  - stuck_steps 5,000 (10 epochs at chance, as the photos' 100 steps are 10 of their epochs);
  - tuning seed 0, seeds 1, 2, 3 for the ratio (per regime: regimes.<name>.seeds; the modern
    regime is the one to cut to one seed if time is short, issue 26).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # The embedded photos (one split), at image_size px, num_images of them (0: all).
  config.folder = 'data/clothing10-128'
  config.dataset = 'folder'  # 'folder': config.folder; 'cifar10': TFDS's, from data_dir
  config.data_dir = ''  # TFDS's data_dir ('' for TFDS's default), for dataset 'cifar10'
  config.split = 'train'
  config.image_size = 32
  config.num_images = 1000
  # Plain SGD with momentum, no regularisation of any kind (no dropout, weight decay or
  # augmentation): the paper's Figure 1.
  config.batch_size = 100
  config.momentum = 0.9
  config.eval_every = 10  # K: the training error is a full pass over the set every K steps
  config.error_images = 0  # the pass over a fixed subset of this many (data.error_subset); 0: all
  config.eval_refine = ()  # finer spacings at which a crossing of the target is located
  config.target = 0.25  # the paper's level: 25 % training error
  config.stuck_steps = 100  # error at/above chance on every pass this long: not reached
  # The net's layers (net.py): 'fast' (gradients written for XLA:CPU), 'xla' (XLA's own) or
  # 'auto' ('fast' on the CPU; 'xla' elsewhere until tools/device_check.py has compared both
  # there; net.auto_impl).
  config.impl = 'auto'
  # An lr chosen at its grid's edge is not known to be the fastest: up to extend_grid more lrs
  # beyond it, along 1-3-10, on the tuning seed.
  config.extend_grid = 2
  config.tuning_seed = 0
  config.seeds = (1, 2, 3, 4)
  # Per regime: each activation's lr grid (1-3-10, tried from the middle out; the same grid for
  # both activations) and the steps a run may take. Standardised pixels ('modern') take
  # larger steps than raw ones.
  config.regimes = ml_collections.ConfigDict()
  for name, grid, max_steps in (('paper', (0.03, 0.01, 0.003, 0.001), 1500),
                                ('modern', (0.1, 0.03, 0.01, 0.003), 1000)):
    regime = ml_collections.ConfigDict()
    regime.lr_grid = ml_collections.ConfigDict({'relu': grid, 'tanh': grid})
    regime.max_steps = max_steps
    config.regimes[name] = regime
  if arg == 'quick':
    config.image_size = 16
    config.num_images = 20
    config.batch_size = 10
    config.eval_every = 2
    config.target = 0.5
    config.stuck_steps = 0
    config.extend_grid = 1
    config.seeds = (1, 2, 3)
    for regime in config.regimes.values():
      regime.lr_grid.relu = (0.1, 0.01)
      regime.lr_grid.tanh = (0.1, 0.01)
      regime.max_steps = 12
  elif arg == 'cifar10':
    config.folder = ''  # --config.folder=DIR, or --config.dataset=cifar10
    config.num_images = 0  # all 50,000
    config.eval_every = 500  # one epoch
    config.error_images = 10_000
    config.eval_refine = (100, 25)
    config.stuck_steps = 5_000
    config.seeds = (1, 2, 3)
    for regime in config.regimes.values():
      regime.max_steps = 30_000
      regime.seeds = config.seeds
  elif arg not in (None, ''):
    raise ValueError(f'unknown variant {arg!r}; choose: quick, cifar10')
  return config
