"""alexnet_jax/sweeps/runner.py and plan.py through launch.py: a quick sweep runs every variant x
seed (each run's own config and summary.json are the truth for the table it writes), skips
finished runs when re-run, refuses finished runs the sweep now asks another config of (changed
overrides, a changed base config file, in the sweep and in-process), prints one launch command
per run on a dry run; its configs resolve in-process as launch.py resolves them."""
import csv
import json
import os
import subprocess

import jax
import numpy as np
import pytest

from alexnet_jax import config_changes
from alexnet_jax.sweeps import plan as sweep_plan
from alexnet_jax.sweeps import runner as sweeps
from tests.helpers import ablations_config as ablations
from tests import helpers
from tests.sweeps import helpers as sweep_helpers

QUICK = 'configs/sweeps/ablations.py:quick'


def one_core():
  """The first core this process may use: a sweep on it gives its runs one XLA thread, as
  --parallel=2 gives each of its two runs here."""
  return min(os.sched_getaffinity(0))


def sweep(workdir, *flags, config=QUICK, cores=None, check=True):
  """launch.py with a sweep config (on `cores` if given); the finished process."""
  cores = set(cores) if cores else None
  proc = subprocess.run(helpers.launch_command(workdir, *flags, config=config), cwd=helpers.ROOT,
                        capture_output=True, text=True, env=helpers.cpu_env(), timeout=900,
                        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
  if check:
    assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


@pytest.fixture(scope='module')
def one_at_a_time(tmp_path_factory):
  """The quick sweep (baseline and no_lrn, seed 0), one run at a time on one core."""
  sweep_dir = str(tmp_path_factory.mktemp('one_at_a_time') / 'sweep')
  out = sweep(sweep_dir, cores={one_core()}).stdout
  return sweep_dir, out


def test_quick_sweep_end_to_end_and_resumable(one_at_a_time):
  sweep_dir, out = one_at_a_time
  assert '[1/2] baseline seed 0: started on all devices' in out
  assert '[2/2] no_lrn seed 0: val top1' in out
  with open(os.path.join(sweep_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['variant'] for r in rows] == ['baseline', 'no_lrn']
  for r in rows:
    with open(os.path.join(sweep_dir, r['variant'], 'seed0', 'summary.json')) as f:
      summary = json.load(f)
    assert float(r['top1']) == summary['eval']['top1'] and int(r['steps']) == 4
  # The no_lrn run really ran without LRN (its own config says so).
  with open(os.path.join(sweep_dir, 'no_lrn', 'seed0', 'config.json')) as f:
    assert json.load(f)['model']['norm'] == 'none'
  markdown = open(os.path.join(sweep_dir, 'results.md')).read()
  assert '| no_lrn | 1 | +' in markdown or '| no_lrn | 1 | -' in markdown  # the effect row
  for name in ('val_curves.png', 'deltas.png'):
    helpers.assert_png(os.path.join(sweep_dir, name))
  # Re-running with nothing changed skips both finished runs.
  again = sweep(sweep_dir).stdout
  assert again.count('finished earlier, skipped') == 2 and 'started' not in again


def test_changed_override_refuses_the_finished_runs_with_one_line(one_at_a_time):
  sweep_dir, _ = one_at_a_time
  before = sorted(os.listdir(os.path.join(sweep_dir, 'baseline', 'seed0')))
  proc = sweep(sweep_dir, '--config.sweep.common=train.num_steps=5,train.eval_every_epochs=0.016',
               check=False)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  error = proc.stderr.strip().splitlines()
  assert len(error) == 1, proc.stderr
  assert error[0].startswith('error: finished run baseline seed 0 (')
  assert "train.num_steps (4 -> 5)" in error[0] and '(and 1 more finished run(s))' in error[0]
  assert 'started' not in proc.stdout  # nothing ran
  assert sorted(os.listdir(os.path.join(sweep_dir, 'baseline', 'seed0'))) == before


def test_two_at_once_on_their_own_cores_match_one_at_a_time(tmp_path, one_at_a_time):
  """--parallel=2 on 2 cores: each run on its own core, both at once, and each ends with the
  metrics and parameters of the same run trained alone on one core."""
  cores = sorted(os.sched_getaffinity(0))[:2]
  if len(cores) < 2:
    pytest.skip('needs 2 cores')
  sweep_dir = str(tmp_path / 'sweep')
  out = sweep(sweep_dir, '--parallel=2', cores=cores).stdout
  lines = [line for line in out.splitlines() if line.startswith('[')]
  # Both started before either finished, each on its own core.
  assert lines[0].startswith('[1/2] baseline seed 0: started on core ')
  assert lines[1].startswith('[2/2] no_lrn seed 0: started on core ')
  assert {lines[0].split()[-3], lines[1].split()[-3]} == {str(c) for c in cores}
  assert all('val top1' in line for line in lines[2:4]), out
  for variant in ('baseline', 'no_lrn'):
    alone = os.path.join(one_at_a_time[0], variant, 'seed0')
    together = os.path.join(sweep_dir, variant, 'seed0')
    assert untimed_records(alone) == untimed_records(together)
    step, state = helpers.restore_state(together)
    assert step == 4
    assert_same_tree(state, helpers.restore_state(alone)[1])


def untimed_records(workdir) -> list[dict]:
  """metrics.jsonl without its timing fields."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != 'time' and 'img_per_sec' not in k
           and 'data_wait' not in k} for r in records]


def assert_same_tree(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def test_dry_run_prints_one_command_per_run(tmp_path):
  lines = sweep(tmp_path, '--dry_run', config='configs/sweeps/ablations.py').stdout.splitlines()
  assert len(lines) == len(ablations.VARIANTS) * 2  # every variant x 2 seeds
  assert sum('--config.model.norm=none' in line for line in lines) == 2
  assert sum('--config.model.remove_convs=conv4' in line for line in lines) == 2
  assert sum('--config.input.random_crop=False' in line for line in lines) == 2
  assert all(line.split()[1:3] == ['launch.py', '--config=configs/alexnet.py:demo']
             and '--config.train.num_epochs=3' in line for line in lines)
  assert not os.listdir(tmp_path)  # nothing was run
  # Seed by seed: every variant of seed 0 before any run of seed 1 (a sweep stopped part way
  # has whole paired seeds).
  seeds = [line.split('--config.seed=')[1].split()[0] for line in lines]
  assert seeds == ['0'] * len(ablations.VARIANTS) + ['1'] * len(ablations.VARIANTS)


def test_resolve_is_what_launch_trains(tiny_run):
  """The in-process config of a run equals the config.json launch.py stored for it."""
  config = sweep_plan.resolve(helpers.TINY, ['train.num_steps=30'])
  assert sweep_plan.stale_keys(config, tiny_run) == {}
  config = sweep_plan.resolve(helpers.TINY, ['train.num_steps=30', 'model.norm=none',
                                             'train.num_epochs=3', 'optimizer.lr=1e-3'])
  assert sweep_plan.stale_keys(config, tiny_run) == {
      'model.norm': ('lrn', 'none'), 'optimizer.lr': (1e-4, 1e-3), 'train.num_epochs': (1, 3)}
  # Keys a resume passes with a note, other than the run's length and what its evaluations
  # measure, leave a finished run's results as they are.
  harmless = ['train.log_every_steps=7', 'input.workers=3', 'dataset.folder=/moved/data',
              'model.lrn_impl=autodiff']
  assert all(config_changes.KEYS[item.split('=')[0]].cls == config_changes.RUN
             for item in harmless)
  config = sweep_plan.resolve(helpers.TINY, ['train.num_steps=30', *harmless])
  assert sweep_plan.stale_keys(config, tiny_run) == {}
  config = sweep_plan.resolve(helpers.TINY, ['train.num_steps=31', 'eval.ten_crop=True'])
  assert sweep_plan.stale_keys(config, tiny_run) == {'eval.ten_crop': (False, True),
                                                     'train.num_steps': (30, 31)}


def test_stale_finished_runs_are_refused_in_process(tmp_path, monkeypatch):
  # A base config file of our own, so that the test can change a value in it.
  base = tmp_path / 'base.py'
  source = open(os.path.join(helpers.ROOT, 'configs', 'alexnet.py')).read()
  base.write_text(source)
  monkeypatch.setattr(sweep_helpers, 'BASE', f'{base}:tiny')
  config = sweep_helpers.sweep_config(seeds=(0,))
  sweep_dir = str(tmp_path / 'sweep')
  sweep_helpers.write_sweep(sweep_dir, config, {('baseline', 0): (0.3, 0.7),
                                                ('no_lrn', 0): (0.2, 0.6)})

  def check(config):
    return sweep_plan.check_runs(config, sweep_plan.plan(config, sweep_dir))

  assert len(check(config)) == 2  # unchanged: reused
  # A variant's override changed.
  changed = sweep_helpers.sweep_config(
      seeds=(0,), variants=('baseline:', 'no_lrn:model.norm=none,model.dropout=0.1'))
  message = helpers.one_line_error(lambda: check(changed))
  assert message.startswith(f'finished run no_lrn seed 0 ({sweep_dir}/no_lrn/seed0) was '
                            'trained with another config than the sweep now asks for: '
                            'model.dropout (0.5 -> 0.1); move it away')
  # The base config file changed a value.
  base.write_text(source.replace('config.train.batch_size = 8', 'config.train.batch_size = 16'))
  message = helpers.one_line_error(lambda: check(config))
  assert 'train.batch_size (8 -> 16)' in message and '(and 1 more finished run(s))' in message
  base.write_text(source)
  # A finished run without its config is not taken on trust.
  os.remove(os.path.join(sweep_dir, 'baseline', 'seed0', 'config.json'))
  assert '<config.json>' in helpers.one_line_error(lambda: check(config))


def test_bad_overrides_are_one_line_before_anything_runs(tmp_path):
  for variants, match in ((('baseline:', 'x:model.lrnx=False'), "unknown config key 'model.lrnx'"),
                          (('baseline:', 'x:input.random_flip=maybe'),
                           "override 'input.random_flip=maybe'"),
                          (('baseline:', 'x:model.norm'), 'is not KEY=VALUE')):
    config = sweep_helpers.sweep_config(variants=variants)
    helpers.one_line_error(
        lambda: sweep_plan.check_runs(config, sweep_plan.plan(config, str(tmp_path))), match)
  assert not os.listdir(tmp_path)


def test_a_sweep_workdir_that_is_a_url_is_refused(tmp_path, monkeypatch):
  """gs://... would become a local folder 'gs:' (the runs' workdirs are refused the same way)."""
  monkeypatch.chdir(tmp_path)
  config = sweep_helpers.sweep_config(variants=('baseline:',))
  helpers.one_line_error(lambda: sweeps.run_sweep(config, 'gs://bucket/sweep'), 'not a local path')
  assert not os.listdir(tmp_path)
