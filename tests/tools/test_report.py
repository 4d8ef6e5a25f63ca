"""alexnet_jax/tools/report.py, the command: over two finished runs made up for it (the quick
ablation sweep's baseline and no_lrn, seed 0), it writes results.md, results.csv and the plots
into the sweep directory and prints the table, whose rows carry the runs' own numbers."""
import csv
import os

from tests import helpers


def test_report_command_writes_and_prints_the_table(tmp_path):
  helpers.write_run(tmp_path / 'baseline' / 'seed0', 0.40, 0.80, [2.0, 1.5])
  helpers.write_run(tmp_path / 'no_lrn' / 'seed0', 0.30, 0.70, [2.0, 1.9])
  proc = helpers.run_tool('report', '--config=configs/sweeps/ablations.py:quick',
                          f'--sweep_dir={tmp_path}')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['variant'], float(r['top1']), float(r['top5'])) for r in rows] == [
      ('baseline', 0.40, 0.80), ('no_lrn', 0.30, 0.70)]
  assert abs(float(rows[1]['delta_top1']) - (0.30 - 0.40)) < 1e-12
  markdown = (tmp_path / 'results.md').read_text()
  table = [line for line in proc.stdout.splitlines() if line.startswith('| ')]
  assert table == markdown.splitlines()[:1] + markdown.splitlines()[2:]  # as printed, as written
  assert table[1].startswith('| baseline | 1 | 40.0 +- 0.0 | 80.0 +- 0.0 | 1.500 | 10 |')
  assert table[2].startswith('| no_lrn | 1 | 30.0 +- 0.0 | 70.0 +- 0.0 | 1.900 | 10 |')
  assert table[2].endswith('| -10.0 +- 0.0 |')
  for name in ('val_curves.png', 'deltas.png'):
    helpers.assert_png(os.path.join(tmp_path, name))
  assert 'wrote ' in proc.stdout
