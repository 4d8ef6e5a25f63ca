"""The paper's Figure 1 (section 3.1), run the way the paper ran it: a small convolutional net
with ReLUs against the same net with tanh units, plain SGD with momentum and no regularisation,
each activation at the learning rate that reaches 25 % training error fastest, and the ratio of
the steps each needs.

The net is cuda-convnet's CIFAR-10 layout (the paper's Figure 1 net was a four-layer net on
CIFAR-10): conv 5x5x32 -> max pool 3/2 -> conv 5x5x32 -> max pool 3/2 -> conv 5x5x64 -> max pool
3/2 -> dense (classes), 'SAME' padding, the activation after each conv (max pooling commutes with
both activations), no LRN, no dropout. On 32x32 RGB and 10 classes: 89,578 parameters.

The data: the embedded photos (one folder split) at image_size px (shorter side, then the centre
crop), held in memory. Two regimes:
- 'paper': weights N(0, 0.01), zero biases, raw pixels 0..255 minus the mean image (section 2);
- 'modern': fan-in normal weights (He, std sqrt(2 / fan_in), before a ReLU; LeCun, sqrt(1 /
  fan_in), before a tanh and for the classifier), zero biases, pixels minus the mean image over
  their per-channel std.

Pure functions: the SGD step and the full pass are jitted once per activation and shape, with
the learning rate an argument, so that a grid does not recompile. A seed fixes both the init (the
same standard normal draws for both activations) and the data order: runs are paired. The
experiment (run_regime) keeps every finished run as a JSON file and skips it when run again.
"""
import dataclasses
import functools
import json
import math
import os
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import stats
from alexnet_jax.data import preprocessing
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.model import pooling

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
REGIMES = ('paper', 'modern')
CONV_FEATURES = (32, 32, 64)
LAYERS = ('conv1', 'conv2', 'conv3', 'dense')
PAPER_STD = 0.01  # section 5: "a zero-mean Gaussian distribution with standard deviation 0.01"


# --- the net ---


def max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
  """Max pooling of B x H x W x C with 'SAME' padding (-inf), through the library's pooling,
  whose backward XLA:CPU runs fast (flax's nn.max_pool's select_and_scatter is several times
  slower here)."""
  pads = [(0, 0)]
  for n in x.shape[1:3]:
    total = max((-(-n // stride) - 1) * stride + window - n, 0)
    pads.append((total // 2, total - total // 2))
  x = jnp.pad(x, pads + [(0, 0)], constant_values=-jnp.inf)
  return pooling.grouped_max_pool(x[None], window, stride)[0]


class Net(nn.Module):
  """Three 5x5 conv layers, each followed by 3/2 max pooling, and one dense layer."""
  activation: str
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    for i, features in enumerate(CONV_FEATURES):
      x = nn.Conv(features, (5, 5), padding='SAME', name=f'conv{i + 1}')(x)
      x = max_pool(act(x))
    return nn.Dense(self.num_classes, name='dense')(x.reshape(x.shape[0], -1))


def init_std(regime: str, activation: str, layer: str, fan_in: int) -> float:
  """The weights' standard deviation of one layer in a regime (module docstring)."""
  if regime == 'paper':
    return PAPER_STD
  if regime == 'modern':
    gain = 2.0 if activation == 'relu' and layer != 'dense' else 1.0
    return math.sqrt(gain / fan_in)
  raise ValueError(f'unknown regime {regime!r}; choose: {", ".join(REGIMES)}')


def init_params(seed: int, regime: str, activation: str, image_size: int,
                num_classes: int = 10) -> dict:
  """Normal weights scaled per init_std, zero biases. Layer i draws from fold_in(key(seed), i),
  so that relu and tanh nets of the same seed share their standard normal draws."""
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  shapes = jax.eval_shape(Net(activation, num_classes).init, jax.random.key(0), dummy)['params']
  key = jax.random.key(seed)
  params = {}
  for i, layer in enumerate(LAYERS):
    shape = shapes[layer]['kernel'].shape
    std = init_std(regime, activation, layer, int(np.prod(shape[:-1])))
    params[layer] = {'kernel': std * jax.random.normal(jax.random.fold_in(key, i), shape),
                     'bias': jnp.zeros(shapes[layer]['bias'].shape, jnp.float32)}
  return params


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# --- the data ---


@dataclasses.dataclass(frozen=True)
class Images:
  pixels: np.ndarray  # N x S x S x 3 uint8
  labels: np.ndarray  # N int32
  class_names: tuple[str, ...]


def load_images(folder: str, split: str, image_size: int, num_images: int = 0) -> Images:
  """A folder split (root/split/<class>/<images>, as ImageFolderSource lists it) at image_size:
  the shorter side resized, then the centre crop. num_images > 0 keeps the first
  num_images // classes files of each class (a balanced subset)."""
  source = sources.ImageFolderSource(folder, split)
  paths, labels = np.array(source.paths), np.array(source.labels, np.int32)
  if num_images:
    per_class = max(1, num_images // len(source.class_names))
    keep = np.concatenate([np.nonzero(labels == c)[0][:per_class]
                           for c in range(len(source.class_names))])
    paths, labels = paths[keep], labels[keep]
  pixels = []
  for path in paths:
    with open(path, 'rb') as f:
      img = preprocessing.decode_image(f.read())
    pixels.append(preprocessing.center_crop(preprocessing.resize_shorter_side(img, image_size),
                                            image_size))
  return Images(np.stack(pixels), labels, tuple(source.class_names))


def regime_inputs(pixels: np.ndarray, regime: str) -> np.ndarray:
  """The net's float32 input: raw pixels minus the per-pixel mean image ('paper'), then over
  the per-channel std of that difference ('modern')."""
  x = pixels.astype(np.float64)
  x = x - x.mean(axis=0)
  if regime == 'modern':
    x = x / x.std(axis=(0, 1, 2))
  elif regime != 'paper':
    raise ValueError(f'unknown regime {regime!r}; choose: {", ".join(REGIMES)}')
  return x.astype(np.float32)


def batch_order(seed: int, num_images: int, batch_size: int, num_steps: int) -> np.ndarray:
  """num_steps x batch_size indices: a fresh permutation from the seed every epoch (the last
  incomplete batch of an epoch dropped)."""
  per_epoch = num_images // batch_size
  if per_epoch < 1:
    raise ValueError(f'batch {batch_size} is larger than the {num_images} images')
  rng = np.random.default_rng(seed)
  epochs = -(-num_steps // per_epoch)
  order = [rng.permutation(num_images)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
           for _ in range(epochs)]
  return np.concatenate(order)[:num_steps].astype(np.int32)


# --- SGD and the full pass, jitted once per activation ---


def _loss(model, params, x, y):
  logits = model.apply({'params': params}, x)
  return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@functools.lru_cache(maxsize=None)
def sgd_step(activation: str, num_classes: int):
  """jitted (params, velocity, x, y, lr, momentum) -> (params, velocity, loss): one step of
  v <- momentum v - lr g; w <- w + v (section 5, without the weight decay). A Python loop calls
  it: under lax.scan XLA:CPU runs these convolutions about 20x slower."""
  model = Net(activation, num_classes)
  grad = jax.value_and_grad(functools.partial(_loss, model))

  def step(params, velocity, x, y, lr, momentum):
    loss, g = grad(params, x, y)
    velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, g)
    return jax.tree.map(jnp.add, params, velocity), velocity, loss

  return jax.jit(step)


@functools.lru_cache(maxsize=None)
def full_pass(activation: str, num_classes: int):
  """jitted (params, x_all, y_all) -> (number misclassified, mean loss) over the whole set."""
  model = Net(activation, num_classes)

  def run(params, x_all, y_all):
    logits = model.apply({'params': params}, x_all)
    loss = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y_all[:, None], axis=1))
    return jnp.sum(jnp.argmax(logits, -1) != y_all), loss

  return jax.jit(run)


def training_error(params, x, y, activation: str, num_classes: int) -> tuple[float, float]:
  """(training error, mean loss): a full pass over the whole training set (not a running
  minibatch figure)."""
  wrong, loss = full_pass(activation, num_classes)(params, x, y)
  return int(wrong) / len(y), float(loss)


# --- one run ---


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run's result depends on besides (regime, activation, lr, seed)."""
  folder: str
  split: str
  image_size: int
  num_images: int
  batch_size: int
  momentum: float
  eval_every: int  # K: the full pass every K steps
  target: float
  stuck_steps: int  # error at/above chance on every pass this long: stuck (0: never)


def chance_error(num_classes: int) -> float:
  return 1.0 - 1.0 / num_classes


def train_run(x: np.ndarray, y: np.ndarray, regime: str, activation: str, lr: float, seed: int,
              setup: Setup, max_steps: int,
              log: Callable[[str], None] | None = None) -> dict:
  """SGD from init_params(seed) in batch_order(seed), the full-pass training error every
  setup.eval_every steps (and at step 0), until that error is at or below setup.target
  ('reached'), a loss is not finite ('diverged'), the error has stayed at or above chance for
  setup.stuck_steps ('stuck'), or max_steps ('max_steps'). Deterministic on CPU: a run stopped
  at s steps is the first s steps of a longer one (truncate)."""
  k = setup.eval_every
  if max_steps % k:
    raise ValueError(f'max_steps {max_steps} is not a multiple of eval_every {k}')
  num_classes = int(y.max()) + 1
  chance = chance_error(num_classes)
  step_fn = sgd_step(activation, num_classes)
  params = init_params(seed, regime, activation, x.shape[1], num_classes)
  velocity = jax.tree.map(jnp.zeros_like, params)
  order = batch_order(seed, len(x), setup.batch_size, max_steps)
  x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
  start = time.perf_counter()
  err, loss = training_error(params, x_dev, y_dev, activation, num_classes)
  steps, errors, losses = [0], [err], [loss]
  outcome = 'max_steps'
  for begin in range(0, max_steps, k):
    batch_losses = []
    for idx in order[begin:begin + k]:
      params, velocity, batch_loss = step_fn(params, velocity, x[idx], y[idx], lr,
                                             setup.momentum)
      batch_losses.append(batch_loss)
    err, loss = training_error(params, x_dev, y_dev, activation, num_classes)
    steps.append(begin + k)
    errors.append(err)
    losses.append(loss)
    window = setup.stuck_steps // k + 1
    if not (np.isfinite(loss) and np.all(np.isfinite(jnp.stack(batch_losses)))):
      outcome = 'diverged'
    elif errors[-1] <= setup.target:
      outcome = 'reached'
    elif (setup.stuck_steps and steps[-1] >= setup.stuck_steps
          and min(errors[-window:]) >= chance - 1e-9):
      outcome = 'stuck'
    if log and (outcome != 'max_steps' or steps[-1] % (10 * k) == 0):
      log(f'step {steps[-1]}: training error {errors[-1]:.3f}, loss {losses[-1]:.4f}')
    if outcome != 'max_steps':
      break
  return {'regime': regime, 'activation': activation, 'lr': lr, 'seed': seed,
          'max_steps': max_steps, 'outcome': outcome,
          'steps_to_target': steps[-1] if outcome == 'reached' else None,
          'steps': steps, 'error': errors, 'loss': [l if np.isfinite(l) else None for l in losses],
          'wall_s': time.perf_counter() - start}


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
  ran at least that long (truncate); one stored under another Setup is refused, not reused."""

  def __init__(self, directory: str, regime: str, setup: Setup):
    self.directory, self.regime, self.setup = directory, regime, setup

  def path(self, activation: str, lr: float, seed: int) -> str:
    return os.path.join(self.directory, f'{activation}_lr{lr:g}_seed{seed}.json')

  def load(self, activation: str, lr: float, seed: int, max_steps: int) -> dict | None:
    path = self.path(activation, lr, seed)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      run = json.load(f)
    if run.get('setup') != dataclasses.asdict(self.setup):
      raise UserError(f'{path} was run with another setup ({run.get("setup")}); use another '
                      '--workdir or delete it')
    if run['outcome'] == 'max_steps' and run['max_steps'] < max_steps:
      return None  # it stopped before this request's end: run again
    return truncate(run, max_steps)

  def save(self, run: dict) -> None:
    os.makedirs(self.directory, exist_ok=True)
    path = self.path(run['activation'], run['lr'], run['seed'])
    with open(path + '.tmp', 'w') as f:
      json.dump(dict(run, setup=dataclasses.asdict(self.setup)), f)
    os.replace(path + '.tmp', path)


def describe(run: dict) -> str:
  """'reached 25 % at step 110', 'diverged at step 40', ..."""
  end = run['steps'][-1]
  if run['outcome'] == 'reached':
    return f'reached the target at step {end}'
  if run['outcome'] == 'max_steps':
    return f'not at the target by step {end} (error {run["error"][-1]:.3f})'
  return f'{run["outcome"]} at step {end}'


def run_regime(images: Images, regime: str, setup: Setup, lr_grid: dict, max_steps: int,
               tuning_seed: int, seeds, workdir: str, extend: int = 0,
               log: Callable[[str], None] = lambda s: None) -> dict:
  """The regime's experiment: for each activation the lr from lr_grid[activation] (extended
  beyond its edge up to `extend` times) chosen on tuning_seed (tune), then both activations at their lr on every seed of `seeds`, steps to the
  target (or to the lowest level all reach), their ratio tanh / relu and its interval."""
  seeds = [int(s) for s in seeds]
  if tuning_seed in seeds:
    raise UserError(f'the measured seeds {seeds} include the tuning seed {tuning_seed}: the lr '
                    'chosen on a seed would bias its ratio')
  x = regime_inputs(images.pixels, regime)
  store = RunStore(os.path.join(workdir, 'runs', regime), regime, setup)

  def run(activation, lr, seed, steps):
    found = store.load(activation, lr, seed, steps)
    if found is None:
      log(f'[{regime}] {activation} lr {lr:g} seed {seed}: training (at most {steps} steps)')
      found = train_run(x, images.labels, regime, activation, lr, seed, setup, steps,
                        log=lambda s: log(f'[{regime}] {activation} lr {lr:g} seed {seed}: {s}'))
      store.save(found)
      how = f'{found["wall_s"]:.0f} s'
    else:
      how = 'stored'
    log(f'[{regime}] {activation} lr {lr:g} seed {seed}: {describe(found)} ({how})')
    return found

  result = {'regime': regime, 'setup': dataclasses.asdict(setup), 'tuning_seed': tuning_seed,
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
