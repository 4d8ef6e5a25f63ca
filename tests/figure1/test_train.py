"""alexnet_jax/figure1/train.py: the full-pass training error against the same net written in
numpy, and a short run that stops where it should and is the start of a longer one."""
import jax
import numpy as np
import pytest

from alexnet_jax.figure1 import data
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import protocol
from alexnet_jax.figure1 import train
from tests.figure1.helpers import SIZE
from tests.figure1.helpers import setup


# --- the same net in numpy ---


def np_conv_same(x, w, b):
  k = w.shape[0]
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  h, wd = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (w.shape[-1],))
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + h, j:j + wd, :] @ w[i, j]
  return out + b


def np_max_pool_same(x, window=3, stride=2):
  """'SAME': ceil(n / stride) outputs, -inf padding split low/high (more on the high side)."""
  n, h, w, c = x.shape
  ho, wo = -(-h // stride), -(-w // stride)
  ph, pw = (ho - 1) * stride + window - h, (wo - 1) * stride + window - w
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
              constant_values=-np.inf)
  out = np.full((n, ho, wo, c), -np.inf)
  for p in range(ho):
    for q in range(wo):
      out[:, p, q] = xp[:, p * stride:p * stride + window, q * stride:q * stride + window].max(
          axis=(1, 2))
  return out


def np_logits(params, x, activation):
  act = {'relu': lambda v: np.maximum(v, 0), 'tanh': np.tanh}[activation]
  x = x.astype(np.float64)
  for layer in ('conv1', 'conv2', 'conv3'):
    p = {k: np.asarray(v, np.float64) for k, v in params[layer].items()}
    x = np_max_pool_same(act(np_conv_same(x, p['kernel'], p['bias'])))
  dense = {k: np.asarray(v, np.float64) for k, v in params['dense'].items()}
  return x.reshape(len(x), -1) @ dense['kernel'] + dense['bias']


@pytest.mark.parametrize('activation', ['relu', 'tanh'])
def test_full_pass_error_equals_numpy(images, activation):
  x = data.regime_inputs(images.pixels, 'modern')
  params = net.init_params(3, 'modern', activation, SIZE)
  # A few SGD steps first, so that the guesses vary from image to image (a random net's do not).
  velocity = jax.tree.map(np.zeros_like, params)
  loop = train.Loop(x, images.labels, activation, chunk=8)  # 3 chunks, the last one padded
  params, velocity, _ = loop.steps(params, velocity, np.tile(np.arange(20), (8, 1)), 0.01, 0.9)
  logits = np_logits(params, x, activation)
  error, loss = loop.training_error(params)
  expected = np.mean(np.argmax(logits, -1) != images.labels)
  assert len(set(np.argmax(logits, -1))) > 3 and 0 < expected < 1  # not a constant guess
  assert error == expected
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  assert float(loss) == pytest.approx(-log_p[np.arange(20), images.labels].mean(), rel=1e-4)


# --- a run ---


def test_a_short_run_is_the_start_of_a_longer_one(images):
  x = data.regime_inputs(images.pixels, 'modern')
  long = train.train_run(x, images.labels, 'modern', 'relu', 0.01, 1, setup(target=0.0), 12)
  short = train.train_run(x, images.labels, 'modern', 'relu', 0.01, 1, setup(target=0.0), 6)
  assert long['steps'] == [0, 2, 4, 6, 8, 10, 12] and long['outcome'] == 'max_steps'
  cut = protocol.truncate(long, 6)
  assert cut['steps'] == short['steps'] and cut['outcome'] == short['outcome'] == 'max_steps'
  np.testing.assert_allclose(cut['error'], short['error'])
  np.testing.assert_allclose(cut['loss'], short['loss'], rtol=1e-5)
  assert long['error'][-1] < long['error'][0]  # it learns
  # It stops at the first pass at or below the target, and when the loss is not finite.
  level = long['error'][3]
  reached = train.train_run(x, images.labels, 'modern', 'relu', 0.01, 1,
                              setup(target=level), 12)
  assert reached['outcome'] == 'reached' and reached['steps_to_target'] == protocol.steps_to(
      long, level)
  diverged = train.train_run(x, images.labels, 'modern', 'relu', 1e6, 1, setup(), 12)
  assert diverged['outcome'] == 'diverged' and diverged['steps_to_target'] is None
