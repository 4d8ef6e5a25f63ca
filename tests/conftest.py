"""8 fake CPU devices for the sharding tests; set before JAX is imported anywhere.

The tests start many small training runs (launch.py in subprocesses) of the same few configs;
JAX's persistent compilation cache, shared through the environment with those processes, lets
all but the first of each skip XLA compilation (on 2 CPU cores: ~20 s -> ~2 s per run). A cold
run (a new machine, CI) compiles everything once: JAX_COMPILATION_CACHE_DIR=<an empty folder>
measures it.

Shared fixtures: `tiny_run`, one finished :tiny training run for the whole session (both xdist
workers), `tiny_batchnorm_run`, the same with batch norm, and `small_folder`, a few embedded
photos in two classes.
"""
import fcntl
import os
import tempfile

# XLA:CPU's LLVM at -O0 rather than its default -O3, for every program the tests compile here
# and in the processes they start (helpers.cpu_env passes XLA_FLAGS on): the same HLO (XLA's
# own passes run as always; LLVM no longer optimises the loops it generates), compiled faster,
# and compiling is most of a cold suite. -O2 had taken a quarter of -O3's time on the random
# initialisers (threefry). -O0 took another third off (2026-12-06, 2-core VM, empty cache): the
# split net's step 3.4 -> 2.1 s, its init and step on 8 devices 5.0 -> 3.4 s, and test files
# 10-30 % (-n 0: tests/test_sharding.py 70 -> 49 s, test_train.py 87 -> 69 s, test_evaluation.py
# 57 -> 49 s, model/test_alexnet.py 42 -> 38 s). The code
# runs slower (the tiny net's step 24 -> 39 ms; the full net's init 2 -> 4 s): the tests run
# few steps and never time one. The split net's losses equalled -O2's to the digits printed;
# every comparison in the suite is between programs compiled alike, or against an independent
# truth within a float tolerance. A level given in XLA_FLAGS wins (the last one counts).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = ' '.join([TEST_XLA_FLAGS, *os.environ.get('XLA_FLAGS', '').split(),
                                    '--xla_force_host_platform_device_count=8'])
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'alexnet_jax_tests_jit_cache'))
# Cache the small programs too (JAX keeps only those that took 1 s or more to compile): a
# launched tiny run then starts ~0.5 s sooner (4.4 -> 3.9 s, 2026-11-30).
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import shutil

import jax
import pytest

from tests import helpers  # imports JAX: after the environment above

# This process's backend started now, on the 8 devices: a test that sets XLA_FLAGS for the
# processes it starts (tests/sweeps/test_slurm.py) must not be the first to start it.
jax.devices()

TINY_RUN_STEPS = 30


def _shared_run(tmp_path_factory, name: str, *overrides: str) -> str:
  """The workdir of a finished :tiny run (launch.py, one CPU device, `overrides`), trained once
  per test session. Under pytest-xdist each worker has its own base temp dir inside the
  session's; the run lives in the session's, and a file lock makes a second worker wait for the
  first one's run and reuse it."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent  # the session's base temp dir, shared by the workers
  workdir = base / name
  with open(base / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
    if not (workdir / 'summary.json').exists():
      shutil.rmtree(workdir, ignore_errors=True)  # what a failed attempt left
      helpers.launch(str(workdir), *overrides)
  return str(workdir)


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """A finished :tiny run of TINY_RUN_STEPS steps. Tests read it (evaluate_run adds its
  eval_*.json files) but must not change its checkpoints or metrics."""
  return _shared_run(tmp_path_factory, 'tiny_run', f'--config.train.num_steps={TINY_RUN_STEPS}')


@pytest.fixture(scope='session')
def tiny_batchnorm_run(tmp_path_factory):
  """The same run with batch norm after every conv (model.norm=batchnorm_all): its checkpoints
  hold running statistics, which evaluation, predict and the figures must restore. Read-only,
  as tiny_run."""
  return _shared_run(tmp_path_factory, 'tiny_batchnorm_run',
                     f'--config.train.num_steps={TINY_RUN_STEPS}',
                     '--config.model.norm=batchnorm_all')


@pytest.fixture(scope='session')
def small_folder(tmp_path_factory):
  """tmp/{train,val}/{hat,shoes}/: 6 train and 3 val real JPEGs per class."""
  return helpers.copy_images(tmp_path_factory.mktemp('small'), helpers.SMALL_CLASSES,
                             {'train': 6, 'val': 3})
