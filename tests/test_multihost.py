"""alexnet_jax/multihost.py: two real training processes (launch.py, jax.distributed on
127.0.0.1, 2 CPU devices each) against the same steps in one process on 4 devices with the global
batch built from the two processes' data shards side by side (augmentation on the host and on
the device), their one checkpoint resumed by a
single process, and cluster detection from the environment variables of SLURM, Open MPI and TPU
pods."""
import json
import os
import socket
import subprocess

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
from configs import alexnet as alexnet_config
from tests import helpers

STEPS = 3
OVERRIDES = {'mesh.data': 2, 'mesh.model': 2, 'train.num_steps': STEPS,
             'optimizer.name': 'sgd', 'optimizer.lr': 0.02}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


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
  procs = []
  for pid in range(2):
    cmd = helpers.launch_command(
        workdir, f'--config.distributed.coordinator_address=127.0.0.1:{port}',
        '--config.distributed.num_processes=2', f'--config.distributed.process_id={pid}',
        *[f'--config.{k}={v}' for k, v in OVERRIDES.items()],
        f'--config.input.augment_on={augment_on}')
    procs.append(subprocess.Popen(cmd, cwd=helpers.ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out
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


def test_cluster_detection():
  assert not multihost.cluster_detected({})
  assert not multihost.cluster_detected({'SLURM_NTASKS': '1'})
  assert multihost.cluster_detected({'SLURM_NTASKS': '4'})
  assert multihost.cluster_detected({'OMPI_COMM_WORLD_SIZE': '2'})
  assert multihost.cluster_detected({'TPU_WORKER_HOSTNAMES': 'a,b'})
  assert not multihost.cluster_detected({'TPU_WORKER_HOSTNAMES': 'a'})
