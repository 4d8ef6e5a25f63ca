"""Starting JAX on several hosts (jax.distributed), before anything else touches JAX.

Every process runs the same command; each reads only its own shard of the data (Grain shards
by jax.process_index()), feeds its rows of the global batch, and Orbax writes one checkpoint
from all of them together.
"""
import os

import jax

from alexnet_jax.errors import UserError

# Environments whose presence means "this process is one of several": JAX's own
# jax.distributed.initialize() reads the coordinator address and process ids from them.
_CLUSTER_MARKERS = (
    ('JAX_COORDINATOR_ADDRESS', None),
    ('SLURM_NTASKS', lambda v: int(v) > 1),
    ('OMPI_COMM_WORLD_SIZE', lambda v: int(v) > 1),
    ('TPU_WORKER_HOSTNAMES', lambda v: ',' in v),
)


def cluster_detected(environ=None) -> bool:
  environ = os.environ if environ is None else environ
  for name, several in _CLUSTER_MARKERS:
    value = environ.get(name)
    if value and (several is None or several(value)):
      return True
  return False


def initialize(dist_config) -> bool:
  """jax.distributed.initialize() when the config or the environment asks; True if it ran.

  config.distributed.coordinator_address ('host:port') with num_processes and process_id
  starts it explicitly (e.g. two processes on one machine); otherwise a detected cluster
  environment (SLURM, Open MPI, a multi-host TPU slice, JAX_COORDINATOR_ADDRESS) does.
  """
  # CPU processes exchange data through gloo (GPUs and TPUs have their own collectives).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if dist_config.coordinator_address:
    if dist_config.num_processes < 1 or not 0 <= dist_config.process_id < dist_config.num_processes:
      raise UserError('config.distributed.coordinator_address is set: also set num_processes '
                      f'(got {dist_config.num_processes}) and process_id in [0, num_processes) '
                      f'(got {dist_config.process_id})')
    jax.distributed.initialize(coordinator_address=dist_config.coordinator_address,
                               num_processes=dist_config.num_processes,
                               process_id=dist_config.process_id)
    return True
  if dist_config.auto and cluster_detected():
    jax.distributed.initialize()
    return True
  return False
