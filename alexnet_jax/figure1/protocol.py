"""Figure 1's protocol: each activation at the learning rate that reaches the target fastest
(section 3.1: "each network's learning rate was chosen to make training as fast as possible"),
chosen on a tuning seed, then the steps to the target on the other seeds, and the ratio tanh /
relu with its t-interval over the seeds.

The experiment (run_regime) keeps every finished run as a JSON file (RunStore) and skips it
when run again; a run stored for more steps answers a shorter request (truncate); a run under
way saves its state as it goes and a command killed mid-run resumes it (train.train_run).
"""
import json
import math
import os
from typing import Callable

import numpy as np

from alexnet_jax import stats
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import train


# --- the learning rate, chosen as the paper did ---


def choose_lr(runs: list[dict]) -> float | None:
  """The lr whose run (on the tuning seed) reached the target in the fewest steps; diverged,
  stuck and unfinished runs never win; a tie goes to the smaller lr. None if none reached."""
  reached = [r for r in runs if r['outcome'] == 'reached']
  if not reached:
    return None
  return min(reached, key=lambda r: (r['steps_to_target'], r['lr']))['lr']


def middle_out(grid) -> list[float]:
  """The grid's order of trial: its middle lr (the lower of two), then alternately the next
  larger and the next smaller one."""
  grid = sorted(set(grid))
  i = (len(grid) - 1) // 2
  order, low, high = [grid[i]], i - 1, i + 1
  while low >= 0 or high < len(grid):
    if high < len(grid):
      order.append(grid[high])
      high += 1
    if low >= 0:
      order.append(grid[low])
      low -= 1
  return order


def next_lr(lr: float, up: bool) -> float:
  """lr's neighbour on the 1-3-10 sequence (..., 0.001, 0.003, 0.01, 0.03, 0.1, ...)."""
  exponent = math.floor(math.log10(lr) + 1e-9)
  ones = lr / 10 ** exponent < 2  # lr is 1e-k, not 3e-k
  if up:
    value = 3 * 10 ** exponent if ones else 10 ** (exponent + 1)
  else:
    value = 3 * 10 ** (exponent - 1) if ones else 10 ** exponent
  return float(f'{value:.0e}')


def tune(run: Callable[[float, int], dict], grid, max_steps: int,
         extend: int = 0) -> tuple[float | None, list]:
  """choose_lr over the grid, tried middle_out; once an lr has reached the target in s steps,
  the others run for at most s steps (one that needs more cannot win, so the choice does not
  depend on the order, only the cost does). While the choice is the largest or smallest lr
  tried, up to `extend` more lrs beyond it (next_lr), so that the fastest lr is not just the
  grid's edge. run(lr, max_steps) -> a train_run result."""
  runs, best = [], None

  def attempt(lr):
    nonlocal best
    runs.append(run(lr, max_steps if best is None else best))
    chosen = choose_lr(runs)
    if chosen is not None:
      best = next(r['steps_to_target'] for r in runs if r['lr'] == chosen)

  for lr in middle_out(grid):
    attempt(lr)
  for _ in range(extend):
    chosen, tried = choose_lr(runs), [r['lr'] for r in runs]
    if chosen is None or min(tried) < chosen < max(tried):
      break
    attempt(next_lr(chosen, up=chosen == max(tried)))
  return choose_lr(runs), sorted(runs, key=lambda r: -r['lr'])


# --- steps to a level, and the ratio over seeds ---


def steps_to(run: dict, level: float) -> int | None:
  """The first full-pass step whose training error is at or below level."""
  for step, err in zip(run['steps'], run['error']):
    if err is not None and np.isfinite(err) and err <= level + 1e-12:
      return step
  return None


def common_level(runs: list[dict], target: float) -> float:
  """target if every run reached it, else the lowest training error every run reaches."""
  if all(steps_to(r, target) is not None for r in runs):
    return target
  return max(min(e for e in r['error'] if e is not None and np.isfinite(e)) for r in runs)


def ratio_interval(relu_steps, tanh_steps, confidence: float = 0.95) -> dict:
  """Per-seed tanh/relu step ratios; their geometric mean and its t-interval, i.e.
  stats.t_interval of the log ratios, exponentiated."""
  ratios = np.asarray(tanh_steps, np.float64) / np.asarray(relu_steps, np.float64)
  iv = stats.t_interval(np.log(ratios), confidence)
  return {'ratios': ratios.tolist(), 'geometric_mean': math.exp(iv.mean),
          'low': math.exp(iv.low), 'high': math.exp(iv.high), 'n': iv.n, 'p_value': iv.p_value,
          'excludes_1': iv.resolved}


def truncate(run: dict, max_steps: int) -> dict:
  """The result the same run would have given with a smaller max_steps."""
  if run['steps'][-1] <= max_steps:
    return dict(run, max_steps=max_steps) if run['outcome'] != 'max_steps' else run
  keep = sum(1 for s in run['steps'] if s <= max_steps)
  return dict(run, max_steps=max_steps, outcome='max_steps', steps_to_target=None,
              steps=run['steps'][:keep], error=run['error'][:keep], loss=run['loss'][:keep])


# --- the experiment: every run a JSON file in the workdir, skipped when done ---


class RunStore:
  """<directory>/<activation>_lr<lr>_seed<seed>.json, one per finished run, with its Setup.

  A stored run answers a request for max_steps if it ended (reached, diverged, stuck) by then or
  ran at least that long (truncate); one stored under another Setup is refused, not reused.
  A run under way saves its state beside them (state_path, .state.npz; train.train_run), so
  that a command killed mid-run goes on from there; save removes it."""

  def __init__(self, directory: str, regime: str, setup: train.Setup):
    self.directory, self.regime, self.setup = directory, regime, setup

  def path(self, activation: str, lr: float, seed: int) -> str:
    return os.path.join(self.directory, f'{activation}_lr{lr:g}_seed{seed}.json')

  def load(self, activation: str, lr: float, seed: int, max_steps: int) -> dict | None:
    path = self.path(activation, lr, seed)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      run = json.load(f)
    if run.get('setup') != self.setup.record():
      raise UserError(f'{path} was run with another setup ({run.get("setup")}); use another '
                      '--workdir or delete it')
    if run['outcome'] == 'max_steps' and run['max_steps'] < max_steps:
      return None  # it stopped before this request's end: run again
    return truncate(run, max_steps)

  def state_path(self, activation: str, lr: float, seed: int) -> str:
    return self.path(activation, lr, seed)[:-len('.json')] + '.state.npz'

  def save(self, run: dict) -> None:
    os.makedirs(self.directory, exist_ok=True)
    path = self.path(run['activation'], run['lr'], run['seed'])
    with open(path + '.tmp', 'w') as f:
      json.dump(dict(run, setup=self.setup.record()), f)
    os.replace(path + '.tmp', path)
    state = self.state_path(run['activation'], run['lr'], run['seed'])
    if os.path.exists(state):
      os.remove(state)


def describe(run: dict) -> str:
  """'reached 25 % at step 110', 'diverged at step 40', ..."""
  end = run['steps'][-1]
  if run['outcome'] == 'reached':
    return f'reached the target at step {end}'
  if run['outcome'] == 'max_steps':
    return f'not at the target by step {end} (error {run["error"][-1]:.3f})'
  return f'{run["outcome"]} at step {end}'


def run_regime(images: data.Images, regime: str, setup: train.Setup, lr_grid: dict,
               max_steps: int, tuning_seed: int, seeds, workdir: str, extend: int = 0,
               log: Callable[[str], None] = lambda s: None) -> dict:
  """The regime's experiment: for each activation the lr from lr_grid[activation] (extended
  beyond its edge up to `extend` times) chosen on tuning_seed (tune), then both activations at
  their lr on every seed of `seeds`, steps to the target (or to the lowest level all reach),
  their ratio tanh / relu and its interval."""
  seeds = [int(s) for s in seeds]
  if tuning_seed in seeds:
    raise UserError(f'the measured seeds {seeds} include the tuning seed {tuning_seed}: the lr '
                    'chosen on a seed would bias its ratio')
  x = data.regime_inputs(images.pixels, regime)
  store = RunStore(os.path.join(workdir, 'runs', regime), regime, setup)

  def run(activation, lr, seed, steps):
    found = store.load(activation, lr, seed, steps)
    if found is None:
      log(f'[{regime}] {activation} lr {lr:g} seed {seed}: training (at most {steps} steps)')
      os.makedirs(store.directory, exist_ok=True)
      found = train.train_run(
          x, images.labels, regime, activation, lr, seed, setup, steps,
          log=lambda s: log(f'[{regime}] {activation} lr {lr:g} seed {seed}: {s}'),
          state_path=store.state_path(activation, lr, seed))
      store.save(found)
      how = f'{found["wall_s"]:.0f} s'
    else:
      how = 'stored'
    log(f'[{regime}] {activation} lr {lr:g} seed {seed}: {describe(found)} ({how})')
    return found

  result = {'regime': regime, 'setup': setup.record(), 'tuning_seed': tuning_seed,
            'seeds': seeds, 'max_steps': max_steps, 'tuning': {}, 'measured': {}}
  tuning_runs = []
  for activation in ('relu', 'tanh'):
    chosen, runs = tune(lambda lr, steps: run(activation, lr, tuning_seed, steps),
                        lr_grid[activation], max_steps, extend)
    tuning_runs += runs
    result['tuning'][activation] = {'lr': chosen, 'grid': [
        {'lr': r['lr'], 'outcome': r['outcome'], 'steps_to_target': r['steps_to_target'],
         'last_step': r['steps'][-1]} for r in runs]}
  result['tuning_wall_s'] = sum(r['wall_s'] for r in tuning_runs)
  if any(result['tuning'][a]['lr'] is None for a in ('relu', 'tanh')):
    result['level'] = None
    return result  # an activation never reached the target on the tuning seed: nothing to time
  measured = {a: [run(a, result['tuning'][a]['lr'], s, max_steps) for s in seeds]
              for a in ('relu', 'tanh')}
  everything = measured['relu'] + measured['tanh']
  result['measured_wall_s'] = sum(r['wall_s'] for r in everything)
  level = common_level(everything, setup.target)
  result['level'] = level
  for a in ('relu', 'tanh'):
    result['measured'][a] = [{'seed': r['seed'], 'steps_to_level': steps_to(r, level),
                              'outcome': r['outcome'], 'steps': r['steps'], 'error': r['error']}
                             for r in measured[a]]
  pairs = [(r, t) for r, t in zip(*(
      [m['steps_to_level'] for m in result['measured'][a]] for a in ('relu', 'tanh')))
           if r is not None and t is not None]
  result['ratio'] = ratio_interval(*zip(*pairs)) if pairs else None
  return result
