"""The plateau rule and the at-chance check as the train loop drives them (train.py): a decay's
one line names the errors it compared and lowers the lr's level; an evaluation at chance makes
no decay; a run still at chance says so once, or stops with its checkpoint saved
(train.on_chance=stop), and metrics.jsonl records both."""
import json
import os

from flax import struct
import jax.numpy as jnp
import ml_collections
import optax
import pytest

from alexnet_jax import optim
from alexnet_jax import train
from tests import helpers


@struct.dataclass
class _State:
  opt_state: optax.OptState


def _state(lr=0.01):
  tx = optim.create_optimizer(ml_collections.ConfigDict(dict(
      name='sgd', lr=lr, momentum=0.9, weight_decay=5e-4, schedule='plateau',
      lr_scaling='none', warmup_epochs=0.0)), 10, 1000)
  return _State(opt_state=tx.init({'w': jnp.zeros(2)}))


def test_a_decay_is_one_line_with_the_errors_it_compared(capsys):
  rule = optim.PlateauRule(patience=2, threshold=0.01, min_epochs=0)
  state = _state()
  evals = [(0.60, 1), (0.598, 2), (0.601, 3)]  # top-1; no gain of 1 % after the first
  decayed = []
  for top1_error, epoch in evals:
    state, d = train._apply_plateau_rule(state, rule, {'top1': 1 - top1_error, 'count': 50000},
                                         epoch, 1000)
    decayed.append(d)
  assert decayed == [False, False, True]
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines == ['lr decay 1 of 3: validation error 0.6010 at epoch 3.0: no error 1 % below '
                   'the best 0.6000 (epoch 1.0) in the last 2 evaluations (0.5980, 0.6010); '
                   'lr 0.01 -> 0.001']
  assert float(optim.learning_rate_level(state.opt_state)) == pytest.approx(0.001, rel=1e-6)


def test_an_evaluation_at_chance_makes_no_decay(capsys):
  rule = optim.PlateauRule(patience=1, threshold=0.0, min_epochs=0)
  state = _state()
  for epoch in range(1, 6):  # top-1 0.1 % of 50,000 ImageNet images: chance
    state, decayed = train._apply_plateau_rule(state, rule, {'top1': 0.001, 'count': 50000},
                                               epoch, 1000)
    assert not decayed
  assert capsys.readouterr().out == ''
  assert float(optim.learning_rate_level(state.opt_state)) == pytest.approx(0.01, rel=1e-6)


def test_the_chance_check_says_it_once_after_its_epochs():
  check = train._ChanceCheck(ml_collections.ConfigDict({'chance_epochs': 2.0,
                                                         'on_chance': 'warn'}), 10)
  at_chance = {'top1': 0.12, 'count': 240}  # bound 0.1 + 3 sd = 0.158
  assert check.check(at_chance, 1.0) == ''  # too early
  line = check.check(at_chance, 2.0)
  assert line.startswith('the validation top-1 is still at chance after 2.0 epochs (0.1200 on '
                         '240 images; chance 1/10 = 0.1000, +3 sd = 0.1581)')
  assert 'training goes on' in line and '\n' not in line
  assert check.check(at_chance, 3.0) == ''  # once
  fresh = train._ChanceCheck(ml_collections.ConfigDict({'chance_epochs': 2.0}), 10)
  assert fresh.check({'top1': 0.2, 'count': 240}, 2.0) == ''  # left chance
  never = train._ChanceCheck(ml_collections.ConfigDict({'chance_epochs': 0.0}), 10)
  assert never.check(at_chance, 50.0) == ''


def test_a_run_at_chance_stops_with_its_checkpoint_when_asked(tmp_path):
  """lr 1e-9: the net stays at its init, at chance; evaluations every 5 steps, the check after
  10 (0.08 epochs of 125 steps): exit 3, one error line, the checkpoint of step 10 saved, and
  metrics.jsonl records the evaluations at chance and no decay."""
  workdir = str(tmp_path / 'run')
  proc = helpers.launch(workdir, '--config.optimizer.schedule=plateau',
                        '--config.optimizer.lr=1e-9', '--config.train.num_steps=40',
                        '--config.train.eval_every_epochs=0.04',
                        '--config.train.chance_epochs=0.08', '--config.train.on_chance=stop',
                        '--config.optimizer.plateau_patience=1',
                        '--config.optimizer.plateau_min_epochs=0', check=False)
  assert proc.returncode == 3, proc.stdout + proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'still at chance after 0.1 epochs' in errors[0]
  assert 'checkpoint saved at step 10' in errors[0]
  assert helpers.checkpoint_steps(workdir) == [10]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    evals = [r for r in map(json.loads, f) if 'eval/top1' in r]
  assert [r['step'] for r in evals] == [5, 10]
  assert all(r['eval/at_chance'] == 1.0 and r['eval/lr_decays'] == 0 for r in evals)
  assert 'lr decay' not in proc.stdout
