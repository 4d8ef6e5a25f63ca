"""Runs a sweep config (configs/sweeps/*.py): every variant x seed, one workdir each.

Each run is the ordinary launch command (base config + the variant's overrides + the sweep's
common overrides + the seed) in its own process, so a sweep resumes like a single run does: a
finished run (summary.json at its final step) is skipped, an interrupted one resumes from its
checkpoint. --dry_run prints the commands instead, one per line, for a cluster scheduler.
"""
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time

from alexnet_jax import report
from alexnet_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  paths = report.write_report(sweep_dir, sweep_config)
  print(open(paths['markdown']).read())
  print('wrote ' + ', '.join(paths.values()))
