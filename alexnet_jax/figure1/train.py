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
"""
import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import compiler_options
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net

FULL_PASS_CHUNK = 100  # images per iteration of the full pass


def _log_probs_of_labels(model, params, x, y):
  logits = model.apply({'params': params}, x)
  return logits, jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]


@functools.lru_cache(maxsize=None)
def sgd_steps(activation: str, num_classes: int):
  """jitted (params, velocity, x_all, y_all, indices, lr, momentum) -> (params, velocity,
  losses): one step of v <- momentum v - lr g; w <- w + v (section 5, without the weight decay)
  per row of indices (K x B), on the batch x_all[row], in one lax.scan; the K batch losses
  (each before its step's update). params and velocity are donated."""
  model = net.Net(activation, num_classes)

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
def full_pass(activation: str, num_classes: int):
  """jitted (params, x_chunks, y_chunks) -> (number misclassified, summed loss) over a set in
  chunks (C x N x ...; labels < 0 mark padding, counted in neither), one chunk at a time."""
  model = net.Net(activation, num_classes)

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
               chunk: int = FULL_PASS_CHUNK):
    self.activation, self.num_classes = activation, int(y.max()) + 1
    self.num_images = len(y)
    self.x_dev, self.y_dev = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    chunk = min(chunk, len(y))
    self.x_chunks = jnp.asarray(_chunks(x, chunk, 0))
    self.y_chunks = jnp.asarray(_chunks(np.asarray(y, np.int32), chunk, -1))
    self._steps = sgd_steps(activation, self.num_classes)
    self._full_pass = full_pass(activation, self.num_classes)

  def steps(self, params, velocity, indices: np.ndarray, lr: float, momentum: float):
    """One SGD step per row of indices (K x B), on the batch x[row]: (params, velocity, the K
    batch losses). The params and velocity passed in are donated: use the ones returned."""
    return self._steps(params, velocity, self.x_dev, self.y_dev,
                       jnp.asarray(indices, jnp.int32), lr, momentum)

  def training_error(self, params) -> tuple[float, float]:
    """(training error, mean loss): a full pass over the whole training set (not a running
    minibatch figure)."""
    wrong, loss = self._full_pass(params, self.x_chunks, self.y_chunks)
    return int(wrong) / self.num_images, float(loss) / self.num_images


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
  at s steps is the first s steps of a longer one (protocol.truncate)."""
  k = setup.eval_every
  if max_steps % k:
    raise ValueError(f'max_steps {max_steps} is not a multiple of eval_every {k}')
  loop = Loop(x, y, activation)
  chance = chance_error(loop.num_classes)
  params = net.init_params(seed, regime, activation, x.shape[1], loop.num_classes)
  velocity = jax.tree.map(jnp.zeros_like, params)
  order = data.batch_order(seed, len(x), setup.batch_size, max_steps)
  start = time.perf_counter()
  err, loss = loop.training_error(params)
  steps, errors, losses = [0], [err], [loss]
  outcome = 'max_steps'
  for begin in range(0, max_steps, k):
    params, velocity, batch_losses = loop.steps(params, velocity, order[begin:begin + k], lr,
                                                setup.momentum)
    err, loss = loop.training_error(params)
    steps.append(begin + k)
    errors.append(err)
    losses.append(loss)
    window = setup.stuck_steps // k + 1
    if not (np.isfinite(loss) and np.all(np.isfinite(batch_losses))):
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
