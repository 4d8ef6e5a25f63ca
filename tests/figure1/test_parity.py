"""The fast Figure 1 loop (train.Loop: K steps in one lax.scan, net.py's conv_same and max_pool
gradients, the chunked full pass) against the loop written plainly, as it was before: flax's
nn.Conv, reduce_window max pooling with XLA's own gradients (select_and_scatter), one jitted
step at a time on host batches, the full pass in one go; here in float64.

- the params after 8 steps (two calls of 4) equal the float64 reference's within 1e-6 of each
  layer's largest weight (the float32 rounding of 8 steps; the steps move the weights by 3-45 %
  of that, so a wrong gradient or update cannot hide), in the paper's regime with ReLUs and the
  modern one with tanh;
- the quick config's modern regime (both activations reach the target there) gives the same
  experiment through the protocol, with either loop: the lrs chosen and every run's
  steps to the target.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.figure1 import config as figure1_config
from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import protocol
from alexnet_jax.figure1 import train
from tests.figure1.helpers import SIZE
from tests.figure1.helpers import setup


class ReferenceNet(nn.Module):
  """net.Net as flax writes it: nn.Conv, then XLA's max pooling with -inf 'SAME' padding."""
  activation: str
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    act = net.ACTIVATIONS[self.activation]
    for i, features in enumerate(net.CONV_FEATURES):
      x = nn.Conv(features, (5, 5), padding='SAME', name=f'conv{i + 1}', dtype=x.dtype,
                  param_dtype=x.dtype)(x)
      x = jax.lax.reduce_window(act(x), -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                'SAME')
    return nn.Dense(self.num_classes, name='dense', dtype=x.dtype,
                    param_dtype=x.dtype)(x.reshape(x.shape[0], -1))


def _float64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


class ReferenceLoop:
  """train.Loop's interface, computed the plain way in float64 (call under jax.enable_x64)."""

  def __init__(self, x, y, activation, error_indices=None, impl='auto'):
    del impl  # train.Loop's layer implementation: the reference is the plain net
    self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.int32)
    self.num_classes = int(y.max()) + 1
    measured = slice(None) if error_indices is None else error_indices
    self.x_measured, self.y_measured = self.x[measured], self.y[measured]
    model = ReferenceNet(activation, self.num_classes)

    def loss_of(params, x, y):
      logits = model.apply({'params': params}, x)
      log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)
      return -jnp.mean(log_p), logits

    def step(params, velocity, x, y, lr, momentum):
      (loss, _), g = jax.value_and_grad(loss_of, has_aux=True)(params, x, y)
      velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, g)
      return jax.tree.map(jnp.add, params, velocity), velocity, loss

    self._step, self._loss_of = jax.jit(step), jax.jit(loss_of)

  def steps(self, params, velocity, indices, lr, momentum):
    params, velocity = _float64(params), _float64(velocity)
    losses = []
    for idx in indices:
      params, velocity, loss = self._step(params, velocity, self.x[idx], self.y[idx], lr,
                                          momentum)
      losses.append(loss)
    return params, velocity, jnp.stack(losses)

  def training_error(self, params):
    loss, logits = self._loss_of(_float64(params), self.x_measured, self.y_measured)
    return float(np.mean(np.argmax(logits, -1) != self.y_measured)), float(loss)


@pytest.mark.parametrize('regime, activation, lr', [('paper', 'relu', 0.003),
                                                    ('modern', 'tanh', 0.03)])
def test_steps_equal_the_plain_loop_in_float64(images, regime, activation, lr):
  x = data.regime_inputs(images.pixels, regime)
  order = data.batch_order(3, 20, 10, 8)
  start = jax.tree.map(np.asarray, net.init_params(3, regime, activation, SIZE))
  with jax.enable_x64(True):
    reference = ReferenceLoop(x, images.labels, activation)
    want, _, _ = reference.steps(start, jax.tree.map(np.zeros_like, start), order, lr, 0.9)
    want = jax.tree.map(np.asarray, want)
  loop = train.Loop(x, images.labels, activation)
  params, velocity = net.init_params(3, regime, activation, SIZE), jax.tree.map(
      np.zeros_like, start)
  for begin in (0, 4):  # two calls: the state carries over from one scan to the next
    params, velocity, _ = loop.steps(params, velocity, order[begin:begin + 4], lr, 0.9)
  for layer in net.LAYERS:
    for name in ('kernel', 'bias'):
      scale = np.abs(want[layer]['kernel']).max()
      got = np.asarray(params[layer][name], np.float64)
      assert np.abs(got - want[layer][name]).max() <= 1e-6 * scale, (layer, name)
    moved = np.abs(want[layer]['kernel'] - start[layer]['kernel']).max()
    assert moved > 0.03 * np.abs(want[layer]['kernel']).max(), layer


def test_the_quick_protocol_gives_the_same_experiment_as_the_plain_loop(images, tmp_path,
                                                                          monkeypatch):
  quick = figure1_config.get_config('quick')
  regime = quick.regimes['modern']

  def experiment(workdir):
    return protocol.run_regime(images, 'modern', setup(), regime.lr_grid, regime.max_steps,
                               quick.tuning_seed, quick.seeds, str(workdir),
                               quick.extend_grid)

  fast = experiment(tmp_path / 'fast')
  monkeypatch.setattr(train, 'Loop', ReferenceLoop)
  with jax.enable_x64(True):
    plain = experiment(tmp_path / 'plain')
  assert fast['tuning'] == plain['tuning']
  assert fast['level'] == plain['level'] == setup().target
  for activation in ('relu', 'tanh'):
    got = [m['steps_to_level'] for m in fast['measured'][activation]]
    assert got == [m['steps_to_level'] for m in plain['measured'][activation]]
    assert all(got)  # every seed reached the target: the steps are numbers to compare
  assert fast['ratio']['ratios'] == plain['ratio']['ratios']
