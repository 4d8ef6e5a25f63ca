"""Sweeps: a base config x variants x seeds, one workdir per run, and their results.

A sweep config (configs/sweeps/*.py) names a base config, variants (a few KEY=VALUE overrides
each), seeds and a baseline. `plan` turns it into runs, each the ordinary launch command (base
config + the variant's overrides + the sweep's common overrides + the seed) in its own process
and workdir <sweep_dir>/<variant>/seed<k>, so a sweep resumes like a single run does: a
finished run (summary.json at its final step) is skipped, an interrupted one resumes from its
checkpoint. `collect` reads the finished runs back into one row per variant (mean and std over
seeds, the change against the baseline); `write_report` writes them as a table and plots.

`python launch.py --config=configs/sweeps/ablations.py --workdir=DIR [--dry_run]` runs a sweep;
`python -m alexnet_jax.tools.report` redoes its report.
"""
import csv
import dataclasses
import json
import math
import os
import pathlib
import shlex
import subprocess
import sys
import time

import numpy as np

from alexnet_jax import metric_logging
from alexnet_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]  # where launch.py is


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int
  overrides: tuple[str, ...]  # KEY=VALUE, without the --config. prefix
  workdir: str

  def command(self, base_config: str) -> list[str]:
    return [sys.executable, 'launch.py', f'--config={base_config}', f'--workdir={self.workdir}',
            f'--config.seed={self.seed}'] + [f'--config.{o}' for o in self.overrides]


def parse_variant(spec: str) -> tuple[str, tuple[str, ...]]:
  """'no_lrn:model.lrn=False,model.pool=disjoint' -> ('no_lrn', ('model.lrn=False', ...))."""
  name, _, overrides = spec.partition(':')
  items = tuple(o.strip() for o in overrides.split(',') if o.strip())
  for item in items:
    if '=' not in item:
      raise UserError(f'variant {name!r}: override {item!r} is not KEY=VALUE')
  return name.strip(), items


def plan(sweep_config, sweep_dir: str) -> list[Run]:
  _, common = parse_variant(f'common:{sweep_config.common}')
  runs = []
  for spec in sweep_config.variants:
    name, overrides = parse_variant(spec)
    for seed in sweep_config.seeds:
      runs.append(Run(name, int(seed), common + overrides,
                      os.path.join(os.path.abspath(sweep_dir), name, f'seed{seed}')))
  names = [parse_variant(v)[0] for v in sweep_config.variants]
  if sweep_config.baseline not in names:
    raise UserError(f'config.sweep.baseline={sweep_config.baseline!r} is not among the '
                    f'variants {names}')
  return runs


def is_finished(workdir: str) -> bool:
  try:
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return False
  return summary.get('final_step') == summary.get('total_steps')


def run_result(workdir: str) -> dict | None:
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


def mean_std(values: list[float]) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def collect(sweep_dir: str, sweep_config) -> list[dict]:
  """One row per variant (in the sweep's order) over its finished seeds."""
  by_variant: dict[str, list[dict]] = {}
  for run in plan(sweep_config, sweep_dir):
    result = run_result(run.workdir)
    by_variant.setdefault(run.variant, [])
    if result is not None:
      by_variant[run.variant].append(result)
  rows = []
  for variant, results in by_variant.items():
    if not results:
      continue
    row = {'variant': variant, 'seeds': len(results)}
    for key in ('top1', 'top5', 'train_loss', 'wall_s'):
      row[key], row[f'{key}_std'] = mean_std([r[key] for r in results])
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
  # matplotlib is imported here: it is heavy and only the plots need it.
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


def run_sweep(sweep_config, sweep_dir: str, dry_run: bool = False) -> None:
  runs = plan(sweep_config, sweep_dir)
  if dry_run:
    for run in runs:
      print(shlex.join(run.command(sweep_config.base)))
    return
  os.makedirs(sweep_dir, exist_ok=True)
  start = time.perf_counter()
  for i, run in enumerate(runs, 1):
    label = f'[{i}/{len(runs)}] {run.variant} seed {run.seed}'
    if is_finished(run.workdir):
      print(f'{label}: finished earlier, skipped', flush=True)
      continue
    print(f'{label}: {shlex.join(run.command(sweep_config.base)[1:])}', flush=True)
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, 'log.txt'), 'a') as log:
      proc = subprocess.run(run.command(sweep_config.base), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    if proc.returncode != 0:
      raise UserError(f'{label} failed (exit {proc.returncode}); see {run.workdir}/log.txt')
    with open(os.path.join(run.workdir, 'summary.json')) as f:
      summary = json.load(f)
    elapsed = time.perf_counter() - start
    print(f'{label}: val top1 {summary["eval"]["top1"]:.4f} in '
          f'{summary["wall_time_s"]:.0f} s (sweep {elapsed / 60:.1f} min so far)', flush=True)
  paths = write_report(sweep_dir, sweep_config)
  with open(paths['markdown']) as f:
    print(f.read())
  print('wrote ' + ', '.join(paths.values()))
