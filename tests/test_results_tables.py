"""The README's results table and docs/experiments.md against the sweep reports they quote: each
measured effect is written from the committed results.csv the sweep wrote (docs/preset,
docs/preset_first, docs/cifar10_lrn), so a number edited by hand, or a report rerun without its
row, fails here."""
import csv
import os
import re

import pytest

from tests import helpers

ROOT = helpers.ROOT


def report(sweep: str) -> dict[str, dict]:
  """{variant: row} of docs/<sweep>/results.csv."""
  with open(os.path.join(ROOT, 'docs', sweep, 'results.csv')) as f:
    return {row['variant']: row for row in csv.DictReader(f)}


def readme_row(first_cell: str) -> list[str]:
  """The cells of the README table row whose first cell is first_cell."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    for line in f:
      cells = [c.strip() for c in line.strip().strip('|').split('|')]
      if cells[0] == first_cell:
        return cells
  raise AssertionError(f'README.md has no results row {first_cell!r}')


def points(value: str, digits: int = 1) -> str:
  """A fraction as signed points, as the tables write them (0.0392 -> '+3.9')."""
  return f'{100 * float(value):+.{digits}f}'


# README row -> (the sweep that measured it, its variant).
EFFECTS = {
    'no augmentation (crops, flips, lighting off)': ('preset', 'no_augmentation'),
    'batch norm after every conv, no LRN': ('preset', 'batchnorm_all'),
    'centre crops only (flips, lighting kept)': ('preset', 'no_random_crop'),
    'no dropout': ('preset_first', 'no_dropout'),
    'tanh for ReLU': ('preset_first', 'tanh'),
}


@pytest.mark.parametrize('row', sorted(EFFECTS))
def test_readme_ablation_rows_are_the_sweeps_intervals(row):
  sweep, variant = EFFECTS[row]
  r = report(sweep)[variant]
  resolved = 'resolved' if r['resolved'] == 'True' else 'unresolved'
  expected = (f'{points(r["delta_top1"])} [{points(r["delta_top1_low"])}, '
              f'{points(r["delta_top1_high"])}], {resolved}')
  assert readme_row(row)[1] == expected


def lrn_numbers() -> dict[str, float]:
  """The CIFAR-10 LRN sweep's test errors and the paired difference with - without, in %.
  With - without in error is no_lrn - lrn in top-1: the report's delta_top1."""
  rows = report('cifar10_lrn')
  lrn, no_lrn = rows['lrn'], rows['no_lrn']
  assert int(lrn['seeds']) == int(no_lrn['seeds']) == int(no_lrn['paired_seeds']) == 3
  return {'with': 100 * (1 - float(lrn['top1'])), 'without': 100 * (1 - float(no_lrn['top1'])),
          'with_sd': 100 * float(lrn['top1_std']), 'without_sd': 100 * float(no_lrn['top1_std']),
          'diff': 100 * float(no_lrn['delta_top1']), 'low': 100 * float(no_lrn['delta_top1_low']),
          'high': 100 * float(no_lrn['delta_top1_high']),
          'resolved': no_lrn['resolved'] == 'True'}


def test_readme_lrn_row_is_the_sweeps_result():
  n = lrn_numbers()
  cell = readme_row('LRN on CIFAR-10: cuda-convnet\'s four-layer net with and without its '
                    'norm, test error')[1]
  assert cell.startswith(f'{n["with"]:.1f} % with, {n["without"]:.1f} % without (45 epochs, '
                         '3 paired seeds)')
  assert (f'with - without {n["diff"]:+.1f} points (95 % interval {n["low"]:+.1f} to '
          f'{n["high"]:+.1f})') in cell
  # "no gain measured": the interval reaches 0 (unresolved) or lies above it; "the paper's -2
  # excluded": the interval's low end is above -2 points.
  assert 'no gain measured' in cell and n['high'] >= 0
  assert "the paper's -2 excluded" in cell and n['low'] > -2


def test_experiments_lrn_mean_row_is_the_sweeps_result():
  n = lrn_numbers()
  with open(os.path.join(ROOT, 'docs', 'experiments.md'), encoding='utf-8') as f:
    page = f.read()
  row = re.search(r'^\| mean \| (.*)$', page.split('## CIFAR-10: cuda-convnet')[1], re.MULTILINE)
  assert row, 'docs/experiments.md: the LRN table has no mean row'
  assert row.group(1).startswith(
      f'{n["with"]:.2f} % (sd {n["with_sd"]:.2f}) | {n["without"]:.2f} % (sd '
      f'{n["without_sd"]:.2f}) | **{n["diff"]:+.2f} points, 95 % t-interval ({n["low"]:+.2f}, '
      f'{n["high"]:+.2f})**')
  assert not n['resolved'] and 'The paired interval contains 0' in page
