"""The non-finite guard of train.train_step, which the benchmark can leave out to time its
cost (benchmark --nonfinite_guard=on,off; device_check): with it, a step whose loss is NaN
leaves params, momentum, the optimizer's counts and batch norm's statistics as they were, bit
for bit; without it (the benchmark's 'off' only), the NaN reaches them; on a finite batch both
give the same state up to rounding."""
import jax
import ml_collections
import numpy as np
import pytest

from alexnet_jax import optim
from alexnet_jax import train
from alexnet_jax.model import alexnet
from tests import helpers


def _optimizer(name, schedule):
  return optim.create_optimizer(ml_collections.ConfigDict(dict(
      name=name, lr=0.05 if name == 'sgd' else 1e-3, momentum=0.9, weight_decay=5e-4,
      schedule=schedule, step_epochs=1, warmup_epochs=2)), 1, 100)


def _steps(name, schedule):
  model = alexnet.AlexNet(**helpers.SMALL, norm='batchnorm_all', dropout=0.0)
  state = train.create_train_state(model, _optimizer(name, schedule), jax.random.PRNGKey(0),
                                   helpers.IMAGE)
  rng = np.random.default_rng(0)
  images = rng.uniform(-50, 50, (4, helpers.IMAGE, helpers.IMAGE, 3)).astype(np.float32)
  batch = {'image': images, 'label': np.array([1, 5, 0, 3], np.int32),
           'valid': np.ones(4, bool)}
  guarded = jax.jit(train.train_step)
  unguarded = jax.jit(lambda s, b: train.train_step(s, b, nonfinite_guard=False))
  return state, batch, guarded, unguarded


# The paper's SGD (guarded through its scalars: momentum 1, weight decay 0, a zero gradient)
# under a number lr and under a schedule with a warm-up; AdamW (guarded by selecting arrays).
@pytest.mark.parametrize('name,schedule', [('sgd', 'plateau'), ('sgd', 'step'),
                                           ('adamw', 'constant')])
def test_the_guard_keeps_a_nan_step_out_and_costs_no_value_on_a_finite_one(name, schedule):
  state, batch, guarded, unguarded = _steps(name, schedule)
  finite_a, _ = guarded(state, batch)
  finite_b, _ = unguarded(state, batch)
  # The same update up to XLA's rounding (the two programs fuse differently: values that
  # cancel to ~1e-12, the conv biases under batch norm, differ in their last bits).
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                  atol=1e-9)
  jax.tree.map(close, finite_a.params, finite_b.params)
  jax.tree.map(close, finite_a.opt_state, finite_b.opt_state)
  same = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(finite_a.params['fc8']['kernel'], state.params['fc8']['kernel'])

  bad = dict(batch, image=batch['image'].copy())
  bad['image'][0, 0, 0, 0] = np.nan
  kept, metrics = guarded(finite_a, bad)  # after a step: a momentum to keep
  assert float(metrics['nonfinite']) == 1.0
  jax.tree.map(same, kept.params, finite_a.params)
  jax.tree.map(same, kept.opt_state, finite_a.opt_state)
  jax.tree.map(same, kept.batch_stats, finite_a.batch_stats)
  spoiled, _ = unguarded(finite_a, bad)
  assert not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(spoiled.params))
