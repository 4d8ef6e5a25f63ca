"""cuda-convnet's update in alexnet_jax/optim.py (configs/cifar10.py's recipe): two steps against
inc <- mom * inc - wc * epsW * w - eps * grad; w <- w + inc written out in float64 per layer
(epsB = 2 epsW on biases, wc 0 on the convolutions and the biases); the 'step' schedule at given
epochs; the AlexNet's update unchanged bit for bit; and the loss the step differentiates is the
batch mean (epsW is a rate on the mean gradient: src/layer.cu scales the sum by eps / numCases)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import optim
from alexnet_jax import train
from alexnet_jax.errors import UserError
from alexnet_jax.model import cuda_convnet
from alexnet_jax.tools import cli

cifar10 = cli.config_module('configs/cifar10.py')
alexnet_config = cli.config_module('configs/alexnet.py')

# layer-params-conv-local-11pct.cfg at 3878e8f, read by hand: (epsW, epsB, momW, wc) per layer.
FILE = {'conv1': (0.001, 0.002, 0.9, 0.0), 'conv2': (0.001, 0.002, 0.9, 0.0),
        'local3': (0.001, 0.002, 0.9, 0.004), 'local4': (0.001, 0.002, 0.9, 0.004),
        'fc10': (0.001, 0.002, 0.9, 0.004)}


def random_tree(rng, scale=1.0):
  shapes = {'conv1': (5, 5, 3, 4), 'conv2': (3, 4), 'local3': (2, 2, 6, 3), 'local4': (6, 3),
            'fc10': (3, 10)}
  return {name: {'kernel': (scale * rng.standard_normal(shape)).astype(np.float32),
                 'bias': (scale * rng.standard_normal(shape[-1:])).astype(np.float32)}
          for name, shape in shapes.items()}


def test_two_steps_are_cuda_convnets_update():
  rng = np.random.default_rng(0)
  w0 = random_tree(rng)
  grads = [random_tree(rng, 3.0) for _ in range(2)]
  tx = optim.create_optimizer(cifar10.get_config().optimizer, steps_per_epoch=390,
                              total_steps=17550)
  params = jax.tree.map(jnp.asarray, w0)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
  for layer, (eps_w, eps_b, mom, wc) in FILE.items():
    for leaf in ('kernel', 'bias'):
      # include/weights.cuh update(): inc = mom * inc + (-eps * grad); inc += -wc * eps * w
      # (weights only); w += inc.
      eps, decay = (eps_w, wc) if leaf == 'kernel' else (eps_b, 0.0)
      w = w0[layer][leaf].astype(np.float64)
      inc = np.zeros_like(w)
      for g in grads:
        inc = mom * inc - decay * eps_w * w - eps * g[layer][leaf].astype(np.float64)
        w = w + inc
      np.testing.assert_allclose(params[layer][leaf], w, rtol=1e-6, atol=1e-9,
                                 err_msg=f'{layer}/{leaf}')
  # The factors did something: conv1's weights saw no decay, local3's did.
  assert FILE['conv1'][3] == 0 and FILE['local3'][3] > 0


def test_the_factors_keep_the_state_and_need_their_layers():
  """Same optimizer-state structure with and without the factors (checkpoints alike); a layer
  named in decay_mults that the net lacks is one error line."""
  params = jax.tree.map(jnp.asarray, random_tree(np.random.default_rng(1)))
  plain = optim.create_optimizer(alexnet_config.get_config().optimizer, 10, 100)
  config = alexnet_config.get_config().optimizer
  config.decay_mults = 'conv1=0'
  with_factors = optim.create_optimizer(config, 10, 100)
  assert (jax.tree.structure(with_factors.init(params))
          == jax.tree.structure(plain.init(params)))
  config.decay_mults = 'conv9=0'
  tx = optim.create_optimizer(config, 10, 100)
  with pytest.raises(UserError, match='conv9'):
    tx.update(params, tx.init(params), params)
  config.decay_mults, config.name = 'conv1=0', 'adamw'
  with pytest.raises(UserError, match='sgd only'):
    optim.create_optimizer(config, 10, 100)
  for bad in ('conv1', 'conv1=-1', 'conv1=x', 'conv1=0,conv1=1'):
    with pytest.raises(UserError, match='decay_mults'):
      optim.parse_decay_mults(bad)


def test_the_alexnet_update_is_unchanged_bit_for_bit():
  """The default config's optimizer gives the same bits as the paper's chain written as it was
  (add_decayed_weights, scale_by_learning_rate, trace) for a few steps."""
  rng = np.random.default_rng(2)
  params = jax.tree.map(jnp.asarray, random_tree(rng))
  grads = [jax.tree.map(jnp.asarray, random_tree(rng)) for _ in range(3)]
  config = alexnet_config.get_config().optimizer
  ours = optim.create_optimizer(config, 10, 100)
  before = optax.inject_hyperparams(lambda learning_rate, momentum, weight_decay: optax.chain(
      optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate),
      optax.trace(decay=momentum)))(learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
  results = []
  for tx in (ours, before):
    p, state = params, tx.init(params)
    for g in grads:
      updates, state = jax.jit(tx.update)(g, state, p)
      p = optax.apply_updates(p, updates)
    results.append(p)
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_array_equal(a, b)


def test_step_schedule_at_given_epochs():
  """lr until epoch 35, lr / 10 until 40, lr / 100 after: the value the n-th update (count n,
  0-based) uses, at 390 steps per epoch."""
  config = cifar10.get_config().optimizer
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=390, total_steps=17550)
  for count, lr in ((0, 1e-3), (35 * 390 - 1, 1e-3), (35 * 390, 1e-4), (40 * 390 - 1, 1e-4),
                    (40 * 390, 1e-5), (45 * 390 - 1, 1e-5)):
    np.testing.assert_allclose(float(schedule(count)), lr, rtol=1e-6, err_msg=str(count))
  # '' keeps the division every step_epochs.
  config.step_at_epochs, config.step_epochs = '', 2.0
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
  assert [round(float(schedule(c)), 9) for c in (19, 20, 40)] == [1e-3, 1e-4, 1e-5]
  for bad in ('35,30', '0,5', 'x', '5,5'):
    with pytest.raises(UserError, match='step_at_epochs'):
      optim.parse_step_at_epochs(bad)


def test_the_step_takes_the_mean_gradient_over_the_batch():
  """A batch of two copies of an image moves the params as one copy does: the loss is the
  batch mean, so epsW is cuda-convnet's rate on the mean gradient (a sum would double it)."""
  config = cifar10.get_config()
  tx = optim.create_optimizer(config.optimizer, 390, 17550)
  net = cuda_convnet.CudaConvnetCifar10()
  image = jax.random.normal(jax.random.PRNGKey(3), (1, 24, 24, 3)) * 50.0
  state = train.create_train_state(net, tx, jax.random.PRNGKey(0), 24)
  step = jax.jit(train.train_step)  # not donated: `state` stays valid for the second call
  moved = []
  for copies in (1, 2):
    batch = {'image': jnp.tile(image, (copies, 1, 1, 1)), 'label': jnp.full((copies,), 3)}
    new_state, _ = step(state, batch)
    # The first step's velocity is the whole move: -lr * (g + wd * w) per parameter, read
    # from the momentum trace (params after minus before would lose it to rounding).
    moved.append(new_state.opt_state.inner_state[-1].trace)
  for a, b in zip(jax.tree.leaves(moved[0]), jax.tree.leaves(moved[1])):
    # float32 sums of 1 and 2 terms: equal to rounding (a sum, not a mean, would be 2x).
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())
  assert max(np.abs(a).max() for a in jax.tree.leaves(moved[0])) > 0
