r"""The results of a sweep: a table (markdown + CSV) and plots (PNG), from its run workdirs.

  python -m alexnet_jax.report --config=configs/sweeps/ablations.py --sweep_dir=runs/ablations

Written by the sweep when it ends; this command redoes it over whatever runs exist.
"""
import csv
import json
import math
import os

import numpy as np

from alexnet_jax import metric_logging


def _run_result(workdir: str) -> dict | None:
  """Final numbers and the validation curve of one finished run, or None."""
  try:
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
    records = metric_logging.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  except (OSError, ValueError):
    return None
  if summary.get('final_step') != summary.get('total_steps') or not summary.get('eval'):
    return None
  train_losses = [r['train/loss'] for r in records if 'train/loss' in r]
  curve = [(r['step'], r['eval/top1']) for r in records if 'eval/top1' in r]
  return {'top1': summary['eval']['top1'], 'top5': summary['eval']['top5'],
          'train_loss': train_losses[-1] if train_losses else math.nan,
          'steps': summary['final_step'], 'wall_s': summary['wall_time_s'],
          'curve': sorted(dict(curve).items())}


def _mean_std(values: list[float]) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def collect(sweep_dir: str, sweep_config) -> list[dict]:
  """One row per variant (in the sweep's order) over its finished seeds."""
  from alexnet_jax import sweep  # pylint: disable=g-import-not-at-top
  by_variant: dict[str, list[dict]] = {}
  for run in sweep.plan(sweep_config, sweep_dir):
    result = _run_result(run.workdir)
    by_variant.setdefault(run.variant, [])
    if result is not None:
      by_variant[run.variant].append(result)
  rows = []
  for variant, results in by_variant.items():
    if not results:
      continue
    row = {'variant': variant, 'seeds': len(results)}
    for key in ('top1', 'top5', 'train_loss', 'wall_s'):
      row[key], row[f'{key}_std'] = _mean_std([r[key] for r in results])
    row['steps'] = results[0]['steps']
    row['curves'] = [r['curve'] for r in results]
    rows.append(row)
  base = next((r for r in rows if r['variant'] == sweep_config.baseline), None)
  for row in rows:
    if base is None:
      row['delta_top1'] = row['delta_top1_std'] = math.nan
      continue
    row['delta_top1'] = row['top1'] - base['top1']
    # Spread of a difference of two independent means.
    row['delta_top1_std'] = math.sqrt(row['top1_std'] ** 2 / row['seeds'] +
                                      base['top1_std'] ** 2 / base['seeds'])
  return rows


def _markdown(rows: list[dict], baseline: str) -> str:
  lines = [f'| variant | seeds | val top-1 | val top-5 | train loss | steps | wall s | '
           f'top-1 vs {baseline} |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    delta = ('' if r['variant'] == baseline or math.isnan(r['delta_top1'])
             else f'{100 * r["delta_top1"]:+.1f} +- {100 * r["delta_top1_std"]:.1f}')
    lines.append(
        f'| {r["variant"]} | {r["seeds"]} | {100 * r["top1"]:.1f} +- {100 * r["top1_std"]:.1f} | '
        f'{100 * r["top5"]:.1f} +- {100 * r["top5_std"]:.1f} | {r["train_loss"]:.3f} | '
        f'{r["steps"]} | {r["wall_s"]:.0f} | {delta} |')
  return '\n'.join(lines) + '\n'


def _plots(rows: list[dict], baseline: str, sweep_dir: str) -> dict[str, str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = {'curves': os.path.join(sweep_dir, 'val_curves.png'),
           'deltas': os.path.join(sweep_dir, 'deltas.png')}
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, r in enumerate(rows):
    color = f'C{i % 10}'
    for j, curve in enumerate(r['curves']):
      steps, top1 = zip(*curve)
      ax.plot(steps, 100 * np.asarray(top1), color=color, alpha=0.8, marker='o', markersize=3,
              label=r['variant'] if j == 0 else None)
  ax.set_xlabel('training step')
  ax.set_ylabel('validation top-1 (%)')
  ax.set_title('Validation accuracy per variant (one line per seed)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths['curves'], dpi=100)
  plt.close(fig)

  others = [r for r in rows if r['variant'] != baseline and not math.isnan(r['delta_top1'])]
  fig, ax = plt.subplots(figsize=(7, 4))
  names = [r['variant'] for r in others]
  ax.bar(range(len(others)), [100 * r['delta_top1'] for r in others],
         yerr=[100 * r['delta_top1_std'] for r in others], capsize=4,
         color=['C3' if r['delta_top1'] < 0 else 'C2' for r in others])
  ax.axhline(0, color='k', linewidth=0.8)
  ax.set_xticks(range(len(others)), names, rotation=20, ha='right')
  ax.set_ylabel(f'val top-1 minus {baseline} (points)')
  ax.set_title('Effect of each ablation (mean over seeds, +- std of the difference)')
  fig.tight_layout()
  fig.savefig(paths['deltas'], dpi=100)
  plt.close(fig)
  return paths


def write_report(sweep_dir: str, sweep_config) -> dict[str, str]:
  """results.md, results.csv, val_curves.png and deltas.png in sweep_dir; returns their paths."""
  rows = collect(sweep_dir, sweep_config)
  paths = {'markdown': os.path.join(sweep_dir, 'results.md'),
           'csv': os.path.join(sweep_dir, 'results.csv')}
  with open(paths['markdown'], 'w') as f:
    f.write(_markdown(rows, sweep_config.baseline))
  columns = ['variant', 'seeds', 'top1', 'top1_std', 'top5', 'top5_std', 'train_loss',
             'train_loss_std', 'steps', 'wall_s', 'delta_top1', 'delta_top1_std']
  with open(paths['csv'], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  if rows:
    paths.update(_plots(rows, sweep_config.baseline, sweep_dir))
  return paths


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  paths = write_report(flags.FLAGS.sweep_dir, flags.FLAGS.config.sweep)
  print(open(paths['markdown']).read())
  print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', 'configs/sweeps/ablations.py', 'The sweep config.')
  flags.DEFINE_string('sweep_dir', None, 'The sweep workdir.')
  flags.mark_flags_as_required(['sweep_dir'])
  app.run(main)
