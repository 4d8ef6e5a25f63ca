"""What the sweep tests share: a sweep config over the tiny net, and finished runs made up
without training (summary.json, metrics.jsonl and the config.json a real run of that command
would store), as the sweep and its report read them."""
import json
import os

import ml_collections

from alexnet_jax.sweeps import plan as sweep_plan

BASE = 'configs/alexnet.py:tiny'


def sweep_config(variants=('baseline:', 'no_lrn:model.norm=none'), seeds=(0, 1),
                 common='train.num_steps=10', paper_signs=None) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'base': BASE, 'seeds': tuple(seeds), 'common': common, 'variants': tuple(variants),
      'baseline': 'baseline', 'paper_signs': dict(paper_signs or {})})


def write_run(run: sweep_plan.Run, config, top1: float, top5: float, losses=(2.0, 1.5),
              curve=None):
  """A finished run of `run` (its config: `config`, e.g. sweep_plan.run_config's); curve: the
  (step, val top-1) evaluations, by default only the final one."""
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, 'summary.json'), 'w') as f:
    json.dump({'final_step': 10, 'total_steps': 10, 'wall_time_s': 5.0,
               'eval': {'top1': top1, 'top5': top5}}, f)
  with open(os.path.join(run.workdir, 'metrics.jsonl'), 'w') as f:
    for step, loss in enumerate(losses, 1):
      f.write(json.dumps({'step': step, 'train/loss': loss}) + '\n')
    for step, value in (curve or [(10, top1)]):
      f.write(json.dumps({'step': step, 'eval/top1': value}) + '\n')
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))


def write_sweep(sweep_dir, config, results: dict):
  """results: {(variant, seed): (top1, top5[, curve])} -> those runs, finished."""
  runs = {(r.variant, r.seed): r for r in sweep_plan.plan(config, str(sweep_dir))}
  for key, values in results.items():
    curve = values[2] if len(values) > 2 else None
    write_run(runs[key], sweep_plan.run_config(config, runs[key]), values[0], values[1],
              curve=curve)
  return runs
