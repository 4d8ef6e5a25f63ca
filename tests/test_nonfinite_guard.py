"""The non-finite guard of train.train_step, which the benchmark can leave out to time its
cost (benchmark --nonfinite_guard=on,off; device_check): with it, a step whose loss is NaN
leaves params, momentum and batch norm's statistics as they were; without it (the benchmark's
'off' only), the NaN reaches them; on a finite batch both give the same state."""
import jax
import numpy as np

from alexnet_jax import train
from alexnet_jax.model import alexnet
from tests import helpers


def _steps():
  model = alexnet.AlexNet(**helpers.SMALL, norm='batchnorm_all', dropout=0.0)
  state = train.create_train_state(model, helpers.sgd(), jax.random.PRNGKey(0), helpers.IMAGE)
  rng = np.random.default_rng(0)
  images = rng.uniform(-50, 50, (4, helpers.IMAGE, helpers.IMAGE, 3)).astype(np.float32)
  batch = {'image': images, 'label': np.array([1, 5, 0, 3], np.int32),
           'valid': np.ones(4, bool)}
  guarded = jax.jit(train.train_step)
  unguarded = jax.jit(lambda s, b: train.train_step(s, b, nonfinite_guard=False))
  return state, batch, guarded, unguarded


def test_the_guard_keeps_a_nan_step_out_and_costs_no_value_on_a_finite_one():
  state, batch, guarded, unguarded = _steps()
  finite_a, _ = guarded(state, batch)
  finite_b, _ = unguarded(state, batch)
  same = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  jax.tree.map(same, finite_a.params, finite_b.params)
  jax.tree.map(same, finite_a.opt_state, finite_b.opt_state)

  bad = dict(batch, image=batch['image'].copy())
  bad['image'][0, 0, 0, 0] = np.nan
  kept, metrics = guarded(state, bad)
  assert float(metrics['nonfinite']) == 1.0
  jax.tree.map(same, kept.params, state.params)
  jax.tree.map(same, kept.opt_state, state.opt_state)
  jax.tree.map(same, kept.batch_stats, state.batch_stats)
  spoiled, _ = unguarded(state, bad)
  assert not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(spoiled.params))
