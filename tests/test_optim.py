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
      plateau_factor=0.1, plateau_patience=5, plateau_threshold=0.01, plateau_min_epochs=10,
      plateau_max_decays=3, step_epochs=30,
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


def _replay(rule, errors, first_epoch=1, chance_error=None):
  """The epochs (one evaluation per epoch) at which `rule` decays over the error curve;
  errors >= chance_error count as at chance."""
  decays = []
  for i, error in enumerate(errors):
    epoch = first_epoch + i
    chance = chance_error is not None and error >= chance_error
    if rule.update(error, epoch, chance).factor != 1.0:
      decays.append(epoch)
  return decays


def paper_rule(**overrides):
  """The rule with configs/alexnet.py's defaults."""
  from tests.helpers import alexnet_config  # pylint: disable=g-import-not-at-top
  c = alexnet_config.get_config().optimizer
  settings = dict(factor=c.plateau_factor, patience=c.plateau_patience,
                  threshold=c.plateau_threshold, min_epochs=c.plateau_min_epochs,
                  max_decays=c.plateau_max_decays)
  settings.update(overrides)
  return optim.PlateauRule(**settings)


def test_plateau_rule_makes_no_decay_while_at_chance():
  # ImageNet's paper init: 99.9 % error for 5 evaluations (past min_epochs), then falling.
  flat = [0.999, 0.9991, 0.999, 0.9992, 0.999]
  falling = list(np.linspace(0.95, 0.5, 10))
  rule = paper_rule(min_epochs=0)
  chance = 1 - optim.chance_top1_bound(1000, 50000)
  assert _replay(rule, flat + falling, chance_error=chance) == []
  assert rule.best_error == pytest.approx(0.5)
  # The old rule (patience 1, any non-improvement) spent all three decays on the flat part.
  old = optim.PlateauRule(patience=1, threshold=0.0, min_epochs=0)
  assert _replay(old, flat + falling) == [2, 3, 4]


def test_chance_bound_is_three_binomial_deviations_above_one_over_classes():
  assert optim.chance_top1_bound(1000, 50000) == pytest.approx(
      0.001 + 3 * (0.001 * 0.999 / 50000) ** 0.5)
  assert optim.chance_top1_bound(10, 240) == pytest.approx(0.1 + 3 * (0.09 / 240) ** 0.5)
  assert optim.at_chance(0.001, 1000, 50000) and not optim.at_chance(0.01, 1000, 50000)


def test_plateau_rule_one_decay_for_a_flat_part_between_one_and_two_windows():
  rule = paper_rule()
  patience = rule.patience
  falling = list(np.linspace(0.9, 0.45, 30))  # epochs 1-30
  flat = [0.45 + 0.001 * (i % 2) for i in range(patience + patience // 2 + 1)]  # < 2 windows
  again = list(np.linspace(0.40, 0.30, 10))
  decays = _replay(rule, falling + flat + again)
  assert decays == [30 + patience]  # exactly one, inside the flat part
  assert 30 < decays[0] <= 30 + len(flat)
  assert rule.decays == 1


def test_plateau_rule_no_decay_on_a_noisy_curve_that_still_improves():
  rng = np.random.default_rng(0)
  epochs = np.arange(1, 61)
  trend = 0.3 + 0.6 * np.exp(-epochs / 20)  # 0.87 -> 0.34, still falling at epoch 60
  errors = trend + rng.normal(0, 0.01, epochs.size)
  assert _replay(paper_rule(), list(errors)) == []
  # The old rule decayed on the noise: any evaluation that was not a strict new best.
  assert len(_replay(optim.PlateauRule(patience=1, threshold=0.0), list(errors))) == 3


def test_plateau_rule_waits_for_min_epochs_and_stops_at_max_decays():
  rule = paper_rule(patience=2, min_epochs=10, max_decays=3)
  errors = [0.5] * 40
  # The first evaluation is the best; from then on two without a gain make a plateau, but
  # none decays before epoch 10, and there are three decays in all.
  assert _replay(rule, errors) == [10, 12, 14]
  assert rule.decays == 3


def test_plateau_rule_decay_reason_names_the_errors_it_compared():
  rule = optim.PlateauRule(patience=2, threshold=0.01)
  rule.update(0.40, 1)
  rule.update(0.399, 2)
  decision = rule.update(0.41, 3)
  assert decision.factor == 0.1
  assert decision.reason == ('validation error 0.4100 at epoch 3.0: no error 1 % below the '
                             'best 0.4000 (epoch 1.0) in the last 2 evaluations '
                             '(0.3990, 0.4100)')


def test_plateau_rule_state_round_trips_and_old_checkpoints_restore():
  rule = paper_rule()
  _replay(rule, [0.9, 0.8, 0.8, 0.79, 0.8])
  assert optim.PlateauRule.from_dict(rule.to_dict()) == rule
  # meta['plateau'] as checkpoints before the window and the chance test wrote it.
  old = {'factor': 0.1, 'patience': 1, 'max_decays': 3, 'best_error': 0.42,
         'evals_since_best': 0, 'decays': 2}
  resumed = paper_rule().with_counters_of(old)
  assert (resumed.decays, resumed.best_error, resumed.window) == (2, 0.42, [])
  assert resumed.patience == paper_rule().patience  # the config's settings
  assert optim.PlateauRule.from_dict({**old, 'best_error': None}).best_error == float('inf')


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


def lrs_used(tx, updates: int) -> list[float]:
  """The lr each of `updates` updates of tx used (optim.current_learning_rate after each)."""
  w = jnp.zeros(2)
  state = tx.init(w)
  seen = []
  for _ in range(updates):
    _, state = tx.update(jnp.ones(2), state, w)
    seen.append(float(optim.current_learning_rate(state)))
  return seen


def test_schedule_drives_the_injected_learning_rate():
  tx = optim.create_optimizer(opt_config(schedule='step', step_epochs=1), 2, 10)
  seen = lrs_used(tx, 5)
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


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
@pytest.mark.parametrize('schedule', ['plateau', 'constant', 'step'])
def test_warmup_ramps_every_schedule(name, schedule):
  """warmup_epochs=1 at 4 steps per epoch: the lr of updates 0-3 is lr x 1/4, 2/4, 3/4, 1,
  then the schedule's own (step: /10 after 2 epochs)."""
  tx = optim.create_optimizer(opt_config(name=name, schedule=schedule, warmup_epochs=1,
                                         step_epochs=2), steps_per_epoch=4, total_steps=100)
  seen = lrs_used(tx, 10)
  after = [0.01] * 4 + ([0.001, 0.001] if schedule == 'step' else [0.01, 0.01])
  assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.01] + after, rel=1e-6)


def test_warmup_scales_the_paper_update_before_the_momentum():
  """Under warm-up the velocity accumulates lr_t-scaled steps, as the paper's v does with a
  smaller lr: v1 = -f0 lr g, v2 = 0.9 v1 - f1 lr g (float64 by hand)."""
  tx = optim.create_optimizer(opt_config(weight_decay=0.0, warmup_epochs=1), 4, 100)
  w = jnp.zeros(1)
  state = tx.init(w)
  u1, state = tx.update(jnp.ones(1), state, w)
  u2, state = tx.update(jnp.ones(1), state, w)
  np.testing.assert_allclose(u1, -0.25 * 0.01, rtol=1e-6)
  np.testing.assert_allclose(u2, 0.9 * -0.25 * 0.01 - 0.5 * 0.01, rtol=1e-6)


def test_plateau_decay_during_warmup_scales_the_level_and_the_ramp_goes_on():
  tx = optim.create_optimizer(opt_config(warmup_epochs=1), 4, 100)
  w = jnp.zeros(1)
  _, state = tx.update(jnp.ones(1), tx.init(w), w)
  state = optim.with_learning_rate(state, 0.001)  # a decay of the level
  _, state = tx.update(jnp.ones(1), state, w)
  assert float(optim.learning_rate_level(state)) == pytest.approx(0.001)
  assert float(optim.current_learning_rate(state)) == pytest.approx(0.001 * 2 / 4)


def test_warmup_that_cannot_apply_is_one_error():
  with pytest.raises(UserError, match=r'warmup_epochs=10.0 \(40 steps\) is as long as the run'):
    optim.create_optimizer(opt_config(warmup_epochs=10), 4, 40)
  with pytest.raises(UserError, match='less than one step'):
    optim.create_optimizer(opt_config(warmup_epochs=0.1), 4, 40)
  with pytest.raises(UserError, match='must be >= 0'):
    optim.create_optimizer(opt_config(warmup_epochs=-1), 4, 40)


def test_no_warmup_keeps_the_optimizer_state_of_older_checkpoints():
  """warmup_epochs=0 adds nothing to the state: checkpoints written before warm-ups existed
  restore into the same structure."""
  params = {'w': jnp.ones((3,))}
  state = optim.create_optimizer(opt_config(), 10, 100).init(params)
  assert set(state.hyperparams) == {'learning_rate', 'momentum', 'weight_decay'}
  old_form = optax.inject_hyperparams(
      lambda learning_rate, momentum, weight_decay: optax.chain(
          optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate),
          optax.trace(decay=momentum)))(learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
  assert jax.tree.structure(state) == jax.tree.structure(old_form.init(params))


def test_warmup_added_on_resume_keeps_the_decayed_lr():
  """A plateau run after two decays (lr 1e-4) resumed with a warm-up: the transplanted state
  keeps the level 1e-4, count and momentum, and gains the warm-up's factor."""
  params = {'w': jnp.ones((3,))}
  old_tx = optim.create_optimizer(opt_config(), 10, 100)
  state = old_tx.init(params)
  _, state = old_tx.update({'w': jnp.ones((3,))}, state, params)
  state = optim.with_learning_rate(state, 1e-4)
  new_tx = optim.create_optimizer(opt_config(warmup_epochs=2), 10, 100)
  moved = optim.transplant(state, new_tx.init(params))
  assert jax.tree.structure(moved) == jax.tree.structure(new_tx.init(params))
  assert float(optim.learning_rate_level(moved)) == pytest.approx(1e-4)
  assert int(moved.count) == 1
