"""The README's results table and docs/experiments.md against the reports they quote: each
measured effect is written from the committed results.csv a sweep wrote (docs/preset,
docs/preset_first, docs/cifar10_lrn) or the results.json the Figure 1 command wrote
(docs/figure1, docs/figure1-cifar10), so a number edited by hand, or a report rerun without its
row, fails here."""
import csv
import json
import math
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


def experiments_page() -> str:
  with open(os.path.join(ROOT, 'docs', 'experiments.md'), encoding='utf-8') as f:
    return f.read()


def test_experiments_lrn_mean_row_is_the_sweeps_result():
  n = lrn_numbers()
  page = experiments_page()
  row = re.search(r'^\| mean \| (.*)$', page.split('## CIFAR-10: cuda-convnet')[1], re.MULTILINE)
  assert row, 'docs/experiments.md: the LRN table has no mean row'
  assert row.group(1).startswith(
      f'{n["with"]:.2f} % (sd {n["with_sd"]:.2f}) | {n["without"]:.2f} % (sd '
      f'{n["without_sd"]:.2f}) | **{n["diff"]:+.2f} points, 95 % t-interval ({n["low"]:+.2f}, '
      f'{n["high"]:+.2f})**')
  assert not n['resolved'] and 'The paired interval contains 0' in page


# --- Figure 1: the command's own results.json, committed in docs/figure1 (the embedded photos)
# and docs/figure1-cifar10 ---

# report -> (its README row's first cell, its experiments.md rows' data cell, the heading of the
# section they are in, its training images: the epochs in the rows are steps x batch / these).
FIGURE1_REPORTS = {
    'figure1': ('Figure 1 on the 1,000 embedded photos: tanh / ReLU steps to 25 % training '
                'error', '1,000 photos', '## Figure 1: ReLU against tanh, as the paper ran it',
                1000),
    'figure1-cifar10': ('Figure 1 on CIFAR-10 (a JPEG q75 copy): tanh / ReLU steps to 25 % '
                        'training error', 'CIFAR-10 (JPEG q75)', '### On CIFAR-10', 50_000),
}
REGIME_WORDS = {'paper': "paper's regime", 'modern': 'modern regime'}


def figure1_report(report: str) -> dict[str, dict]:
  """{regime: result} of a committed report, its ratios recomputed from the per-seed steps
  (the geometric mean written out, not the command's own function)."""
  with open(os.path.join(ROOT, 'docs', report, 'results.json')) as f:
    regimes = {r['regime']: r for r in json.load(f)['regimes']}
  assert set(regimes) == set(REGIME_WORDS)
  for r in regimes.values():
    relu = [m['steps_to_level'] for m in r['measured']['relu']]
    tanh = [m['steps_to_level'] for m in r['measured']['tanh']]
    assert len(relu) == len(tanh) >= 3 and None not in relu + tanh  # >= 3 seeds, all reached
    assert r['tuning_seed'] not in [m['seed'] for m in r['measured']['relu']]
    logs = [math.log(t / s) for s, t in zip(relu, tanh)]
    assert r['ratio']['geometric_mean'] == pytest.approx(math.exp(sum(logs) / len(logs)))
    assert r['ratio']['n'] == len(logs)
  return regimes


def experiments_section(heading: str) -> str:
  """docs/experiments.md from the line `heading` to the next heading."""
  after = experiments_page().split('\n' + heading + '\n')[1]
  return re.split(r'^#', after, maxsplit=1, flags=re.MULTILINE)[0]


@pytest.mark.parametrize('report', sorted(FIGURE1_REPORTS))
def test_readme_figure1_row_is_the_commands_result(report):
  first_cell = FIGURE1_REPORTS[report][0]
  cell = readme_row(first_cell)[1]
  regimes = figure1_report(report)
  for name, r in regimes.items():
    q = r['ratio']
    value = (f'{q["geometric_mean"]:.2f}x (95 % interval {q["low"]:.2f}-{q["high"]:.2f})')
    assert re.search(re.escape(REGIME_WORDS[name]) + r'[^:;]*: ' + re.escape(value), cell), (
        f'{first_cell}: {name} regime, expected {value}')
  (n,) = {r['ratio']['n'] for r in regimes.values()}
  assert cell.endswith(f'; {n} seeds each')


@pytest.mark.parametrize('report', sorted(FIGURE1_REPORTS))
def test_experiments_figure1_rows_are_the_commands_result(report):
  _, data_cell, heading, images = FIGURE1_REPORTS[report]
  section = experiments_section(heading)
  for name, r in figure1_report(report).items():
    row = re.search(rf'^\| {re.escape(data_cell)} \| {name}.*$', section, re.MULTILINE)
    assert row, f'docs/experiments.md: no {data_cell} Figure 1 row for the {name} regime'
    cells = [c.strip() for c in row.group(0).strip('|').split('|')]
    q = r['ratio']
    assert cells[2] == f'{r["tuning"]["relu"]["lr"]:g} / {r["tuning"]["tanh"]["lr"]:g}'
    for cell, a in ((cells[3], 'relu'), (cells[4], 'tanh')):
      steps = [m['steps_to_level'] for m in r['measured'][a]]
      mean = sum(steps) / len(steps)
      epochs = mean * r['setup']['batch_size'] / images
      assert cell == f'{mean:.0f} ({min(steps)}-{max(steps)}), {epochs:.1f} epochs'
    assert cells[5] == (f'**{q["geometric_mean"]:.2f}x** ({q["low"]:.2f}-{q["high"]:.2f}), '
                        f'{q["n"]} seeds')


def test_the_words_under_the_figure1_tables_are_the_reports():
  """What the prose says of each interval holds for the committed numbers."""
  words = {report: ' '.join(experiments_section(FIGURE1_REPORTS[report][2]).split())
           for report in FIGURE1_REPORTS}  # the prose, its line wraps undone
  photos, cifar = figure1_report('figure1'), figure1_report('figure1-cifar10')
  # The photos: the paper's regime's interval includes 1 ("was not reached"); the modern one
  # "just includes 1".
  assert 'an interval that excludes 1 in the paper\'s regime, was not reached' in words['figure1']
  assert not photos['paper']['ratio']['excludes_1']
  assert 'its interval just includes 1' in words['figure1']
  assert photos['modern']['ratio']['low'] < 1 < photos['modern']['ratio']['high']
  # CIFAR-10: the paper's regime excludes 1 and lies below the paper's 6x; the modern one
  # includes 1, tanh ahead on every seed.
  paper, modern = cifar['paper']['ratio'], cifar['modern']['ratio']
  assert "The paper's 6x lies above the interval" in words['figure1-cifar10']
  assert paper['excludes_1'] and 1 < paper['low'] and paper['high'] < 6
  assert 'still includes 1' in words['figure1-cifar10'] and modern['low'] < 1 < modern['high']
  assert 'fewer steps than ReLU at every seed' in words['figure1-cifar10']
  assert max(modern['ratios']) < 1
  # CIFAR-10's prose quotes the photos' ratios.
  assert (f'where the 1,000 photos gave {photos["paper"]["ratio"]["geometric_mean"]:.2f}x' in
          words['figure1-cifar10'])
  assert (f'as on the photos ({photos["modern"]["ratio"]["geometric_mean"]:.2f}x)' in
          words['figure1-cifar10'])
  # The wall times: each regime's tuning and measuring, as the report sums them.
  for name, r in cifar.items():
    assert (f'tuning {r["tuning_wall_s"]:,.0f} s' in words['figure1-cifar10'] and
            f'measuring {r["measured_wall_s"]:,.0f} s' in words['figure1-cifar10']), name
