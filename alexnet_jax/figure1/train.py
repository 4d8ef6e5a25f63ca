"""Figure 1's loop: plain SGD with momentum and no regularisation (section 5 without the weight
decay; no dropout, no augmentation), and the training error as a full pass over the set.

Pure functions: the SGD step and the full pass are jitted once per activation and shape, with
the learning rate an argument, so that a grid does not recompile. A seed fixes both the init
and the data order (net.init_params, data.batch_order): runs are paired.
"""
import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net


def _loss(model, params, x, y):
  logits = model.apply({'params': params}, x)
  return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@functools.lru_cache(maxsize=None)
def sgd_step(activation: str, num_classes: int):
  """jitted (params, velocity, x, y, lr, momentum) -> (params, velocity, loss): one step of
  v <- momentum v - lr g; w <- w + v (section 5, without the weight decay). A Python loop calls
  it: under lax.scan XLA:CPU runs these convolutions about 20x slower."""
  model = net.Net(activation, num_classes)
  grad = jax.value_and_grad(functools.partial(_loss, model))

  def step(params, velocity, x, y, lr, momentum):
    loss, g = grad(params, x, y)
    velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, g)
    return jax.tree.map(jnp.add, params, velocity), velocity, loss

  return jax.jit(step)


@functools.lru_cache(maxsize=None)
def full_pass(activation: str, num_classes: int):
  """jitted (params, x_all, y_all) -> (number misclassified, mean loss) over the whole set."""
  model = net.Net(activation, num_classes)

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


class Loop:
  """The protocol's work on one training set held in memory: SGD steps on batches of it
  (steps) and the full-pass training error (training_error). train_run drives it; the small-net
  benchmark (alexnet_jax/tools/small_net_benchmark.py) times the same object."""

  def __init__(self, x: np.ndarray, y: np.ndarray, activation: str):
    self.activation, self.num_classes = activation, int(y.max()) + 1
    self.x, self.y = x, y
    self.x_dev, self.y_dev = jnp.asarray(x), jnp.asarray(y)
    self._step = sgd_step(activation, self.num_classes)

  def steps(self, params, velocity, indices: np.ndarray, lr: float, momentum: float):
    """One SGD step per row of indices (K x B), on the batch x[row]: (params, velocity, the K
    batch losses)."""
    losses = []
    for idx in indices:
      params, velocity, loss = self._step(params, velocity, self.x[idx], self.y[idx], lr,
                                          momentum)
      losses.append(loss)
    return params, velocity, jnp.stack(losses)

  def training_error(self, params) -> tuple[float, float]:
    return training_error(params, self.x_dev, self.y_dev, self.activation, self.num_classes)


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
