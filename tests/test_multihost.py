"""alexnet_jax/multihost.py: two real training processes (launch.py, jax.distributed on
127.0.0.1, 2 CPU devices each) against the same steps in one process on 4 devices with the global
batch built from the two processes' data shards side by side (augmentation on the host and on
the device), their one checkpoint resumed by a
single process, a restore that fails on one of two processes agreed by both, and cluster
detection from the environment variables of SLURM, Open MPI and TPU pods."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import device_preprocessing
from alexnet_jax.data import pipeline
from alexnet_jax.model import alexnet
from alexnet_jax import multihost
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from tests.helpers import alexnet_config
from tests import helpers

STEPS = 3
OVERRIDES = {'mesh.data': 2, 'mesh.model': 2, 'train.num_steps': STEPS,
             'optimizer.name': 'sgd', 'optimizer.lr': 0.02}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# How long the two processes of a test may take together before both are killed and the test
# fails with their output (each test's pair takes 10-30 s cold on the 2-core VM; a hang would
# otherwise hold a CI worker until its own timeout).
TOGETHER_TIMEOUT_S = 90


def run_together(commands, log_dir, env, timeout=TOGETHER_TIMEOUT_S):
  """Runs the commands as processes at once and waits for all; returns (return codes, outputs).

  Their output goes to files, not pipes: a pipe read only after the other process has ended
  fills (64 KiB) and blocks its writer, which then never reaches the collective or the exit
  barrier (jax.distributed's shutdown, in which each process waits for all) the other waits in.
  Past `timeout` seconds, each process still running gets SIGABRT, on which Python's
  faulthandler writes every thread's stack into its output (where it waits), then all are
  killed and the test fails with every process's output.
  """
  logs = [os.path.join(log_dir, f'process_{i}.log') for i in range(len(commands))]
  env = dict(env, PYTHONFAULTHANDLER='1')
  procs, hung = [], []
  try:
    for command, log in zip(commands, logs):
      with open(log, 'w') as f:
        procs.append(subprocess.Popen(command, cwd=helpers.ROOT, env=env, stdout=f,
                                      stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    for p in procs:
      try:
        p.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        break
    hung = [i for i, p in enumerate(procs) if p.poll() is None]
    for i in hung:
      procs[i].send_signal(signal.SIGABRT)
    for i in hung:
      try:
        procs[i].wait(timeout=10)
      except subprocess.TimeoutExpired:
        pass
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  outputs = [open(log).read() for log in logs[:len(procs)]]
  if hung:
    pytest.fail(f'process(es) {hung} still running after {timeout} s, all killed; output:\n' +
                '\n'.join(f'--- process {i} ---\n{out}' for i, out in enumerate(outputs)))
  return [p.returncode for p in procs], outputs


def config(augment_on='host'):
  c = alexnet_config.get_config('tiny')
  for key, value in {**OVERRIDES, 'input.augment_on': augment_on}.items():
    section, name = key.split('.')
    c[section][name] = value
  return c


def single_process_reference(augment_on='host'):
  """The same 3 steps in this process on 4 devices, with the global batch built from the two
  processes' shards side by side (process 0's rows first, as the mesh lays them out)."""
  c = config(augment_on)
  devices = jax.devices()[:4]
  mesh = sharding.create_mesh(c.mesh, devices)
  dataset = dataset_lib.build(c)
  iterators = [iter(pipeline.create_train_loader(c, dataset, seed=c.seed, shard_index=i,
                                                 shard_count=2)) for i in range(2)]
  model = alexnet.from_config(c.model)
  tx = optim.create_optimizer(c.optimizer, 1, STEPS)
  with jax.set_mesh(mesh):
    state = train.create_train_state(model, tx, jax.random.PRNGKey(c.seed),
                                     c.input.image_size, mesh)
    initial = jax.device_get(state.params)
    shardings = (sharding.tree_shardings(state, mesh), sharding.batch_sharding(mesh))
    augmentation = (device_preprocessing.Augmentation.of(dataset.preprocess, c.seed)
                    if augment_on == 'device' else None)
    step = train.jit_train_step(state, mesh, augmentation)
    for _ in range(STEPS):
      parts = [next(it) for it in iterators]
      batch = {k: jax.device_put(np.concatenate([p[k] for p in parts]), shardings[1])
               for k in parts[0]}
      state, _ = step(state, batch)
  return initial, state


@pytest.mark.parametrize('augment_on', ['host', 'device'])
def test_two_processes_match_one(tmp_path, augment_on):
  """With the augmentation on the device, each process's examples keep their global positions,
  so the two processes draw what the one process does."""
  workdir = str(tmp_path / 'run')
  port = free_port()
  env = helpers.cpu_env(2)
  commands = [helpers.launch_command(
      workdir, f'--config.distributed.coordinator_address=127.0.0.1:{port}',
      '--config.distributed.num_processes=2', f'--config.distributed.process_id={pid}',
      *[f'--config.{k}={v}' for k, v in OVERRIDES.items()],
      f'--config.input.augment_on={augment_on}') for pid in range(2)]
  codes, outputs = run_together(commands, tmp_path, env)
  for code, out in zip(codes, outputs):
    assert code == 0, out
  assert '2 process(es)' in outputs[0] and 'mesh data=2 x model=2' in outputs[0]
  assert 'step 3/3' not in outputs[1]  # progress is printed by process 0 only

  initial, reference = single_process_reference(augment_on)
  # Restored onto this one process's 4-device mesh: a checkpoint written by two processes.
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(STEPS), 'state'),
      jax.tree.map(ocp.utils.to_shape_dtype_struct, reference))
  assert int(saved.step) == STEPS
  # Each process wrote its own data-iterator state into the one checkpoint.
  data_dir = os.path.join(workdir, 'checkpoints', str(STEPS), 'data')
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(os.listdir(data_dir))
  for a, b in zip(jax.tree.leaves(saved.params), jax.tree.leaves(reference.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Training moved the params (so matching the reference means something).
  assert not np.allclose(saved.params['fc8']['kernel'], initial['fc8']['kernel'])

  # The data position is global: both processes saved the same one, and ONE process with 4
  # devices resumes there (params resharded, the same global order of examples).
  batch = config().train.batch_size
  for name in ('process_0-of-2.json', 'process_1-of-2.json'):
    with open(os.path.join(data_dir, name)) as f:
      assert json.load(f) == {'global_next_index': STEPS * batch}
  overrides = [f'--config.{k}={v}' for k, v in OVERRIDES.items() if k != 'train.num_steps']
  out = helpers.launch(workdir, *overrides, f'--config.train.num_steps={STEPS + 1}',
                       env=helpers.cpu_env(4), check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  assert f'at step {STEPS}' in out.stdout and 'could not be restored' not in out.stdout
  assert 'distributed.num_processes 2 -> -1' in out.stdout  # a class (a) note
  assert f'step {STEPS + 1}/{STEPS + 1}' in out.stdout


# Two processes (jax.distributed, one CPU device each) save two checkpoints of a state sharded
# over both, then restore while process 1 alone fails to read: first the latest checkpoint's
# arrays read from a copy cut short (damage that only one process's shards show), then, on the
# one left, an I/O error. Each process prints what it got, as JSON.
RESTORE_SCRIPT = r"""
import errno, json, os, shutil, sys
import jax, numpy as np, optax
pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=pid)
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from alexnet_jax import checkpointing, train
from alexnet_jax.errors import RunFailure
from tests.test_resilience import FakeDataIterator, truncate_array_files

mesh = jax.make_mesh((2,), ('data',))
def global_array(value, spec):
  return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda i: value[i])
def state(value):  # rows 0-31 on process 0, 32-63 on process 1
  w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) + 1000 * value
  s = train.TrainState.create(apply_fn=None, params={'w': global_array(w, P('data'))},
                              tx=optax.sgd(0.1), rng=global_array(np.zeros(2, np.uint32), P()))
  return s.replace(step=global_array(np.array(value, np.int32), P()))

checkpoints = checkpointing.Checkpoints(workdir, keep=5)
for step in (1, 2):
  checkpoints.save(step, state(step), FakeDataIterator(step), {'at': step}, {'model': {}})
checkpoints.manager.wait_until_finished()
damaged = os.path.join(workdir, 'damaged', '2')
if pid == 0:
  shutil.copytree(os.path.join(workdir, 'checkpoints', '2'), damaged)
  truncate_array_files(damaged)
multihost_utils.sync_global_devices('damaged copy made')

fault = {}
read = checkpointing._read_items
def process_1_reads_badly(step_dir, **items):
  if pid == 1 and 'state' in items:
    if fault.get('eio'):
      raise OSError(errno.EIO, 'Input/output error')
    if step_dir.endswith(os.sep + '2'):
      step_dir = damaged
  return read(step_dir, **items)
checkpointing._read_items = process_1_reads_badly

def restore():
  restored = checkpoints.restore_latest(lambda step, config: state(0), FakeDataIterator(),
                                        lambda step: 0)
  shard = restored.state.params['w'].addressable_shards[0].data
  return {'step': restored.step, 'w': float(np.asarray(shard).min()),
          'steps': list(checkpoints.manager.all_steps())}
out = {'damaged': restore()}
fault['eio'] = True
try:
  out['eio'] = restore()
except RunFailure as e:
  out['eio'] = 'RunFailure: ' + str(e)
out['left'] = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
print(json.dumps(out), flush=True)
"""


def test_restore_with_one_process_failing_is_agreed_by_both(tmp_path):
  """Damage only process 1 sees: both move the checkpoint aside and restore the one before it.
  An I/O error on process 1 alone: both stop with one RunFailure line, nothing moved. Neither
  waits on the other (Orbax's restore barrier would hold a reader 300 s)."""
  port = free_port()
  logs = tmp_path / 'logs'
  logs.mkdir()
  codes, outputs = run_together(
      [[sys.executable, '-c', RESTORE_SCRIPT, str(pid), str(port), str(tmp_path)]
       for pid in range(2)], logs, helpers.cpu_env(1))
  results = []
  for code, out in zip(codes, outputs):
    assert code == 0, out
    results.append(json.loads(out.strip().splitlines()[-1]))
  for pid, result in enumerate(results):
    # Step 2 moved aside (by process 0), step 1 restored: each process's rows of step 1's w.
    assert result['damaged'] == {'step': 1, 'w': 1000.0 + 32 * 64 * pid, 'steps': [1]}
    assert result['left'] == ['1']  # the I/O error moved nothing
  assert os.listdir(tmp_path / 'checkpoints.unreadable') == ['2']
  assert results[1]['eio'].startswith('RunFailure: could not read the checkpoint at step 1 in ')
  assert 'OSError: [Errno 5] Input/output error' in results[1]['eio']
  assert results[0]['eio'].startswith('RunFailure: process(es) 1 could not read the checkpoint '
                                      'at step 1')
  assert 'nothing was moved' in results[0]['eio'] and 'nothing was moved' in results[1]['eio']
  assert 'cannot be read on process 1 (ValueError: OUT_OF_RANGE' in outputs[1]
  assert 'cannot be read by another process' in outputs[0]


def test_cluster_detection():
  assert not multihost.cluster_detected({})
  assert not multihost.cluster_detected({'SLURM_NTASKS': '1'})
  assert multihost.cluster_detected({'SLURM_NTASKS': '4'})
  assert multihost.cluster_detected({'OMPI_COMM_WORLD_SIZE': '2'})
  assert multihost.cluster_detected({'TPU_WORKER_HOSTNAMES': 'a,b'})
  assert not multihost.cluster_detected({'TPU_WORKER_HOSTNAMES': 'a'})
