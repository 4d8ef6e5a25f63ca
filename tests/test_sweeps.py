"""alexnet_jax/sweeps.py: a quick sweep runs every variant x seed through launch.py (each run's
own config and summary.json are the truth for the table it writes), skips finished runs when
re-run, prints one launch command per run on a dry run, and collect()'s statistics (mean, std
over seeds, the change against the baseline and its spread) against numpy on fake runs."""
import csv
import json
import os

import ml_collections
import numpy as np

from alexnet_jax import sweeps
from tests import helpers


def sweep(workdir, config, *flags):
  """launch.py with a sweep config; its output."""
  return helpers.launch(workdir, *flags, config=config, timeout=900).stdout


def test_quick_sweep_end_to_end_and_resumable(tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  out = sweep(sweep_dir, 'configs/sweeps/ablations.py:quick')
  assert '[1/2] baseline seed 0' in out and '[2/2] no_lrn seed 0' in out
  with open(os.path.join(sweep_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['variant'] for r in rows] == ['baseline', 'no_lrn']
  for r in rows:
    with open(os.path.join(sweep_dir, r['variant'], 'seed0', 'summary.json')) as f:
      summary = json.load(f)
    assert float(r['top1']) == summary['eval']['top1'] and int(r['steps']) == 4
  # The no_lrn run really ran without LRN (its own config says so).
  with open(os.path.join(sweep_dir, 'no_lrn', 'seed0', 'config.json')) as f:
    assert json.load(f)['model']['lrn'] is False
  markdown = open(os.path.join(sweep_dir, 'results.md')).read().splitlines()
  assert len(markdown) == 4 and markdown[3].startswith('| no_lrn | 1 |')
  for name in ('val_curves.png', 'deltas.png'):
    helpers.assert_png(os.path.join(sweep_dir, name))
  # Re-running skips both finished runs.
  again = sweep(sweep_dir, 'configs/sweeps/ablations.py:quick')
  assert again.count('finished earlier, skipped') == 2


def test_dry_run_prints_one_command_per_run(tmp_path):
  out = sweep(tmp_path, 'configs/sweeps/ablations.py', '--dry_run')
  lines = out.strip().splitlines()
  assert len(lines) == 12 * 2  # 12 variants x 2 seeds
  assert sum('--config.model.lrn=False' in line for line in lines) == 2
  assert sum('--config.model.remove_convs=conv4' in line for line in lines) == 2
  assert sum('--config.input.random_crop=False' in line for line in lines) == 2
  assert all('--config=configs/alexnet.py:demo' in line and '--config.train.num_epochs=3' in line
             for line in lines)
  assert not os.listdir(tmp_path)  # nothing was run


def test_report_statistics_by_hand(tmp_path):
  config = ml_collections.ConfigDict({'base': 'x', 'seeds': (0, 1), 'common': '',
                                      'variants': ('baseline:', 'no_lrn:model.lrn=False'),
                                      'baseline': 'baseline'})
  helpers.write_run(tmp_path / 'baseline' / 'seed0', 0.40, 0.80, [2.0, 1.5])
  helpers.write_run(tmp_path / 'baseline' / 'seed1', 0.50, 0.90, [2.0, 1.7])
  helpers.write_run(tmp_path / 'no_lrn' / 'seed0', 0.30, 0.70, [2.0, 1.9])
  helpers.write_run(tmp_path / 'no_lrn' / 'seed1', 0.36, 0.76, [2.0, 2.1])
  rows = {r['variant']: r for r in sweeps.collect(str(tmp_path), config)}
  base, ablated = rows['baseline'], rows['no_lrn']
  assert base['top1'] == 0.45 and abs(base['top1_std'] - np.std([0.4, 0.5], ddof=1)) < 1e-12
  assert abs(ablated['train_loss'] - 2.0) < 1e-12  # mean of the final losses 1.9 and 2.1
  assert abs(ablated['delta_top1'] - (0.33 - 0.45)) < 1e-12
  expected_std = np.sqrt(np.var([0.3, 0.36], ddof=1) / 2 + np.var([0.4, 0.5], ddof=1) / 2)
  assert abs(ablated['delta_top1_std'] - expected_std) < 1e-12
  # An unfinished run is left out of the table.
  assert sweeps.is_finished(str(tmp_path / 'no_lrn' / 'seed1'))
  assert not sweeps.is_finished(str(tmp_path / 'no_lrn' / 'seed2'))
