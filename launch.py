r"""Train (and evaluate) AlexNet from a config file.

  python launch.py --config=configs/alexnet.py:demo --workdir=runs/demo
  python launch.py --config=configs/alexnet.py --workdir=runs/imagenet \
      --config.dataset.data_dir=/data/tfds --config.optimizer.lr=0.02

Config variants (after the ':'): none = the paper's recipe on imagenet2012; demo = the full
AlexNet on the embedded photos in data/clothing10-128 (minutes on a CPU); tiny = a narrow net
for tests. Any config value can be overridden with --config.<key>=<value>; an unknown key is an error.
Re-running the same command with the same --workdir resumes from its latest checkpoint.

A sweep config (configs/sweeps/ablations.py) runs every variant x seed, each the launch command
above in its own workdir under --workdir, then writes a results table (paired effects against
the baseline with 95 % t-intervals) and plots there. A finished run is skipped, an interrupted
one resumes, one trained with another config than the sweep now asks for is refused.
  --parallel=N     N runs at once here, each on its own cores (CPU) or GPUs (one per run, a
                   pair for the paper's split); 1 (default) runs one at a time on everything.
  --submit=slurm   submit the runs as one SLURM job array through submitit (resources from
                   config.sweep.slurm) and return; preempted tasks save a checkpoint and are
                   requeued. `python -m alexnet_jax.tools.report` writes the report later.
  --dry_run        print one plain launch command per run instead.
"""
import os
import signal
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.errors import UserError
from alexnet_jax.tools import cli

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF (TensorBoard files, TFDS) is chatty.

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/alexnet.py or configs/alexnet.py:demo.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard files and '
    'summary.json. An existing workdir is resumed.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'With a sweep config (configs/sweeps/*.py): print one launch command per '
    'run instead of running them.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'With a sweep config: how many runs at once on this machine, each pinned to '
    'its own cores (CPU) or GPUs (one per run, two for mesh.model=2); 1 = one at a time, '
    'unpinned.', lower_bound=1)
_SUBMIT = flags.DEFINE_enum(
    'submit', None, ['slurm'], 'With a sweep config: submit the unfinished runs as one SLURM '
    'job array (one task per run, resources from config.sweep.slurm) and return; collect the '
    'results later with python -m alexnet_jax.tools.report.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here, not at the top: JAX and TensorFlow-backed libraries take seconds to load,
  # and --help and flag errors answer without them.
  if 'sweep' in _CONFIG.value:
    from alexnet_jax.sweeps import runner  # pylint: disable=g-import-not-at-top
    stopped_by = runner.run_sweep(
        _CONFIG.value.sweep, _WORKDIR.value, dry_run=_DRY_RUN.value,
        parallel=_PARALLEL.value, submit=_SUBMIT.value or '',
        config_file=flags.FLAGS['config'].config_filename)
    if stopped_by:  # SIGTERM / SIGINT: the running runs saved their checkpoints
      sys.exit(128 + signal.Signals[stopped_by].value)
    return
  if flags.FLAGS['parallel'].present or _SUBMIT.value:
    raise UserError('--parallel and --submit are for sweep configs (configs/sweeps/*.py)')
  from alexnet_jax import config_validation  # pylint: disable=g-import-not-at-top
  # Types and ranges before jax.distributed starts: a bad value fails every host at once,
  # without waiting for the others to connect (train checks the mesh and batches later).
  config_validation.validate(_CONFIG.value)
  from alexnet_jax import multihost  # pylint: disable=g-import-not-at-top
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  multihost.initialize(_CONFIG.value.distributed)
  # A UserError (exit 2) or RunFailure (exit 3: divergence, checkpoint I/O, with the workdir
  # left restorable) becomes one `error:` line in cli.run.
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if summary.get('stopped_by'):  # SIGTERM / SIGINT: checkpoint saved, the usual exit status
    sys.exit(128 + signal.Signals[summary['stopped_by']].value)


if __name__ == '__main__':
  cli.run(main)  # one-line errors, quiet library logs, huge pages on CPU hosts (tools/cli.py)
