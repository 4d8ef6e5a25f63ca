"""alexnet_jax/tools/figure1.py on configs/figure1.py:quick (20 photos at 16 px, two lrs, 12
steps): it writes results.json, results.md and the plot; a second run trains nothing and writes
the same results; a tuning seed among the measured seeds is one error line."""
import json
import os

import matplotlib.image

from tests import helpers

QUICK = '--config=configs/figure1.py:quick'


def test_writes_results_and_a_rerun_skips_finished_runs(tmp_path):
  workdir = str(tmp_path / 'fig1')
  first = helpers.run_tool('figure1', QUICK, f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr
  assert ': training (at most' in first.stdout and 'wrote' in first.stdout
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  regimes = {r['regime']: r for r in results['regimes']}
  assert set(regimes) == {'paper', 'modern'}
  for r in regimes.values():
    assert r['tuning_seed'] == 0 and 0 not in r['seeds'] and len(r['seeds']) >= 3
    assert set(r['tuning']) == {'relu', 'tanh'}
  modern = regimes['modern']  # both activations reach 50 % here: a ratio over the 3 seeds
  assert modern['ratio']['n'] == 3 and len(modern['measured']['tanh']) == 3
  steps = [[m['steps_to_level'] for m in modern['measured'][a]] for a in ('relu', 'tanh')]
  assert modern['ratio']['ratios'] == [t / r for r, t in zip(*steps)]
  markdown = open(os.path.join(workdir, 'results.md')).read()
  assert '## paper regime' in markdown and '## modern regime' in markdown
  assert f'{modern["ratio"]["geometric_mean"]:.2f}x' in markdown
  image = matplotlib.image.imread(os.path.join(workdir, 'figure1.png'))
  assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two panels side by side
  runs = os.listdir(os.path.join(workdir, 'runs', 'modern'))
  for a in ('relu', 'tanh'):  # one file per run: every lr tried on seed 0, the chosen on the rest
    lr = modern['tuning'][a]['lr']
    assert {f'{a}_lr{lr:g}_seed{s}.json' for s in (0, 1, 2, 3)} <= set(runs)
    assert {f'{a}_lr{e["lr"]:g}_seed0.json' for e in modern['tuning'][a]['grid']} <= set(runs)

  again = helpers.run_tool('figure1', QUICK, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr
  assert 'training (at most' not in again.stdout and '(stored)' in again.stdout
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['regimes'] == results['regimes']


def test_the_tuning_seed_among_the_measured_ones_is_one_error_line(tmp_path):
  proc = helpers.run_tool('figure1', QUICK, f'--workdir={tmp_path}', '--config.tuning_seed=2')
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error:') and len(proc.stderr.strip().splitlines()) == 1
  assert 'tuning seed 2' in proc.stderr
