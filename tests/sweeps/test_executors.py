"""alexnet_jax/sweeps/executors.py, here: the slots (cores on a CPU, GPUs or pairs of them on a
GPU host) as pure functions, and what a child process started on a slot really sees (its core
affinity, XLA's thread count, CUDA_VISIBLE_DEVICES), read back from a stand-in for launch.py
that records them; two slots run at once; a failed run stops new starts."""
import dataclasses
import json
import os
import sys

import pytest

from alexnet_jax.sweeps import executors as ex
from alexnet_jax.errors import UserError
from tests import helpers

# Records what the child saw, stays a moment (so that two overlap), and finishes like a run.
RECORDER = r'''
import json, os, sys, time
workdir = sys.argv[1]
seen = {'cpus': sorted(os.sched_getaffinity(0)), 'start': time.time(),
        'PJRT_NPROC': os.environ.get('PJRT_NPROC'),
        'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES')}
time.sleep(1.0)
seen['end'] = time.time()
json.dump(seen, open(os.path.join(workdir, 'seen.json'), 'w'))
json.dump({'final_step': 1, 'total_steps': 1, 'wall_time_s': 1.0, 'eval': {'top1': 0.5}},
          open(os.path.join(workdir, 'summary.json'), 'w'))
sys.exit(int(sys.argv[2]))
'''


@dataclasses.dataclass(frozen=True)
class FakeRun:
  """What run_here needs of a sweep_plan.Run: a command and a workdir."""
  workdir: str
  exit_code: int = 0

  def command(self, base):
    del base
    return [sys.executable, '-c', RECORDER, self.workdir, str(self.exit_code)]


def seen(run):
  with open(os.path.join(run.workdir, 'seen.json')) as f:
    return json.load(f)


def test_cpu_slots_pin_each_child_to_its_own_cores_and_threads(tmp_path):
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    pytest.skip('needs 2 cores')
  runs = [FakeRun(str(tmp_path / f'run{i}')) for i in range(2)]
  lines = []
  failures, stopped = ex.run_here([(f'[{i}]', r) for i, r in enumerate(runs)], 'base',
                                  ex.cpu_slots(cores, 2), echo=lines.append)
  assert failures == [] and stopped == ''
  a, b = seen(runs[0]), seen(runs[1])
  assert a['cpus'] and b['cpus'] and not set(a['cpus']) & set(b['cpus'])
  assert set(a['cpus']) | set(b['cpus']) <= set(cores)
  assert a['PJRT_NPROC'] == str(len(a['cpus'])) and b['PJRT_NPROC'] == str(len(b['cpus']))
  assert a['start'] < b['end'] and b['start'] < a['end']  # at the same time
  assert lines[0] == f'[0]: started on core {a["cpus"][0]} (log: {runs[0].workdir}/log.txt)'
  assert lines[2].startswith('[') and 'val top1 0.5000 in 1 s (sweep ' in lines[2]
  # The log names the slot before the run's own output.
  assert open(os.path.join(runs[0].workdir, 'log.txt')).readline().split(': ')[0].endswith(
      f'on core {a["cpus"][0]}')


def test_gpu_slots_give_each_child_its_own_gpus(tmp_path):
  runs = [FakeRun(str(tmp_path / f'run{i}')) for i in range(3)]
  slots = ex.gpu_slots(['0', '1', '2', '3'], per_run=2)
  ex.run_here([(str(i), r) for i, r in enumerate(runs)], 'base', slots, echo=lambda _: None)
  visible = [seen(r)['CUDA_VISIBLE_DEVICES'] for r in runs]
  assert visible[:2] == ['0,1', '2,3'] and visible[2] in ('0,1', '2,3')  # the third reuses one
  assert all(seen(r)['PJRT_NPROC'] is None for r in runs)  # cores not pinned on a GPU host


def test_a_failed_run_stops_new_starts_and_is_reported(tmp_path):
  runs = [FakeRun(str(tmp_path / 'bad'), exit_code=3), FakeRun(str(tmp_path / 'next'))]
  failures, _ = ex.run_here([('[1/2] bad', runs[0]), ('[2/2] next', runs[1])], 'base',
                            [ex.Slot()], echo=lambda _: None)
  assert failures == [f'[1/2] bad: failed (exit 3); see {runs[0].workdir}/log.txt']
  assert not os.path.exists(runs[1].workdir)


def test_gpu_slots_one_per_gpu_or_pair():
  gpus = [str(i) for i in range(8)]
  split = ex.gpu_slots(gpus, per_run=2)
  assert [s.gpus for s in split] == [('0', '1'), ('2', '3'), ('4', '5'), ('6', '7')]
  assert [s.env({})['CUDA_VISIBLE_DEVICES'] for s in split] == ['0,1', '2,3', '4,5', '6,7']
  assert [s.gpus for s in ex.gpu_slots(gpus, per_run=1)] == [(g,) for g in gpus]
  assert len(ex.gpu_slots(gpus, per_run=2, n=3)) == 3
  assert [s.gpus for s in ex.gpu_slots(['3', '5'], per_run=1)] == [('3',), ('5',)]
  message = helpers.one_line_error(lambda: ex.gpu_slots(gpus, per_run=2, n=5))
  assert message == '--parallel=5 runs of 2 GPU(s) each need 10 GPUs; 8 visible'


def test_cpu_slots_split_the_cores():
  assert [s.cpus for s in ex.cpu_slots([0, 1], 2)] == [(0,), (1,)]
  assert [s.cpus for s in ex.cpu_slots([4, 0, 1, 2, 3], 2)] == [(0, 1, 2), (3, 4)]
  assert ex.cpu_slots(range(8), 4)[1].env({}) == {'PJRT_NPROC': '2', 'OMP_NUM_THREADS': '2'}
  with pytest.raises(UserError, match='needs at least 3 cores'):
    ex.cpu_slots([0, 1], 3)


def test_slots_for_a_machine():
  assert ex.slots_for(1, 2) == [ex.Slot()]  # one at a time: nothing pinned
  env = {'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7'}
  assert ex.visible_gpus(env) == [str(i) for i in range(8)]
  assert ex.visible_gpus({**env, 'JAX_PLATFORMS': 'cpu'}) == []
  assert ex.visible_gpus({'CUDA_VISIBLE_DEVICES': ''}) == []
  assert [s.gpus for s in ex.slots_for(4, 2, env)] == [('0', '1'), ('2', '3'), ('4', '5'),
                                                        ('6', '7')]
  if len(os.sched_getaffinity(0)) >= 2:
    cpu = ex.slots_for(2, 1, {'JAX_PLATFORMS': 'cpu'})
    assert len(cpu) == 2 and all(s.cpus and s.gpus is None for s in cpu)
  with pytest.raises(UserError, match='must be >= 1'):
    ex.slots_for(0, 1)
