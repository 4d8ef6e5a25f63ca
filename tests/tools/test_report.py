"""alexnet_jax/tools/report.py, the command: over finished runs made up for it (the quick
ablation sweep's baseline and no_lrn, seeds 0-2 by a --config.sweep override, as a sweep
submitted to a cluster leaves them), it writes results.md, results.csv and the plots into the
sweep directory and prints the tables, whose rows carry the runs' own numbers; a run whose
stored config is not the sweep's is refused with one line."""
import csv
import os

from ml_collections.config_flags import config_flags

from tests import helpers
from tests.sweeps import helpers as sweep_helpers

CONFIG = 'configs/sweeps/ablations.py:quick'
SEEDS = '--config.sweep.seeds=(0, 1, 2)'


def quick_sweep(seeds=(0, 1, 2)):
  config = config_flags.ConfigFileFlagParser('config').parse(
      os.path.join(helpers.ROOT, CONFIG)).sweep
  config.seeds = seeds
  return config


def test_report_command_writes_and_prints_the_tables(tmp_path):
  sweep_helpers.write_sweep(tmp_path, quick_sweep(), {
      ('baseline', 0): (0.40, 0.80), ('baseline', 1): (0.50, 0.90), ('baseline', 2): (0.45, 0.85),
      ('no_lrn', 0): (0.30, 0.70), ('no_lrn', 1): (0.41, 0.80)})  # no_lrn seed 2: still going
  proc = helpers.run_tool('report', f'--config={CONFIG}', SEEDS, f'--sweep_dir={tmp_path}')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['variant'], r['seeds'], float(r['top1'])) for r in rows] == [
      ('baseline', '3', 0.45), ('no_lrn', '2', 0.355)]
  assert rows[1]['paired_seeds'] == '2' and abs(float(rows[1]['delta_top1']) + 0.095) < 1e-12
  assert rows[1]['paper_sign'] == '-'  # from configs/sweeps/ablations.py
  markdown = (tmp_path / 'results.md').read_text()
  table = [line for line in proc.stdout.splitlines() if line.startswith('| ')]
  assert table == [line for line in markdown.splitlines() if line.startswith('| ')]  # as written
  assert table[1].startswith('| baseline | 3 | 45.0 +- 5.0 | 45.0 +- 5.0 | 85.0 +- 5.0 | 1.500 |')
  assert table[4].startswith('| no_lrn | 2 | -9.5 [')
  assert 'Multiple comparisons: 1 effects' in proc.stdout
  for name in ('val_curves.png', 'deltas.png'):
    helpers.assert_png(os.path.join(tmp_path, name))
  assert 'wrote ' in proc.stdout


def test_report_refuses_a_run_of_another_config(tmp_path):
  sweep_helpers.write_sweep(tmp_path, quick_sweep(seeds=(0,)), {('baseline', 0): (0.4, 0.8)})
  proc = helpers.run_tool('report', f'--config={CONFIG}', '--config.sweep.common=train.num_steps=5',
                          f'--sweep_dir={tmp_path}')
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: finished run baseline seed 0 (')
  assert 'train.num_steps (4 -> 5)' in proc.stderr and len(proc.stderr.splitlines()) == 1
  assert not os.path.exists(tmp_path / 'results.md')
