"""alexnet_jax/sweeps/report.py on made-up finished runs: per variant mean +- std over seeds; per
effect the paired differences over the seeds both finished, their 95 % t-interval, half-width,
p and Holm's adjustment computed here by hand (scipy's t distribution), the resolved and "sign
matches the paper" columns in each of their cases, best-over-training top-1 with its own
interval, and the markdown, CSV and plot they are written to."""
import csv
import math
import os

import numpy as np
from scipy import stats as scipy_stats

from alexnet_jax.sweeps import report as sweep_report
from tests import helpers
from tests.sweeps import helpers as sweep_helpers

BASE = {0: 0.40, 1: 0.50, 2: 0.45}  # seed 3 of the baseline never finished
VARIANTS = {  # name: (the paper's sign, {seed: final val top-1})
    'no_lrn': ('-', {0: 0.30, 1: 0.41, 2: 0.34}),  # resolved, down, as the paper: yes
    'up': ('-', {0: 0.50, 1: 0.62, 2: 0.56}),  # resolved, up, against the paper: no
    'nosign': ('', {0: 0.41, 1: 0.49}),  # paper has no sign
    'noisy': ('-', {0: 0.45, 1: 0.40, 2: 0.50}),  # unresolved
    'partial': ('-', {1: 0.45, 3: 0.47}),  # one seed paired with the baseline: no interval
}
CURVES = {('baseline', 0): [(5, 0.42), (10, 0.40)], ('no_lrn', 0): [(5, 0.35), (10, 0.30)]}


def by_hand(diffs):
  """(mean, low, high, p) of the 95 % t-interval of the paired differences."""
  d = np.asarray(diffs, np.float64)
  mean, sem = d.mean(), d.std(ddof=1) / math.sqrt(d.size)
  t = scipy_stats.t.ppf(0.975, d.size - 1)
  return mean, mean - t * sem, mean + t * sem, 2 * scipy_stats.t.sf(abs(mean) / sem, d.size - 1)


def holm_by_hand(p: dict) -> dict:
  names = sorted(p, key=p.get)
  out, running = {}, 0.0
  for rank, name in enumerate(names):
    running = max(running, min(1.0, (len(names) - rank) * p[name]))
    out[name] = running
  return out


def make_sweep(tmp_path):
  config = sweep_helpers.sweep_config(
      variants=['baseline:'] + [f'{name}:model.dropout=0.{i + 1}'
                                for i, name in enumerate(VARIANTS)],
      seeds=(0, 1, 2, 3), paper_signs={n: sign for n, (sign, _) in VARIANTS.items()})
  results = {('baseline', s): (top1, 0.8) for s, top1 in BASE.items()}
  for name, (_, tops) in VARIANTS.items():
    results.update({(name, s): (top1, 0.8) for s, top1 in tops.items()})
  for key, curve in CURVES.items():
    results[key] = results[key] + (curve,)
  sweep_helpers.write_sweep(tmp_path, config, results)
  return config


def test_paired_effects_by_hand(tmp_path):
  config = make_sweep(tmp_path)
  rows = {r['variant']: r for r in sweep_report.collect(str(tmp_path), config)}
  assert list(rows) == ['baseline'] + list(VARIANTS)
  base = rows['baseline']
  assert base['seeds'] == 3 and abs(base['top1'] - 0.45) < 1e-12
  assert abs(base['top1_std'] - np.std([0.40, 0.50, 0.45], ddof=1)) < 1e-12
  assert 'paired_seeds' not in base
  p = {}
  for name, (_, tops) in VARIANTS.items():
    row = rows[name]
    seeds = sorted(set(tops) & set(BASE))
    assert row['paired_seeds'] == len(seeds)
    diffs = [tops[s] - BASE[s] for s in seeds]
    if len(seeds) < 2:
      assert row['delta_top1'] == diffs[0] and row['delta_top1_half_width'] == math.inf
      assert not row['resolved'] and math.isnan(row['p_holm'])
      continue
    mean, low, high, p[name] = by_hand(diffs)
    for key, value in (('delta_top1', mean), ('delta_top1_low', low), ('delta_top1_high', high),
                       ('delta_top1_half_width', (high - low) / 2), ('p', p[name])):
      assert abs(row[key] - value) < 1e-12, (name, key)
    assert row['resolved'] == (low > 0 or high < 0)
  assert {n: rows[n]['sign_matches'] for n in VARIANTS} == {
      'no_lrn': 'yes', 'up': 'no', 'nosign': 'paper has no sign', 'noisy': 'unresolved',
      'partial': 'unresolved'}
  # Holm over the four effects with an interval.
  for name, adjusted in holm_by_hand(p).items():
    assert abs(rows[name]['p_holm'] - adjusted) < 1e-12, name
  # Best over training: seed 0's evaluations peak before the end in both arms.
  best = by_hand([0.35 - 0.42, 0.41 - 0.50, 0.34 - 0.45])
  assert abs(rows['no_lrn']['best_top1'] - np.mean([0.35, 0.41, 0.34])) < 1e-12
  assert abs(rows['no_lrn']['delta_best_top1'] - best[0]) < 1e-12
  assert abs(rows['no_lrn']['delta_best_top1_low'] - best[1]) < 1e-12


def test_report_files(tmp_path):
  config = make_sweep(tmp_path)
  paths = sweep_report.write_report(str(tmp_path), config)
  with open(paths['csv']) as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  assert list(rows['no_lrn']) == sweep_report.COLUMNS
  assert rows['baseline']['delta_top1'] == '' and rows['no_lrn']['resolved'] == 'True'
  assert rows['up']['sign_matches'] == 'no' and rows['nosign']['paper_sign'] == ''
  markdown = open(paths['markdown']).read()
  variants, effects = markdown.split('Effects against baseline, paired')
  assert variants.splitlines()[3].startswith('| no_lrn | 3 | 35.0 +- 5.6 | 36.7 +- 3.8 | 80.0')
  no_lrn = next(line for line in effects.splitlines() if line.startswith('| no_lrn | 3 |'))
  mean, low, high, p = by_hand([-0.10, -0.09, -0.11])
  assert no_lrn.startswith(f'| no_lrn | 3 | {100 * mean:+.1f} [{100 * low:+.1f}, '
                           f'{100 * high:+.1f}] | {50 * (high - low):.1f} | {p:.3f} |')
  assert '| yes | - | yes |' in no_lrn
  assert '| partial | 1 | -5.0 (1 seed: no interval) |' in effects
  assert '| nosign | 2 |' in effects and '| none | paper has no sign |' in effects
  assert 'Multiple comparisons: 4 effects (those with 2 or more paired seeds)' in effects
  for name in ('val_curves.png', 'deltas.png'):
    helpers.assert_png(os.path.join(tmp_path, name))
