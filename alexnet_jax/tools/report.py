r"""The results of a sweep: a table (markdown + CSV) and plots (PNG), from its run workdirs.

  python -m alexnet_jax.tools.report --config=configs/sweeps/ablations.py --sweep_dir=runs/ablations

Written by the sweep when it ends (alexnet_jax/sweeps.py); this command redoes it over whatever
runs exist.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax import sweeps
from alexnet_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/sweeps/ablations.py',
                                          'The sweep config.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'The sweep workdir.')
flags.mark_flags_as_required(['sweep_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  paths = sweeps.write_report(_SWEEP_DIR.value, _CONFIG.value.sweep)
  with open(paths['markdown']) as f:
    print(f.read())
  print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
  cli.run(main)
