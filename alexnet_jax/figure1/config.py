r"""The paper's Figure 1 (section 3.1): ReLU against tanh, each at its fastest learning rate.

  python -m alexnet_jax.figure1 --workdir=runs/figure1  # this file is its default --config

The net and the regimes are in net.py and data.py beside this file, the rules in protocol.py.
For each regime and activation, the lr is chosen from lr_grid on tuning_seed (the one that
reaches `target` training error in the fewest steps without diverging); then both activations
train at their lr on every seed of `seeds` (never the tuning seed), and the command reports the
steps each needs, the ratio tanh / relu per seed and its geometric mean with a 95 % t-interval.

Variants: quick (a few images at 16 px, a tiny grid, a few steps: for tests),
--config=alexnet_jax/figure1/config.py:quick. The folder is relative to the working directory.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # The embedded photos (one split), at image_size px, num_images of them (0: all).
  config.folder = 'data/clothing10-128'
  config.split = 'train'
  config.image_size = 32
  config.num_images = 1000
  # Plain SGD with momentum, no regularisation of any kind (no dropout, weight decay or
  # augmentation): the paper's Figure 1.
  config.batch_size = 100
  config.momentum = 0.9
  config.eval_every = 10  # K: the training error is a full pass over the set every K steps
  config.target = 0.25  # the paper's level: 25 % training error
  config.stuck_steps = 100  # error at/above chance on every pass this long: not reached
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
  elif arg not in (None, ''):
    raise ValueError(f'unknown variant {arg!r}; choose: quick')
  return config
