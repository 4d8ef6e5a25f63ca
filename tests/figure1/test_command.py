"""`python -m alexnet_jax.figure1` (__main__.py) on config.py:quick (20 photos at 16 px, two
lrs, 12 steps): it writes results.json, results.md and the plot; a second run trains nothing and
writes the same results; from another directory it finds its default config, and a tuning seed
among the measured seeds is one error line."""
import json
import os
import subprocess
import sys

import matplotlib.image

from tests import helpers

QUICK = '--config=alexnet_jax/figure1/config.py:quick'


def figure1_command(*args, cwd=helpers.ROOT):
  """`python -m alexnet_jax.figure1 ARGS` in a subprocess on one CPU device, run in `cwd` with
  the repository on PYTHONPATH (as an installed package would be).

  Its programs compile with LLVM at -O2, not conftest's -O0: the protocol runs them for
  hundreds of steps, where -O0's slower code costs more than its faster compile saves (the
  first test took 22.7 s at -O0, 14.5 s at -O2 from an empty cache, 2-core VM, 2026-12-06)."""
  env = helpers.cpu_env()
  env['XLA_FLAGS'] += ' --xla_backend_optimization_level=2'  # the last level given counts
  env['PYTHONPATH'] = os.pathsep.join(p for p in (helpers.ROOT, env.get('PYTHONPATH')) if p)
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.figure1', *args], cwd=cwd,
                        capture_output=True, text=True, env=env, timeout=300)


def test_writes_results_and_a_rerun_skips_finished_runs(tmp_path):
  workdir = str(tmp_path / 'fig1')
  first = figure1_command(QUICK, f'--workdir={workdir}')
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

  again = figure1_command(QUICK, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr
  assert 'training (at most' not in again.stdout and '(stored)' in again.stdout
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['regimes'] == results['regimes']


def test_runs_from_any_directory_and_a_measured_tuning_seed_is_one_error_line(tmp_path):
  # No --config, run from tmp_path: the default is the package's config.py (its 1,000 images
  # cut to 20 photos at 16 px here); the error comes from the config's own keys, after it loaded.
  proc = figure1_command(f'--workdir={tmp_path / "fig1"}', f'--config.folder={helpers.DATA}',
                         '--config.num_images=20', '--config.image_size=16',
                         '--config.tuning_seed=2', cwd=tmp_path)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().startswith('error:') and len(proc.stderr.strip().splitlines()) == 1
  assert 'tuning seed 2' in proc.stderr
