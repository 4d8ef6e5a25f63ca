"""Sweeps: a base config x variants x seeds, one workdir per run, run here or on a cluster.

A sweep config (configs/sweeps/*.py) names a base config, variants (a few KEY=VALUE overrides
each), seeds and a baseline. Each run is the ordinary launch command in its own workdir
<sweep_dir>/<variant>/seed<k> (plan.py), so a sweep resumes like a single run does: a
finished run is skipped, an interrupted one resumes from its checkpoint, and a finished run
trained with another config than the sweep now asks for is refused with one line.

  python launch.py --config=configs/sweeps/ablations.py --workdir=DIR            # one at a time
  python launch.py --config=configs/sweeps/ablations.py --workdir=DIR --parallel=2
  python launch.py --config=configs/sweeps/ablations.py --workdir=DIR --submit=slurm
  python launch.py --config=configs/sweeps/ablations.py --workdir=DIR --dry_run

Here, N runs at once each take their own cores or GPUs (executors.py); on SLURM the runs
are one job array, and `python -m alexnet_jax.tools.report` writes the report once they are
done. The report (report.py): paired effects against the baseline with t-intervals.
"""
import os
import shlex

from alexnet_jax.errors import UserError
from alexnet_jax.sweeps import executors as sweep_executors
from alexnet_jax.sweeps import plan as sweep_plan
from alexnet_jax.sweeps import report as sweep_report

SUBMIT = ('slurm',)


def _slurm_config(sweep_config):
  slurm = sweep_config.get('slurm', None)
  if slurm is None:
    raise UserError('--submit=slurm: the sweep config has no config.sweep.slurm (resources)')
  return slurm


def run_sweep(sweep_config, sweep_dir: str, dry_run: bool = False, parallel: int = 1,
              submit: str = '', config_file: str = 'CONFIG') -> str:
  """Runs (or submits) the sweep's unfinished runs and, when they ran here, writes its report.
  Returns the signal that stopped it ('' when it was not stopped). config_file: the sweep's
  --config, for the report command printed after a submission."""
  if '://' in sweep_dir:  # as train's workdir: local file calls would make a folder 'gs:'
    raise UserError(f'sweep workdir {sweep_dir!r} is not a local path; use a directory on a '
                    'local disk or on a file system mounted on every host')
  runs = sweep_plan.plan(sweep_config, sweep_dir)
  if dry_run:
    for run in runs:
      print(shlex.join(run.command(sweep_config.base)))
    return ''
  if submit and submit not in SUBMIT:
    raise UserError(f'--submit={submit}: choose one of {", ".join(SUBMIT)}')
  configs = sweep_plan.check_runs(sweep_config, runs)  # bad overrides, stale finished runs
  todo = []
  for i, run in enumerate(runs, 1):
    label = f'[{i}/{len(runs)}] {run.name}'
    if sweep_plan.is_finished(run.workdir):
      print(f'{label}: finished earlier, skipped', flush=True)
    else:
      todo.append((label, run))
  devices = max([sweep_executors.gpus_per_run(configs[run]) for _, run in todo], default=1)
  os.makedirs(sweep_dir, exist_ok=True)
  if submit:
    slurm = _slurm_config(sweep_config)
    if 0 < slurm.gpus_per_task < devices:
      raise UserError(f'config.sweep.slurm.gpus_per_task={slurm.gpus_per_task}, but a run\'s '
                      f'mesh takes {devices} devices (mesh.data x mesh.model)')
    if todo:
      sweep_executors.submit(todo, sweep_config.base, sweep_dir, slurm, slurm.gpus_per_task,
                             cluster=submit, echo=_echo)
    print(f'submitted {len(todo)} run(s); when they are done: python -m '
          f'alexnet_jax.tools.report --config={config_file} --sweep_dir={sweep_dir} (with the '
          'same --config.sweep overrides, if any)', flush=True)
    return ''
  slots = sweep_executors.slots_for(parallel, devices)
  failures, stopped_by = sweep_executors.run_here(todo, sweep_config.base, slots, echo=_echo)
  if stopped_by:
    print(f'sweep stopped by {stopped_by}: the running runs saved a checkpoint; run the same '
          'command again to resume', flush=True)
    return stopped_by
  if failures:
    more = f' (and {len(failures) - 1} more)' if len(failures) > 1 else ''
    raise UserError(f'{failures[0]}{more}')
  paths = sweep_report.write_report(sweep_dir, sweep_config)
  with open(paths['markdown']) as f:
    print(f.read())
  print('wrote ' + ', '.join(paths.values()))
  return ''


def _echo(line: str) -> None:
  print(line, flush=True)
