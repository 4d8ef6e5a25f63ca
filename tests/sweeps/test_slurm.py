"""alexnet_jax/sweeps/executors.py's submitit path, without a cluster: a run submitted through
submitit's local executor is preempted the way the executor does it (its preemption signal,
SIGUSR2, to the task), saves a checkpoint, is requeued by submitit and resumes from that
checkpoint, ending bit-identical to the uninterrupted tiny run (conftest's `tiny_run`: the same
command). Also: config.sweep.slurm -> submitit's parameters, and --submit=slurm without SLURM.

submitit 1.5.4's LocalJob._interrupt() sends the signal to the local controller process, which
has no handler for it and dies (its task is orphaned, nothing is requeued); the controller's own
time-out path, like SLURM, sends it to the task: `Controller._forward_signal(usr_sig)`. The test
does what that does."""
import json
import os
import signal
import time

import jax
import ml_collections
import numpy as np

from alexnet_jax.sweeps import executors as ex
from alexnet_jax.sweeps import plan as sweep_plan
from tests import conftest
from tests import helpers

# time_min: submitit counts a signal after 80 % of it (at most 10 min before it) as a time-out,
# before as a preemption.
SLURM = dict(partition='', gpus_per_task=0, cpus_per_task=2, time_min=60, array_parallelism=4,
             signal_delay_s=60)


def train_records(workdir) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def untimed(records) -> list[dict]:
  return [{k: v for k, v in r.items() if k != 'time' and 'img_per_sec' not in k
           and 'data_wait' not in k} for r in records]


def children(pid: int) -> list[int]:
  with open(f'/proc/{pid}/task/{pid}/children') as f:
    return [int(p) for p in f.read().split()]


def test_preempted_task_checkpoints_is_requeued_and_ends_bit_identical(tmp_path, tiny_run,
                                                                       monkeypatch):
  # One CPU device and the compiler level, as the tiny run had (conftest gives this process 8
  # for the sharding tests); the local executor's processes take this environment.
  monkeypatch.setenv('XLA_FLAGS', helpers.cpu_env()['XLA_FLAGS'])
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  run = sweep_plan.Run('tiny', 0, (f'train.num_steps={conftest.TINY_RUN_STEPS}',),
                       str(tmp_path / 'tiny' / 'seed0'))
  slurm = ml_collections.ConfigDict(SLURM)
  (job,) = ex.submit([('[1/1] tiny seed 0', run)], helpers.TINY, str(tmp_path), slurm, 0,
                     cluster='local', echo=lambda _: None)
  assert open(tmp_path / 'jobs.txt').read().split()[:3] == [job.job_id, 'tiny', 'seed0']
  deadline = time.time() + 300
  while sum('train/loss' in r for r in train_records(run.workdir)) < 3:
    assert job.state == 'RUNNING' and time.time() < deadline, job.stdout()
    # Not a tighter poll: on 2 cores, reading the metrics 500 times a second competes with the
    # run it waits for; at 20 a second the signal still lands steps before the run's end.
    time.sleep(0.05)
  (task,) = children(job._process.pid)  # the controller's task: submitit's worker process
  assert ex.preemption_signal() == signal.SIGUSR2  # submitit's default
  os.kill(task, ex.preemption_signal())
  result = job.result()  # submitit requeues the task; the requeued one finishes the run
  assert result['final_step'] == conftest.TINY_RUN_STEPS
  out = job.stdout()
  assert 'this job is preempted' in out and 'Requeued job' in out, out
  log = open(os.path.join(run.workdir, 'log.txt')).read()
  stopped = [int(line.split('at step ')[1].split('/')[0]) for line in log.splitlines()
             if line.startswith('stopped by SIGTERM at step ')]
  assert len(stopped) == 1 and 3 <= stopped[0] < conftest.TINY_RUN_STEPS, log
  assert f'at step {stopped[0]}' in log.split('stopped by SIGTERM')[1].split('resumed from')[1]
  # Bit-identical to the uninterrupted run: every logged metric, and the final parameters.
  assert untimed(train_records(run.workdir)) == untimed(train_records(tiny_run))
  step, state = helpers.restore_state(run.workdir)
  assert step == conftest.TINY_RUN_STEPS
  leaves, expected = (jax.tree.leaves(s) for s in (state, helpers.restore_state(tiny_run)[1]))
  assert len(leaves) == len(expected) > 0
  for a, b in zip(leaves, expected):
    np.testing.assert_array_equal(a, b)


def test_slurm_parameters_from_the_sweep_config():
  slurm = ml_collections.ConfigDict({**SLURM, 'partition': 'gpu', 'gpus_per_task': 2})
  params = ex.executor_parameters(slurm, 2, 'ablations')
  assert params == dict(
      name='ablations', timeout_min=60, nodes=1, tasks_per_node=1, gpus_per_node=2,
      cpus_per_task=2, stderr_to_stdout=True, slurm_array_parallelism=4,
      slurm_signal_delay_s=60, slurm_additional_parameters={'requeue': True},
      slurm_partition='gpu')
  assert 'slurm_partition' not in ex.executor_parameters(
      ml_collections.ConfigDict(SLURM), 0, 'x')


def test_submit_without_slurm_is_one_line(tmp_path):
  proc = helpers.launch(tmp_path / 'sweep', '--submit=slurm',
                        config='configs/sweeps/ablations.py:quick', check=False)
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: --submit=slurm: ') and len(proc.stderr.splitlines()) == 1
  assert not os.path.exists(tmp_path / 'sweep' / 'baseline')
