"""Figure 1's loop: plain SGD with momentum and no regularisation (section 5 without the weight
decay; no dropout, no augmentation), and the training error as a full pass over the set.

Pure functions: the SGD steps and the full pass are jitted once per activation and shape, with
the learning rate an argument, so that a grid does not recompile. A seed fixes both the init
and the data order (net.init_params, data.batch_order): runs are paired.

Speed (the small-net benchmark, alexnet_jax/tools/small_net_benchmark.py; docs/performance.md):
the set lives on the device, and the K steps between two full passes are one compiled lax.scan
that gathers its own batches (one call, no host copy or dispatch per step; net.py's layers are
written so that XLA:CPU runs them fast inside it); the full pass is a loop over chunks of the
set (its activations stay small); both compile with the backend's options
(alexnet_jax/compiler_options.py), as the AlexNet steps do.

On CIFAR-10's 50,000 images (config.py:cifar10) the error is a pass over a fixed subset
(Setup.error_images), every epoch, with the step the target was crossed found on params kept
within that epoch (Setup.eval_refine); a run saves its state as it goes and resumes from it.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import compiler_options
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net

FULL_PASS_CHUNK = 100  # images per iteration of the full pass
SAVE_EVERY_S = 60.0  # a run's state is saved after a window once this long since the last


def _log_probs_of_labels(model, params, x, y):
  logits = model.apply({'params': params}, x)
  return logits, jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]


@functools.lru_cache(maxsize=None)
def sgd_steps(activation: str, num_classes: int, impl: str = 'auto'):
  """jitted (params, velocity, x_all, y_all, indices, lr, momentum) -> (params, velocity,
  losses): one step of v <- momentum v - lr g; w <- w + v (section 5, without the weight decay)
  per row of indices (K x B), on the batch x_all[row], in one lax.scan; the K batch losses
  (each before its step's update). params and velocity are donated. impl: the net's
  (net.CHOICES)."""
  model = net.Net(activation, num_classes, impl)

  def loss_fn(params, x, y):
    return -jnp.mean(_log_probs_of_labels(model, params, x, y)[1])

  grad = jax.value_and_grad(loss_fn)

  def steps(params, velocity, x_all, y_all, indices, lr, momentum):
    def step(carry, idx):
      params, velocity = carry
      loss, g = grad(params, x_all[idx], y_all[idx])
      velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, g)
      return (jax.tree.map(jnp.add, params, velocity), velocity), loss

    (params, velocity), losses = jax.lax.scan(step, (params, velocity), indices)
    return params, velocity, losses

  return jax.jit(steps, donate_argnums=(0, 1),
                 compiler_options=compiler_options.for_platform(jax.default_backend()))


@functools.lru_cache(maxsize=None)
def full_pass(activation: str, num_classes: int, impl: str = 'auto'):
  """jitted (params, x_chunks, y_chunks) -> (number misclassified, summed loss) over a set in
  chunks (C x N x ...; labels < 0 mark padding, counted in neither), one chunk at a time."""
  model = net.Net(activation, num_classes, impl)

  def run(params, x_chunks, y_chunks):
    def chunk(xy):
      x, y = xy
      real = y >= 0
      logits, log_p = _log_probs_of_labels(model, params, x, jnp.maximum(y, 0))
      return (jnp.sum((jnp.argmax(logits, -1) != y) & real),
              -jnp.sum(jnp.where(real, log_p, 0.0)))

    wrong, loss = jax.lax.map(chunk, (x_chunks, y_chunks))
    return jnp.sum(wrong), jnp.sum(loss)

  return jax.jit(run, compiler_options=compiler_options.for_platform(jax.default_backend()))


def _chunks(a: np.ndarray, size: int, fill) -> np.ndarray:
  """a's rows in chunks of `size`, the last one filled up with `fill`."""
  padded = np.concatenate([a, np.full((-len(a) % size,) + a.shape[1:], fill, a.dtype)])
  return padded.reshape((-1, size) + a.shape[1:])


class Loop:
  """The protocol's work on one training set held on the device: SGD steps on batches of it
  (steps) and the full-pass training error (training_error). train_run drives it; the small-net
  benchmark (alexnet_jax/tools/small_net_benchmark.py) times the same object."""

  def __init__(self, x: np.ndarray, y: np.ndarray, activation: str,
               chunk: int = FULL_PASS_CHUNK, error_indices: np.ndarray | None = None,
               impl: str = 'auto'):
    """error_indices: the images training_error measures (data.error_subset); None: all.
    impl: the net's layers (net.CHOICES)."""
    self.activation, self.num_classes = activation, int(y.max()) + 1
    self.num_images = len(y)
    self.x_dev, self.y_dev = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    if error_indices is not None:
      x, y = x[error_indices], y[error_indices]
    self.num_measured = len(y)
    chunk = min(chunk, len(y))
    self.x_chunks = jnp.asarray(_chunks(x, chunk, 0))
    self.y_chunks = jnp.asarray(_chunks(np.asarray(y, np.int32), chunk, -1))
    self._steps = sgd_steps(activation, self.num_classes, impl)
    self._full_pass = full_pass(activation, self.num_classes, impl)

  def steps(self, params, velocity, indices: np.ndarray, lr: float, momentum: float):
    """One SGD step per row of indices (K x B), on the batch x[row]: (params, velocity, the K
    batch losses). The params and velocity passed in are donated: use the ones returned."""
    return self._steps(params, velocity, self.x_dev, self.y_dev,
                       jnp.asarray(indices, jnp.int32), lr, momentum)

  def training_error(self, params) -> tuple[float, float]:
    """(training error, mean loss): a full pass over the training set, or over the images of
    error_indices (not a running minibatch figure)."""
    wrong, loss = self._full_pass(params, self.x_chunks, self.y_chunks)
    return int(wrong) / self.num_measured, float(loss) / self.num_measured


# Setup's fields added later (for CIFAR-10, issue 26; impl, issue 25): left out of record() at
# their defaults.
LATER_FIELDS = ('dataset', 'error_images', 'eval_refine', 'impl')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run's result depends on besides (regime, activation, lr, seed)."""
  folder: str
  split: str
  image_size: int
  num_images: int
  batch_size: int
  momentum: float
  eval_every: int  # K: the training error every K steps
  target: float
  stuck_steps: int  # error at/above chance on every pass this long: stuck (0: never)
  # Added for CIFAR-10 (issue 26); at these defaults a run is what it was before they existed,
  # and record() leaves them out, so that runs stored before still match.
  dataset: str = 'folder'  # data.DATASETS: the folder, or a TFDS dataset of that name
  error_images: int = 0  # the training error over data.error_subset of this many (0: all)
  eval_refine: tuple[int, ...] = ()  # finer spacings where the target is crossed (train_run)
  # The net's layers (net.CHOICES): the same function, gradients rounded differently. 'auto'
  # (net.auto_impl) is recorded as such, so that runs stored before impl existed still match.
  impl: str = 'auto'

  def record(self) -> dict:
    """The setup as stored with each run (JSON types): its fields, less the later ones at
    their defaults."""
    later = {f.name: f.default for f in dataclasses.fields(self) if f.name in LATER_FIELDS}
    fields = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(self).items()}
    return {k: v for k, v in fields.items() if k not in later or later[k] != getattr(self, k)}

  @property
  def step_unit(self) -> int:
    """The finest evaluation spacing: every run's max_steps is a multiple of it."""
    return self.eval_refine[-1] if self.eval_refine else self.eval_every


def setup_of(config) -> Setup:
  """The Setup of a Figure 1 config (config.py)."""
  return Setup(folder=config.folder, split=config.split, image_size=config.image_size,
               num_images=config.num_images, batch_size=config.batch_size,
               momentum=config.momentum, eval_every=config.eval_every, target=config.target,
               stuck_steps=config.stuck_steps, dataset=config.dataset,
               error_images=config.error_images, eval_refine=tuple(config.eval_refine),
               impl=config.impl)


def check_setup(setup: Setup, max_steps: int) -> None:
  """A UserError unless each eval_refine spacing divides the one before it (eval_every first)
  and is smaller, max_steps is a multiple of the finest (a tuning run stops at the steps
  the best lr took, a multiple of that), and impl is one of net.CHOICES."""
  if setup.impl not in net.CHOICES:
    raise UserError(f'impl {setup.impl!r}: choose one of {", ".join(net.CHOICES)}')
  spacings = (setup.eval_every,) + tuple(setup.eval_refine)
  for coarse, fine in zip(spacings, spacings[1:]):
    if not 0 < fine < coarse or coarse % fine:
      raise UserError(f'eval_refine {tuple(setup.eval_refine)}: each spacing must divide the one '
                      f'before it (eval_every {setup.eval_every} first) and be smaller')
  if max_steps % setup.step_unit:
    raise UserError(f'max_steps {max_steps} is not a multiple of the finest evaluation spacing '
                    f'{setup.step_unit} (eval_every, eval_refine)')


def chance_error(num_classes: int) -> float:
  return 1.0 - 1.0 / num_classes


# --- a run's state, saved as it goes: a run killed mid-way resumes from it ---


def _flat(tree: dict, prefix: str) -> dict:
  return {f'{prefix}/{layer}/{name}': np.asarray(value) for layer, leaves in tree.items()
          for name, value in leaves.items()}


def _unflat(arrays, prefix: str) -> dict:
  tree = {}
  for key in arrays.files:
    if key.startswith(prefix + '/'):
      _, layer, name = key.split('/')
      tree.setdefault(layer, {})[name] = jnp.asarray(arrays[key])
  return tree


def save_state(path: str, identity: dict, params, velocity, curve: dict, wall_s: float) -> None:
  """params, velocity (float32, exact), the curve so far (steps, error, loss) and the training
  time so far, with the run's identity, written atomically (a temporary file, then a rename: a
  kill leaves the previous state or this one, never half of one)."""
  meta = json.dumps({'identity': identity, 'curve': curve, 'wall_s': wall_s})
  with open(path + '.tmp', 'wb') as f:
    np.savez(f, meta=np.array(meta), **_flat(params, 'params'), **_flat(velocity, 'velocity'))
  os.replace(path + '.tmp', path)


def load_state(path: str, identity: dict, max_steps: int, eval_every: int):
  """(params, velocity, curve, wall_s) saved for this run, or None: no file, another run's
  (identity), or a step that this request's windows never end at."""
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as arrays:
    meta = json.loads(str(arrays['meta']))
    step = meta['curve']['steps'][-1]
    if meta['identity'] != identity or step > max_steps or step % eval_every:
      return None
    return (_unflat(arrays, 'params'), _unflat(arrays, 'velocity'), meta['curve'],
            meta['wall_s'])


# --- one run ---


def _refine(loop: Loop, snapshots: dict, begin: int, end: int, spacings, target: float,
            curve: dict) -> None:
  """The window (begin, end] ended at or below target: find where it was crossed, on the
  params saved every spacings[-1] steps (snapshots). At each spacing in turn, the points of
  the window so far, first to last, until one is at or below target: it ends the window, the
  last one above it starts it. The curve gets every point evaluated before the end, and ends
  there."""
  found = {end: (curve['error'][-1], curve['loss'][-1])}
  for spacing in spacings:
    for step in range(begin + spacing, end, spacing):
      if step not in found:
        found[step] = loop.training_error(snapshots[step])
      if found[step][0] <= target:
        end = step
        break
      begin = step
  del curve['steps'][-1], curve['error'][-1], curve['loss'][-1]
  for step in sorted(s for s in found if s <= end):
    curve['steps'].append(step)
    curve['error'].append(found[step][0])
    curve['loss'].append(found[step][1])


def train_run(x: np.ndarray, y: np.ndarray, regime: str, activation: str, lr: float, seed: int,
              setup: Setup, max_steps: int, log: Callable[[str], None] | None = None,
              state_path: str | None = None, save_every_s: float = SAVE_EVERY_S) -> dict:
  """SGD from init_params(seed) in batch_order(seed), the training error (over
  data.error_subset(setup.error_images)) at step 0 and every setup.eval_every steps (K), until
  that error is at or below setup.target ('reached'), a loss is not finite ('diverged'), the
  error has stayed at or above chance for setup.stuck_steps ('stuck'), or max_steps
  ('max_steps'; a window may end there short of K).

  setup.eval_refine (finer spacings, e.g. (100, 25) under K = 500): the params are kept every
  eval_refine[-1] steps of a window; when a window's end is at or below the target, the step of
  the crossing is found on them (_refine: first at the spacing of 100, then of 25 in the last
  100), so that it is known to 25 steps for the price of at most 4 + 3 passes, once a run.

  Deterministic on CPU: a run stopped at s steps is the first s steps of a longer one
  (protocol.truncate). state_path: the run's state (params, velocity, the curve, the time so
  far) is saved there after a window when save_every_s have passed since the last save, and a
  run started with a state saved for it goes on from there, bit for bit the same run."""
  check_setup(setup, max_steps)
  k = setup.eval_every
  unit = setup.step_unit
  loop = Loop(x, y, activation, error_indices=data.error_subset(
      y, int(y.max()) + 1, setup.error_images), impl=setup.impl)
  chance = chance_error(loop.num_classes)
  order = data.batch_order(seed, len(x), setup.batch_size, max_steps)
  identity = {'regime': regime, 'activation': activation, 'lr': lr, 'seed': seed,
              'setup': setup.record()}
  saved = load_state(state_path, identity, max_steps, k) if state_path else None
  if saved:
    params, velocity, curve, wall_s = saved
    if log:
      log(f'resumed at step {curve["steps"][-1]} (saved)')
  else:
    params = net.init_params(seed, regime, activation, x.shape[1], loop.num_classes)
    velocity = jax.tree.map(jnp.zeros_like, params)
    wall_s = 0.0
  start = time.perf_counter() - wall_s
  if not saved:
    err, loss = loop.training_error(params)
    curve = {'steps': [0], 'error': [err], 'loss': [loss]}
  steps, errors, losses = curve['steps'], curve['error'], curve['loss']
  outcome = 'max_steps'
  last_save = last_log = time.perf_counter()
  for begin in range(steps[-1], max_steps, k):
    end = min(begin + k, max_steps)
    snapshots, finite = {}, True
    for first in range(begin, end, unit if setup.eval_refine else k):
      last = min(first + (unit if setup.eval_refine else k), end)
      params, velocity, batch_losses = loop.steps(params, velocity, order[first:last], lr,
                                                  setup.momentum)
      finite = finite and bool(np.all(np.isfinite(batch_losses)))
      if setup.eval_refine and last < end:
        snapshots[last] = jax.tree.map(np.array, params)  # a copy: params are donated
    err, loss = loop.training_error(params)
    steps.append(end)
    errors.append(err)
    losses.append(loss)
    window = setup.stuck_steps // k + 1
    if not (np.isfinite(loss) and finite):
      outcome = 'diverged'
    elif errors[-1] <= setup.target:
      outcome = 'reached'
      if snapshots:
        _refine(loop, snapshots, begin, end, setup.eval_refine, setup.target, curve)
    elif (setup.stuck_steps and steps[-1] >= setup.stuck_steps
          and min(errors[-window:]) >= chance - 1e-9):
      outcome = 'stuck'
    now = time.perf_counter()
    if log and (outcome != 'max_steps' or steps[-1] % (10 * k) == 0 or now - last_log >= 60):
      last_log = now
      log(f'step {steps[-1]}: training error {errors[-1]:.3f}, loss {losses[-1]:.4f}')
    if outcome != 'max_steps':
      break
    if state_path and end < max_steps and now - last_save >= save_every_s:
      save_state(state_path, identity, params, velocity,
                 {'steps': steps, 'error': errors, 'loss': losses}, now - start)
      last_save = time.perf_counter()
  return {'regime': regime, 'activation': activation, 'lr': lr, 'seed': seed,
          'max_steps': max_steps, 'outcome': outcome,
          'steps_to_target': steps[-1] if outcome == 'reached' else None,
          'steps': steps, 'error': errors, 'loss': [l if np.isfinite(l) else None for l in losses],
          'wall_s': time.perf_counter() - start}
