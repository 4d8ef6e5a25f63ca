r"""The paper's Figure 1: ReLU against tanh, the same net and budget, training error per step.

  python launch.py --config=configs/sweeps/figure1.py --workdir=runs/figure1
  python -m alexnet_jax.tools.figures relu_tanh --sweep_dir=runs/figure1 --out=figure1.png

The paper trained a 4-layer net on CIFAR-10 with no regularisation and saw ReLUs reach 25 %
training error six times faster than tanh. Here: the full AlexNet on the embedded data, dropout
off (no regularisation, as in the figure), 3 epochs each; the figure command prints the ratio of
steps each needs to reach the lowest training error both reach.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.sweep = ml_collections.ConfigDict()
  config.sweep.base = 'configs/alexnet.py:demo'
  config.sweep.seeds = (0,)
  config.sweep.common = 'train.num_epochs=3,model.dropout=0.0,train.log_every_steps=1'
  config.sweep.variants = ('relu:', 'tanh:model.activation=tanh')
  config.sweep.baseline = 'relu'
  if arg == 'quick':
    config.sweep.base = 'configs/alexnet.py:tiny'
    config.sweep.common = 'train.num_steps=6,model.dropout=0.0,train.log_every_steps=1'
  elif arg not in (None, ''):
    raise ValueError(f'unknown variant {arg!r}; choose: quick')
  return config
