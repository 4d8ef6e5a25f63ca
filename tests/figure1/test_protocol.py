"""alexnet_jax/figure1/protocol.py: the lr choice and the pruned grid on made-up curves, the
tuning seed kept out of the measured ones, the steps ratio's interval against the t formula by
hand, and the run store's reuse and refusal."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import protocol
from tests.figure1.helpers import setup


# --- the lr choice, on made-up curves ---


def curve(lr, reach_at, max_steps, k=10, diverge_at=None, stuck=False):
  """A train_run-like result: error falls linearly from 0.9 to 0.25 at step reach_at."""
  steps, errors, loss = [0], [0.9], [2.3]
  outcome = 'max_steps'
  for s in range(k, max_steps + 1, k):
    steps.append(s)
    errors.append(0.9 if stuck else max(0.9 - 0.65 * s / reach_at, 0.0))
    loss.append(None if diverge_at and s >= diverge_at else 1.0)
    if diverge_at and s >= diverge_at:
      outcome = 'diverged'
    elif stuck and s >= 100:
      outcome = 'stuck'
    elif errors[-1] <= 0.25:
      outcome = 'reached'
    if outcome != 'max_steps':
      break
  return {'lr': lr, 'outcome': outcome, 'steps': steps, 'error': errors, 'loss': loss,
          'steps_to_target': steps[-1] if outcome == 'reached' else None,
          'max_steps': max_steps, 'wall_s': 0.0}


CURVES = {0.1: dict(reach_at=10_000, diverge_at=30),  # diverges
          0.05: dict(reach_at=40, diverge_at=40),  # non-finite at the step it would reach
          0.03: dict(reach_at=10_000, stuck=True),  # dead: at chance
          0.01: dict(reach_at=200), 0.003: dict(reach_at=200),  # a tie: the smaller lr wins
          0.001: dict(reach_at=600), 0.0003: dict(reach_at=5_000)}  # never within 1000


def test_choose_lr_fastest_that_did_not_diverge():
  runs = [curve(lr, max_steps=1000, **kw) for lr, kw in CURVES.items()]
  outcomes = {r['lr']: r['outcome'] for r in runs}
  assert outcomes == {0.1: 'diverged', 0.05: 'diverged', 0.03: 'stuck', 0.01: 'reached',
                      0.003: 'reached', 0.001: 'reached', 0.0003: 'max_steps'}
  assert protocol.choose_lr(runs) == 0.003
  assert protocol.choose_lr([r for r in runs if r['lr'] >= 0.01]) == 0.01
  assert protocol.choose_lr([r for r in runs if r['lr'] >= 0.03]) is None


def test_tune_prunes_only_runs_that_cannot_win():
  assert protocol.middle_out([0.1, 0.03, 0.01, 0.003, 0.001]) == [0.01, 0.03, 0.003, 0.1, 0.001]
  assert protocol.middle_out([0.001, 0.01, 0.003, 0.03]) == [0.003, 0.01, 0.001, 0.03]
  asked = []

  def run(lr, max_steps):
    asked.append((lr, max_steps))
    return curve(lr, max_steps=max_steps, **CURVES[lr])

  brute_force = protocol.choose_lr([curve(lr, max_steps=1000, **kw) for lr, kw in CURVES.items()])
  chosen, runs = protocol.tune(run, list(CURVES), 1000)
  assert chosen == brute_force == 0.003
  # Middle out: 0.01 first (reached at 200), then every other lr for at most 200 steps.
  assert asked == [(0.01, 1000), (0.03, 200), (0.003, 200), (0.05, 200), (0.001, 200),
                   (0.1, 200), (0.0003, 200)]
  assert [r['lr'] for r in runs] == sorted(CURVES, reverse=True)
  assert [r['outcome'] for r in runs] == ['diverged', 'diverged', 'stuck', 'reached', 'reached',
                                          'max_steps', 'max_steps']
  # Any order of the grid gives the same choice.
  for grid in ([0.1, 0.05, 0.03], [0.001, 0.0003, 0.01]):
    assert protocol.tune(run, grid, 1000)[0] == protocol.choose_lr(
        [curve(lr, max_steps=1000, **CURVES[lr]) for lr in grid])


def test_a_choice_at_the_grids_edge_extends_the_grid():
  assert [protocol.next_lr(lr, up=True) for lr in (0.001, 0.003, 0.03, 0.1)] == [
      0.003, 0.01, 0.1, 0.3]
  assert [protocol.next_lr(lr, up=False) for lr in (0.001, 0.003, 0.03, 0.1)] == [
      0.0003, 0.001, 0.01, 0.03]
  fastest = {0.0003: 900, 0.001: 700, 0.003: 500, 0.01: 300, 0.03: 200, 0.1: 150, 0.3: 170}
  asked = []

  def run(lr, max_steps):
    asked.append(lr)
    return curve(lr, fastest[lr], max_steps)

  # 0.01 is the grid's top and wins: 0.03 is tried, wins, then 0.1 (two extensions).
  assert protocol.tune(run, [0.001, 0.003, 0.01], 1000, extend=2)[0] == 0.1
  assert asked == [0.003, 0.01, 0.001, 0.03, 0.1]
  asked.clear()  # a third extension finds 0.3 slower: 0.1 is inside the lrs tried, and stays
  assert protocol.tune(run, [0.001, 0.003, 0.01], 1000, extend=5)[0] == 0.1
  assert asked == [0.003, 0.01, 0.001, 0.03, 0.1, 0.3]
  # At the bottom edge it goes down; without `extend`, never.
  fastest.update({0.0003: 100, 0.001: 200})
  assert protocol.tune(run, [0.001, 0.003], 1000, extend=0)[0] == 0.001
  assert protocol.tune(run, [0.001, 0.003], 1000, extend=1)[0] == 0.0003


def test_tuning_never_uses_the_measured_seeds(images, tmp_path):
  with pytest.raises(UserError, match='tuning seed'):
    protocol.run_regime(images, 'paper', setup(), {'relu': (0.01,), 'tanh': (0.01,)}, 4,
                        tuning_seed=2, seeds=(1, 2, 3), workdir=str(tmp_path))


# --- steps to a level and the ratio ---


def test_steps_to_and_common_level():
  a = {'steps': [0, 10, 20, 30], 'error': [0.9, 0.5, 0.3, 0.2]}
  b = {'steps': [0, 10, 20], 'error': [0.9, 0.6, 0.4]}
  assert protocol.steps_to(a, 0.25) == 30 and protocol.steps_to(b, 0.25) is None
  assert protocol.common_level([a], 0.25) == 0.25
  assert protocol.common_level([a, b], 0.25) == 0.4  # the lowest level both reach
  assert protocol.steps_to(a, 0.4) == 20 and protocol.steps_to(b, 0.4) == 20


def test_ratio_interval_is_the_t_interval_of_log_ratios_by_hand():
  relu, tanh = [100, 120, 90, 110], [500, 700, 400, 520]
  q = protocol.ratio_interval(relu, tanh)
  logs = np.log(np.array(tanh) / np.array(relu))
  half = scipy_stats.t.ppf(0.975, 3) * logs.std(ddof=1) / 2  # sqrt(4) = 2
  assert q['ratios'] == pytest.approx([5.0, 700 / 120, 400 / 90, 520 / 110])
  assert q['geometric_mean'] == pytest.approx(math.exp(logs.mean()))
  assert q['low'] == pytest.approx(math.exp(logs.mean() - half))
  assert q['high'] == pytest.approx(math.exp(logs.mean() + half))
  assert q['n'] == 4 and q['excludes_1']
  assert not protocol.ratio_interval([100, 100, 100], [90, 120, 100])['excludes_1']


def test_run_store_reuses_and_refuses(tmp_path):
  store = protocol.RunStore(str(tmp_path), 'paper', setup())
  run = dict(curve(0.01, reach_at=200, max_steps=1000), regime='paper', activation='relu', seed=1)
  store.save(run)
  assert store.load('relu', 0.01, 1, 1000)['steps_to_target'] == 200
  assert store.load('relu', 0.01, 1, 100)['outcome'] == 'max_steps'  # truncated
  assert store.load('relu', 0.01, 2, 1000) is None
  short = dict(curve(0.001, reach_at=600, max_steps=200), regime='paper', activation='relu',
               seed=1)
  store.save(short)
  assert store.load('relu', 0.001, 1, 200)['outcome'] == 'max_steps'
  assert store.load('relu', 0.001, 1, 1000) is None  # it stopped sooner: run it again
  with pytest.raises(UserError, match='another setup'):
    protocol.RunStore(str(tmp_path), 'paper', setup(target=0.3)).load('relu', 0.01, 1, 1000)
