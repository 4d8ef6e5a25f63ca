"""A sweep's results: its finished runs read back, the effects against the baseline with the
statistics a reviewer asks for, written as results.md, results.csv and two plots.

Each effect is paired over seeds: variant minus baseline on the same seed (the same init and
data order), over the seeds both finished. Per effect: the mean change in final validation
top-1, its 95 % t-interval, the interval's half-width (the smallest effect these seeds can
resolve), p and Holm's adjusted p over the family of effects, whether the interval excludes 0
("resolved"), and whether a resolved sign is the paper's (config.sweep.paper_signs). The change
in best-over-training top-1 (the maximum over the run's evaluations) has its own interval.
"""
import csv
import math
import os

import numpy as np

from alexnet_jax import metric_logging
from alexnet_jax import stats
from alexnet_jax.errors import UserError
from alexnet_jax.sweeps import plan as sweep_plan

SIGNS = ('+', '-', '')
# results.csv, one row per variant (fractions, not points); the effect columns are empty for the
# baseline.
COLUMNS = ['variant', 'seeds', 'top1', 'top1_std', 'best_top1', 'best_top1_std', 'top5',
           'top5_std', 'train_loss', 'train_loss_std', 'steps', 'wall_s',
           'paired_seeds', 'delta_top1', 'delta_top1_low', 'delta_top1_high',
           'delta_top1_half_width', 'p', 'p_holm', 'resolved', 'paper_sign', 'sign_matches',
           'delta_best_top1', 'delta_best_top1_low', 'delta_best_top1_high',
           'delta_best_top1_half_width']


def run_result(workdir: str) -> dict | None:
  """Final numbers and the validation curve of one finished run, or None."""
  try:
    summary = sweep_plan.read_json(os.path.join(workdir, 'summary.json'))
    records = metric_logging.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  except (OSError, ValueError):
    return None
  if summary.get('final_step') != summary.get('total_steps') or not summary.get('eval'):
    return None
  train_losses = [r['train/loss'] for r in records if 'train/loss' in r]
  curve = sorted(dict((r['step'], r['eval/top1']) for r in records if 'eval/top1' in r).items())
  top1 = summary['eval']['top1']
  return {'top1': top1, 'top5': summary['eval']['top5'],
          'best_top1': max([t for _, t in curve] + [top1]),
          'train_loss': train_losses[-1] if train_losses else math.nan,
          'steps': summary['final_step'], 'wall_s': summary['wall_time_s'], 'curve': curve}


def paper_signs(sweep_config) -> dict[str, str]:
  """config.sweep.paper_signs: variant -> '+', '-' or '' (the paper's expected change in val
  top-1 against the baseline); variants it does not name have ''."""
  signs = dict(sweep_config.get('paper_signs', None) or {})
  bad = {k: v for k, v in signs.items() if v not in SIGNS}
  if bad:
    raise UserError(f'config.sweep.paper_signs: {bad} must each be one of "+", "-", ""')
  return signs


def mean_std(values) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def sign_matches(interval: stats.Interval, paper: str) -> str:
  if not paper:
    return 'paper has no sign'
  if not interval.resolved:
    return 'unresolved'
  return 'yes' if (interval.mean > 0) == (paper == '+') else 'no'


def collect(sweep_dir: str, sweep_config) -> list[dict]:
  """One row per variant with finished runs (in the sweep's order), with its effect against the
  baseline. A finished run trained with another config than the sweep's is refused."""
  runs = sweep_plan.plan(sweep_config, sweep_dir)
  sweep_plan.check_runs(sweep_config, runs)
  by_variant: dict[str, dict[int, dict]] = {}
  for run in runs:
    result = run_result(run.workdir)
    if result is not None:
      by_variant.setdefault(run.variant, {})[run.seed] = result
  rows = []
  for variant in sweep_plan.variant_names(sweep_config):
    results = by_variant.get(variant)
    if not results:
      continue
    row = {'variant': variant, 'seeds': len(results), 'by_seed': results,
           'steps': next(iter(results.values()))['steps'],
           'curves': [r['curve'] for r in results.values()]}
    for key in ('top1', 'best_top1', 'top5', 'train_loss', 'wall_s'):
      row[key], row[f'{key}_std'] = mean_std([r[key] for r in results.values()])
    rows.append(row)
  _add_effects(rows, sweep_config.baseline, paper_signs(sweep_config))
  return rows


def _add_effects(rows: list[dict], baseline: str, signs: dict[str, str]) -> None:
  base = next((r for r in rows if r['variant'] == baseline), None)
  effects = [r for r in rows if base is not None and r is not base]
  for row in effects:
    seeds = sorted(set(row['by_seed']) & set(base['by_seed']))
    row['paired_seeds'] = len(seeds)
    for key, name in (('top1', 'delta_top1'), ('best_top1', 'delta_best_top1')):
      interval = stats.t_interval([row['by_seed'][s][key] - base['by_seed'][s][key]
                                   for s in seeds])
      row[name], row[f'{name}_low'], row[f'{name}_high'] = (
          interval.mean, interval.low, interval.high)
      row[f'{name}_half_width'] = interval.half_width
      if key == 'top1':
        row['p'], row['resolved'] = interval.p_value, interval.resolved
        row['paper_sign'] = signs.get(row['variant'], '')
        row['sign_matches'] = sign_matches(interval, row['paper_sign'])
  # Holm over the effects an interval exists for (two or more paired seeds).
  family = [r for r in effects if r['paired_seeds'] >= 2]
  for row, p in zip(family, stats.holm([r['p'] for r in family])):
    row['p_holm'] = p
  for row in effects:
    row.setdefault('p_holm', math.nan)


def family_line(rows: list[dict], confidence: float = 0.95) -> str:
  family = [r for r in rows if not math.isnan(r.get('p_holm', math.nan))]
  alpha = 1 - confidence
  kept = [r['variant'] for r in family if r['p_holm'] < alpha]
  return (f'Multiple comparisons: {len(family)} effects (those with 2 or more paired seeds) '
          f'tested together; Holm-adjusted p < {alpha:g} (family-wise error {100 * alpha:.0f} %) '
          f'for {len(kept)} of them' + (f': {", ".join(kept)}.' if kept else '.'))


def _pts(x: float) -> str:
  return f'{round(100 * x, 1) + 0.0:+.1f}'  # + 0.0: no '-0.0'


def _interval(row: dict, name: str) -> str:
  if row.get('paired_seeds', 0) < 2:
    return f'{_pts(row[name])} (1 seed: no interval)' if row.get('paired_seeds') else ''
  return f'{_pts(row[name])} [{_pts(row[name + "_low"])}, {_pts(row[name + "_high"])}]'


def markdown(rows: list[dict], baseline: str) -> str:
  lines = ['| variant | seeds | val top-1 | best val top-1 | val top-5 | train loss | steps | '
           'wall s |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["variant"]} | {r["seeds"]} | {100 * r["top1"]:.1f} +- {100 * r["top1_std"]:.1f} '
        f'| {100 * r["best_top1"]:.1f} +- {100 * r["best_top1_std"]:.1f} | '
        f'{100 * r["top5"]:.1f} +- {100 * r["top5_std"]:.1f} | {r["train_loss"]:.3f} | '
        f'{r["steps"]} | {r["wall_s"]:.0f} |')
  effects = [r for r in rows if 'paired_seeds' in r]
  if not effects:
    return '\n'.join(lines) + '\n'
  lines += ['', f'Effects against {baseline}, paired over the seeds both finished (val top-1 '
            'change in points, 95 % t-interval; half-width: the smallest effect these seeds '
            'resolve; resolved: the interval excludes 0):', '',
            '| effect | paired seeds | val top-1 change [95 % CI] | half-width | p | p (Holm) | '
            'resolved | paper | sign matches paper | best val top-1 change [95 % CI] |',
            '|---|---|---|---|---|---|---|---|---|---|']
  for r in effects:
    half = f'{100 * r["delta_top1_half_width"]:.1f}' if r['paired_seeds'] >= 2 else ''
    holm = '' if math.isnan(r['p_holm']) else f'{r["p_holm"]:.3f}'
    p = f'{r["p"]:.3f}' if r['paired_seeds'] >= 2 else ''
    lines.append(f'| {r["variant"]} | {r["paired_seeds"]} | {_interval(r, "delta_top1")} | '
                 f'{half} | {p} | {holm} | {"yes" if r["resolved"] else "no"} | '
                 f'{r["paper_sign"] or "none"} | {r["sign_matches"]} | '
                 f'{_interval(r, "delta_best_top1")} |')
  lines += ['', family_line(rows)]
  return '\n'.join(lines) + '\n'


def _plots(rows: list[dict], baseline: str, sweep_dir: str) -> dict[str, str]:
  # matplotlib is imported here: it is heavy and only the plots need it.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = {'curves': os.path.join(sweep_dir, 'val_curves.png'),
           'deltas': os.path.join(sweep_dir, 'deltas.png')}
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, r in enumerate(rows):
    for j, curve in enumerate(r['curves']):
      if not curve:
        continue
      steps, top1 = zip(*curve)
      ax.plot(steps, 100 * np.asarray(top1), color=f'C{i % 10}', alpha=0.8, marker='o',
              markersize=3, label=r['variant'] if j == 0 else None)
  ax.set_xlabel('training step')
  ax.set_ylabel('validation top-1 (%)')
  ax.set_title('Validation accuracy per variant (one line per seed)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths['curves'], dpi=100)
  plt.close(fig)

  effects = [r for r in rows if r.get('paired_seeds')]
  fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(effects) + 2), 4.5))
  means = [100 * r['delta_top1'] for r in effects]
  errors = [100 * r['delta_top1_half_width'] if r['paired_seeds'] >= 2 else 0 for r in effects]
  bars = ax.bar(range(len(effects)), means, yerr=errors, capsize=4,
                color=['C3' if m < 0 else 'C2' for m in means])
  for bar, r in zip(bars, effects):
    if not r['resolved']:  # light: the interval includes 0
      bar.set_alpha(0.35)
  ax.axhline(0, color='k', linewidth=0.8)
  ax.set_xticks(range(len(effects)), [f'{r["variant"]} (n={r["paired_seeds"]})'
                                      for r in effects], rotation=25, ha='right')
  ax.set_ylabel(f'val top-1 minus {baseline} (points)')
  ax.set_title('Paired change per effect, 95 % t-interval (light: includes 0)')
  fig.tight_layout()
  fig.savefig(paths['deltas'], dpi=100)
  plt.close(fig)
  return paths


def write_report(sweep_dir: str, sweep_config) -> dict[str, str]:
  """results.md, results.csv, val_curves.png and deltas.png in sweep_dir; returns their paths."""
  if not os.path.isdir(sweep_dir):
    raise UserError(f'sweep directory {sweep_dir} does not exist')
  rows = collect(sweep_dir, sweep_config)
  paths = {'markdown': os.path.join(sweep_dir, 'results.md'),
           'csv': os.path.join(sweep_dir, 'results.csv')}
  with open(paths['markdown'], 'w') as f:
    f.write(markdown(rows, sweep_config.baseline))
  with open(paths['csv'], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  if rows:
    paths.update(_plots(rows, sweep_config.baseline, sweep_dir))
  return paths
