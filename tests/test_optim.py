"""alexnet_jax/optim.py: the paper's SGD update (section 5) against its formula in float64, also
across a learning-rate change, and the learning-rate rules (plateau, step, cosine, linear
scaling with the batch, hyperparameters changed on resume) against their values by hand."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import optim
from alexnet_jax.errors import UserError


def opt_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      name='sgd', lr=0.01, momentum=0.9, weight_decay=5e-4, schedule='plateau',
      plateau_factor=0.1, plateau_patience=1, plateau_max_decays=3, step_epochs=30,
      warmup_epochs=0.0, lr_scaling='none'))
  c.update(overrides)
  return c


def test_paper_update_including_a_learning_rate_change():
  rng = np.random.default_rng(0)
  w0 = {'a': rng.standard_normal((4, 3)).astype(np.float32),
        'b': rng.standard_normal((5,)).astype(np.float32)}
  grads = [jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), w0)
           for _ in range(6)]
  lrs = [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001]  # two /10 decays, as the plateau rule does

  tx = optim.create_optimizer(opt_config(), steps_per_epoch=10, total_steps=100)
  params = jax.tree.map(jnp.asarray, w0)
  state = tx.init(params)
  # The paper, section 5, in float64: v <- 0.9 v - 0.0005 lr w - lr g;  w <- w + v.
  w = jax.tree.map(lambda x: x.astype(np.float64), w0)
  v = jax.tree.map(np.zeros_like, w)
  for g, lr in zip(grads, lrs):
    state = optim.with_learning_rate(state, lr)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    v = jax.tree.map(lambda v_, w_, g_: 0.9 * v_ - 0.0005 * lr * w_ - lr * g_, v, w, g)
    w = jax.tree.map(lambda w_, v_: w_ + v_, w, v)
    for ours, ref in zip(jax.tree.leaves(params), jax.tree.leaves(w)):
      np.testing.assert_allclose(np.asarray(ours, np.float64), ref, rtol=2e-6, atol=1e-7)


def test_optax_sgd_form_differs_from_the_paper_after_a_decay():
  # Why optim.paper_sgd scales before the momentum trace: optax.sgd rescales the accumulated
  # momentum by the new lr, the paper does not. Same grads, lr 0.1 then 0.01.
  w = jnp.zeros(1)
  g = jnp.ones(1)
  ours = optax.inject_hyperparams(optim.paper_sgd)(learning_rate=0.1, weight_decay=0.0)
  theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  s1, s2 = ours.init(w), theirs.init(w)
  u1, s1 = ours.update(g, s1, w)
  u2, s2 = theirs.update(g, s2, w)
  np.testing.assert_allclose(u1, u2)  # equal while lr is constant
  s1 = optim.with_learning_rate(s1, 0.01)
  s2 = optim.with_learning_rate(s2, 0.01)
  u1, _ = ours.update(g, s1, w)
  u2, _ = theirs.update(g, s2, w)
  np.testing.assert_allclose(u1, -(0.9 * 0.1 + 0.01), rtol=1e-6)  # paper: 0.9 v - lr g
  np.testing.assert_allclose(u2, -0.01 * (0.9 + 1.0), rtol=1e-6)  # optax: -lr (0.9 m + g)


def test_plateau_rule_divides_by_ten_at_most_three_times():
  rule = optim.PlateauRule(factor=0.1, patience=1, max_decays=3)
  errors = [0.9, 0.8, 0.8, 0.7, 0.75, 0.7, 0.71, 0.72, 0.73, 0.74]
  factors = [rule.update(e) for e in errors]
  assert factors == [1, 1, 0.1, 1, 0.1, 0.1, 1, 1, 1, 1]
  assert rule.decays == 3
  assert optim.PlateauRule.from_dict(rule.to_dict()) == rule
  rule = optim.PlateauRule(patience=2)
  assert [rule.update(e) for e in [0.5, 0.6, 0.6, 0.6]] == [1, 1, 0.1, 1]


def test_step_and_cosine_schedules():
  sched = optim.learning_rate_schedule(opt_config(schedule='step', step_epochs=2),
                                       steps_per_epoch=5, total_steps=100)
  assert [float(sched(s)) for s in (0, 9, 10, 19, 20)] == pytest.approx(
      [0.01, 0.01, 0.001, 0.001, 0.0001])
  sched = optim.learning_rate_schedule(opt_config(schedule='cosine', warmup_epochs=1),
                                       steps_per_epoch=10, total_steps=110)
  assert float(sched(0)) == 0.0
  assert float(sched(10)) == pytest.approx(0.01)
  assert float(sched(60)) == pytest.approx(0.005, rel=1e-4)  # half way down the cosine
  assert float(sched(110)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_drives_the_injected_learning_rate():
  tx = optim.create_optimizer(opt_config(schedule='step', step_epochs=1), 2, 10)
  w = jnp.zeros(2)
  state = tx.init(w)
  seen = []
  for _ in range(5):
    _, state = tx.update(jnp.ones(2), state, w)
    seen.append(float(optim.current_learning_rate(state)))
  assert seen == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_linear_lr_scaling_with_the_global_batch():
  assert optim.base_learning_rate(opt_config(lr_scaling='linear'), 512) == pytest.approx(0.04)
  assert optim.base_learning_rate(opt_config(lr_scaling='none'), 512) == 0.01
  tx = optim.create_optimizer(opt_config(lr_scaling='linear', schedule='constant'), 1, 1, 256)
  _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
  assert float(optim.current_learning_rate(state)) == pytest.approx(0.02)


@pytest.mark.parametrize('override,message', [
    (dict(lr=-0.1), 'lr=-0.1 must be > 0'),
    (dict(schedule='linear'), "schedule='linear'"),
    (dict(name='rmsprop'), "name='rmsprop'"),
    (dict(lr_scaling='sqrt'), "lr_scaling='sqrt'"),
])
def test_bad_optimizer_config_is_one_clear_error(override, message):
  with pytest.raises(UserError, match=message):
    optim.create_optimizer(opt_config(**override), 10, 100)


def test_resume_sets_new_hyperparams_and_keeps_plateau_decays():
  """After two plateau decays (lr 0.01 -> 0.0001), a resume that changes nothing of the lr keeps
  0.0001; one that sets optimizer.lr makes it the lr; momentum and weight decay are written
  into the state (the update uses the state's values, not the constants it was built with)."""
  params = {'w': jnp.ones((3,))}
  tx = optim.create_optimizer(opt_config(), 10, 100)
  state = optim.with_learning_rate(tx.init(params), 0.0001)
  assert optim.resumed_hyperparams(opt_config(), {'optimizer.plateau_patience'}) == {}
  values = optim.resumed_hyperparams(opt_config(lr=0.02, momentum=0.5),
                                     {'optimizer.lr', 'optimizer.momentum'})
  assert values == {'learning_rate': 0.02, 'momentum': 0.5}
  new = optim.with_hyperparams(state, values)
  assert float(optim.current_learning_rate(new)) == pytest.approx(0.02)
  # In force: one update from zero velocity is -lr (g + wd w), then momentum 0.5 on the next.
  g = {'w': jnp.full((3,), 2.0)}
  u1, new = tx.update(g, new, params)
  np.testing.assert_allclose(u1['w'], -0.02 * (2.0 + 5e-4), rtol=1e-6)
  u2, _ = tx.update(g, new, params)
  np.testing.assert_allclose(u2['w'], 0.5 * u1['w'] - 0.02 * (2.0 + 5e-4), rtol=1e-6)
  # The plateau rule: the config's settings, the saved counters.
  saved = optim.PlateauRule(patience=1, max_decays=3, best_error=0.4, evals_since_best=0,
                            decays=2).to_dict()
  rule = optim.PlateauRule(patience=3, max_decays=5).with_counters_of(saved)
  assert (rule.patience, rule.max_decays, rule.decays, rule.best_error) == (3, 5, 2, 0.4)


def test_schedule_change_on_resume_keeps_count_and_momentum():
  """plateau (a number lr) -> cosine (a schedule): other inject_hyperparams structures; the
  restored count and momentum trace move over, and the cosine lr is that of the global step."""
  params = {'w': jnp.ones((3,))}
  old_tx = optim.create_optimizer(opt_config(), 10, 100)
  state = old_tx.init(params)
  for _ in range(5):
    _, state = old_tx.update({'w': jnp.ones((3,))}, state, params)
  cosine = opt_config(schedule='cosine')
  new_tx = optim.create_optimizer(cosine, 10, 100)
  moved = optim.transplant(state, new_tx.init(params))
  assert jax.tree.structure(moved) == jax.tree.structure(new_tx.init(params))
  assert int(moved.count) == 5
  np.testing.assert_array_equal(moved.inner_state[2].trace['w'], state.inner_state[2].trace['w'])
  _, after = new_tx.update({'w': jnp.ones((3,))}, moved, params)
  expected = optax.cosine_decay_schedule(0.01, 100)(5)
  assert float(optim.current_learning_rate(after)) == pytest.approx(float(expected), rel=1e-6)
