r"""The results of a sweep: tables (markdown + CSV) and plots (PNG), from its run workdirs.

  python -m alexnet_jax.tools.report --config=configs/sweeps/ablations.py --sweep_dir=runs/ablations

Written by the sweep when its runs end here (alexnet_jax/sweeps/runner.py); after `--submit=slurm`, or
with some runs still going, this command writes it over the finished runs there: per variant
the mean +- std over seeds, per effect the paired change against the baseline with its 95 %
t-interval, Holm-adjusted p and whether its sign is the paper's (alexnet_jax/sweeps/report.py).
Give it the same --config (and --config.sweep overrides) as the sweep: a finished run trained
with another config than that is refused.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.sweeps import report as sweep_report
from alexnet_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/sweeps/ablations.py',
                                          'The sweep config.')
_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'The sweep workdir.')
flags.mark_flags_as_required(['sweep_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  paths = sweep_report.write_report(_SWEEP_DIR.value, _CONFIG.value.sweep)
  with open(paths['markdown']) as f:
    print(f.read())
  print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
  cli.run(main)
