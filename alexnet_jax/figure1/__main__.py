r"""The paper's Figure 1: ReLU against tanh on a small conv net, each at its fastest lr.

  python -m alexnet_jax.figure1 --workdir=runs/figure1
  python -m alexnet_jax.figure1 --workdir=/tmp/fig1 --config=alexnet_jax/figure1/config.py:quick
  python -m alexnet_jax.figure1 --workdir=runs/figure1-cifar10 \
      --config=alexnet_jax/figure1/config.py:cifar10 --config.folder=DIR

(CIFAR-10 as an image folder; --config.dataset=cifar10 in place of --config.folder reads
TFDS's cifar10.) --config defaults to this package's config.py, found beside this file (from any
directory). For each regime of the config (the paper's, the modern one; net.py, data.py): the
lr of each activation chosen on the tuning seed, then the steps to 25 % training error on the
other seeds, their ratio tanh / relu and its 95 % interval. Every finished run is a JSON file
under <workdir>/runs/ and is not run again; a run under way saves its state there every minute
(a command killed mid-run goes on from it when started again). The command writes
<workdir>/results.json, results.md and figure1.png (training error against steps, one line per
seed, ReLU solid, tanh dashed).
"""
import datetime
import json
import os
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import protocol
from alexnet_jax.figure1 import train
from alexnet_jax.tools import cli

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', CONFIG, 'Config file (default: config.py beside this command), e.g. '
    'alexnet_jax/figure1/config.py:quick.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where runs and results are written.')
flags.mark_flags_as_required(['workdir'])

PAPER_RATIO = 6.0  # section 3.1: "six times faster than an equivalent network with tanh neurons"


def _pyplot():
  """matplotlib's pyplot on the file backend, imported only when a figure is drawn (heavy)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def regimes_of(config) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The config's regimes, in net.REGIMES's order."""
  return [(name, config.regimes[name]) for name in net.REGIMES if name in config.regimes]


def error_rule(config, num_images: int) -> str:
  """How the training error is measured, in words."""
  subset = 0 < config.error_images < num_images
  over = (f'over a fixed subset of {config.error_images:,} images (as many of each class)'
          if subset else 'over the set')
  refine = ('' if not config.eval_refine else
            f', the crossing of {100 * config.target:g} % located to '
            f'{config.eval_refine[-1]} steps')
  return f'training error {over} every {config.eval_every} steps{refine}'


def _seeds(config, regime) -> tuple:
  return tuple(regime.get('seeds', config.seeds))


def _steps(value) -> str:
  return '-' if value is None else str(value)


def _grid_cell(entry: dict) -> str:
  if entry['outcome'] == 'reached':
    return str(entry['steps_to_target'])
  if entry['outcome'] == 'max_steps':
    return f'> {entry["last_step"]}'
  return f'{entry["outcome"]} ({entry["last_step"]})'


def _mean_range(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  return f'{sum(values) / len(values):.0f} ({min(values)}-{max(values)})'


def regime_markdown(r: dict) -> list[str]:
  """results.md's section for one regime."""
  target = r['setup']['target']
  lrs = sorted({e['lr'] for a in ('relu', 'tanh') for e in r['tuning'][a]['grid']}, reverse=True)
  lines = [f'## {r["regime"]} regime', '',
           f'Learning rates chosen on tuning seed {r["tuning_seed"]} (steps to '
           f'{100 * target:g} % training error for each lr tried; "> n": stopped at n steps, '
           'too slow to win or out of steps):', '',
           '| activation | chosen lr | ' + ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
           '|---|---|' + '---|' * len(lrs)]
  for a in ('relu', 'tanh'):
    t = r['tuning'][a]
    cells = {e['lr']: _grid_cell(e) for e in t['grid']}
    chosen = 'none reached' if t['lr'] is None else f'**{t["lr"]:g}**'
    lines.append(f'| {a} | {chosen} | ' + ' | '.join(cells.get(lr, '') for lr in lrs) + ' |')
  lines += ['', f'Tuning: {r["tuning_wall_s"]:.0f} s of training.', '']
  if r['level'] is None:
    lines += ['No lr of the grid reached the target on the tuning seed for one activation: '
              'nothing measured.', '']
    return lines
  level = r['level']
  note = '' if level == target else (f' (not every run reached {100 * target:g} %: the lowest '
                                     'level all of them reach)')
  lines += [f'Steps to {100 * level:.1f} % training error{note}, seeds {r["seeds"]}:', '',
            '| seed | relu | tanh | tanh / relu |', '|---|---|---|---|']
  for mr, mt in zip(r['measured']['relu'], r['measured']['tanh']):
    ratio = (f'{mt["steps_to_level"] / mr["steps_to_level"]:.2f}'
             if mr['steps_to_level'] and mt['steps_to_level'] else '-')
    lines.append(f'| {mr["seed"]} | {_steps(mr["steps_to_level"])} | '
                 f'{_steps(mt["steps_to_level"])} | {ratio} |')
  steps = {a: [m['steps_to_level'] for m in r['measured'][a]] for a in ('relu', 'tanh')}
  lines.append(f'| mean (range) | {_mean_range(steps["relu"])} | {_mean_range(steps["tanh"])} '
               '| |')
  lines.append('')
  if r['ratio']:
    q = r['ratio']
    lines.append(f'Ratio tanh / relu: geometric mean **{q["geometric_mean"]:.2f}x**, 95 % '
                 f't-interval {q["low"]:.2f}-{q["high"]:.2f} over {q["n"]} seeds '
                 f'({"excludes" if q["excludes_1"] else "includes"} 1; the paper: '
                 f'{PAPER_RATIO:g}x).')
  lines += ['', f'Measurement: {r["measured_wall_s"]:.0f} s of training.', '']
  return lines


def plot(results: list[dict], out: str) -> None:
  """One panel per regime: training error against steps, one colour per seed, ReLU solid,
  tanh dashed, the target level as a line (the paper's Figure 1)."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
  for ax, r in zip(axes[0], results):
    for a, style in (('relu', '-'), ('tanh', '--')):
      for i, m in enumerate(r['measured'].get(a, [])):
        ax.plot(m['steps'], [100 * e for e in m['error']], style, color=f'C{i}',
                label=f'{a} seed {m["seed"]}')
    ax.axhline(100 * r['setup']['target'], color='k', linewidth=0.8)
    lrs = ', '.join(f'{a} lr {r["tuning"][a]["lr"] or "none"}' for a in ('relu', 'tanh'))
    title = f'{r["regime"]} regime ({lrs})'
    if r.get('ratio'):
      q = r['ratio']
      title += f'\ntanh / relu steps: {q["geometric_mean"]:.1f}x ({q["low"]:.1f}-{q["high"]:.1f})'
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('training step (batch 100)' if r['setup']['batch_size'] == 100
                  else 'training step')
    subset = r['setup'].get('error_images', 0)
    ax.set_ylabel('training error (%), ' + (f'{subset:,} training images' if subset
                                            else 'full pass'))
    ax.set_ylim(0, 100)
    if r['measured']:
      ax.legend(fontsize=7, ncol=2)
    else:
      ax.text(0.5, 0.5, 'nothing measured: an activation never reached the target on the '
              'tuning seed', ha='center', fontsize=7, transform=ax.transAxes, wrap=True)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config, workdir = _CONFIG.value, _WORKDIR.value
  setup = train.setup_of(config)
  for _, regime in regimes_of(config):
    train.check_setup(setup, regime.max_steps)
  os.makedirs(workdir, exist_ok=True)
  log = lambda s: print(s, flush=True)
  images = data.load(config.dataset, config.folder, config.data_dir, config.split,
                     config.image_size, config.num_images, log=log)
  params = net.num_params(net.init_params(0, 'paper', 'relu', config.image_size,
                                          len(images.class_names)))
  seeds = {name: list(_seeds(config, regime)) for name, regime in regimes_of(config)}
  print(f'{len(images.labels)} images at {config.image_size} px, {len(images.class_names)} '
        f'classes | net: 3 conv 5x5 (32, 32, 64) + pool 3/2, dense; {params:,} parameters, '
        f'layers {net.resolve_impl(config.impl)} (impl {config.impl}) | '
        f'batch {config.batch_size}, momentum {config.momentum}, '
        f'{error_rule(config, len(images.labels))} | tuning seed {config.tuning_seed}, seeds '
        f'{seeds if len(set(map(tuple, seeds.values()))) > 1 else list(config.seeds)}',
        flush=True)
  start = time.time()
  results = [protocol.run_regime(images, name, setup, regime.lr_grid, regime.max_steps,
                                 config.tuning_seed, _seeds(config, regime), workdir,
                                 config.extend_grid, log=log)
             for name, regime in regimes_of(config)]
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump({'config': config.to_dict(), 'num_params': params,
               'date': datetime.date.today().isoformat(), 'regimes': results}, f, indent=1)
  lines = ['# Figure 1: ReLU against tanh', '',
           f'{len(images.labels)} images at {config.image_size} px; net of {params:,} '
           f'parameters; batch {config.batch_size}, momentum {config.momentum}, no '
           'regularisation.' + (f' The {error_rule(config, len(images.labels))}.'
                                if config.error_images or config.eval_refine else ''), '']
  for r in results:
    lines += regime_markdown(r)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines))
  plot(results, os.path.join(workdir, 'figure1.png'))
  for r in results:
    q = r.get('ratio')
    summary = ('no ratio' if not q else f'tanh / relu {q["geometric_mean"]:.2f}x (95 % '
               f'{q["low"]:.2f}-{q["high"]:.2f}, {q["n"]} seeds)')
    level = '-' if r['level'] is None else f'{100 * r["level"]:.1f} %'
    lrs = ', '.join(f'{a} {r["tuning"][a]["lr"] or "none"}' for a in ('relu', 'tanh'))
    print(f'{r["regime"]}: lr {lrs}'
          f' | level {level} | {summary} (the paper: {PAPER_RATIO:g}x)')
  print(f'wrote {workdir}/results.json, results.md, figure1.png ({time.time() - start:.0f} s)')


if __name__ == '__main__':
  cli.run(main)
