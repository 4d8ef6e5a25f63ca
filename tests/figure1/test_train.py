"""alexnet_jax/figure1/train.py: the full-pass training error against the same net written in
numpy, a short run that stops where it should and is the start of a longer one; the error on a
fixed subset against a direct count, the crossing located on finer steps against a run
evaluated at those steps, and a run killed between two saves resumed bit for bit."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from alexnet_jax.figure1 import config as figure1_config
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


# --- the training error on a fixed subset, the crossing located, a run resumed ---


def test_the_error_on_a_subset_is_a_count_on_those_images(images):
  x = data.regime_inputs(images.pixels, 'modern')
  subset = data.error_subset(images.labels, 10, 10)  # one of each class
  params = net.init_params(4, 'modern', 'relu', SIZE)
  velocity = jax.tree.map(np.zeros_like, params)
  loop = train.Loop(x, images.labels, 'relu', chunk=4, error_indices=subset)
  params, _, _ = loop.steps(params, velocity, np.tile(np.arange(20), (6, 1)), 0.01, 0.9)
  guesses = np.argmax(np_logits(params, x[subset], 'relu'), -1)
  wrong = int(np.sum(guesses != images.labels[subset]))
  assert 0 < wrong < 10 and len(set(guesses)) > 2  # neither all right nor a constant guess
  assert loop.training_error(params)[0] == wrong / 10
  everything = train.Loop(x, images.labels, 'relu').training_error(params)[0]
  assert everything == np.mean(np.argmax(np_logits(params, x, 'relu'), -1) != images.labels)


def test_the_crossing_is_located_on_the_finer_steps(images):
  # One run evaluated every 2 steps is the truth; a run evaluated every 4 that refines to 2
  # must report what the rule gives on it: the first multiple of 4 at or below the level, then
  # the first multiple of 2 at or below it in the 4 steps before that.
  x = data.regime_inputs(images.pixels, 'modern')
  every_2 = train.train_run(x, images.labels, 'modern', 'relu', 0.01, 1,
                            setup(target=0.0, eval_every=2), 16)
  curve = dict(zip(every_2['steps'], every_2['error']))
  tried = 0
  for level in sorted(set(every_2['error']), reverse=True):
    coarse = next((s for s in range(0, 17, 4) if curve.get(s, 1) <= level), None)
    if coarse is None or coarse == 0:
      continue
    want = next(s for s in (coarse - 2, coarse) if curve[s] <= level)
    refined = train.train_run(x, images.labels, 'modern', 'relu', 0.01, 1,
                              setup(target=level, eval_every=4, eval_refine=(2,)), 16)
    assert refined['outcome'] == 'reached' and refined['steps_to_target'] == want, level
    # Its passes: every 4 steps before the crossing's window, then step coarse - 2 and the end.
    assert refined['steps'] == sorted(set(range(0, coarse - 3, 4)) | {coarse - 2, want})
    assert refined['error'] == [curve[s] for s in refined['steps']]  # the same run, bit for bit
    tried += want % 4 != 0
  assert tried >= 1  # at least one crossing fell between two passes 4 steps apart


@pytest.mark.parametrize('changes, kill_at_call, saved_at', [
    ({}, 4, 6),  # the quick config: a pass every 2 steps, killed in the steps 6-8
    (dict(eval_every=4, eval_refine=(2,), error_images=10), 3, 4)])  # killed in steps 4-6
def test_a_run_killed_between_saves_resumes_bit_for_bit(images, tmp_path, monkeypatch,
                                                         changes, kill_at_call, saved_at):
  quick = train.setup_of(figure1_config.get_config('quick'))
  run_setup = dataclasses.replace(quick, target=-1.0, **changes)  # never reached: all 12 steps
  x = data.regime_inputs(images.pixels, 'modern')
  seen = []  # the params of every training-error pass
  original_error, original_steps = train.Loop.training_error, train.Loop.steps

  def recording(self, params):
    seen.append(jax.tree.map(np.array, params))
    return original_error(self, params)

  monkeypatch.setattr(train.Loop, 'training_error', recording)

  def run(state_path):
    seen.clear()
    result = train.train_run(x, images.labels, 'modern', 'tanh', 0.03, 2, run_setup, 12,
                             state_path=state_path, save_every_s=0)
    return result, seen[-1]

  whole, whole_params = run(None)
  state = str(tmp_path / 'run.state.npz')
  calls = []

  def killed(self, *args):
    calls.append(1)
    if len(calls) == kill_at_call:
      raise KeyboardInterrupt  # as a kill would, between two saves
    return original_steps(self, *args)

  monkeypatch.setattr(train.Loop, 'steps', killed)
  with pytest.raises(KeyboardInterrupt):
    run(state)
  monkeypatch.setattr(train.Loop, 'steps', original_steps)
  with np.load(state) as saved:
    assert json.loads(str(saved['meta']))['curve']['steps'][-1] == saved_at
  logged = []
  seen.clear()
  resumed = train.train_run(x, images.labels, 'modern', 'tanh', 0.03, 2, run_setup, 12,
                            log=logged.append, state_path=state, save_every_s=0)
  resumed_params = seen[-1]
  assert f'resumed at step {saved_at} (saved)' in logged
  assert len(seen) == (12 - saved_at) // run_setup.eval_every  # only the passes after the save
  for key in ('steps', 'error', 'loss', 'outcome'):
    assert resumed[key] == whole[key], key
  for layer in net.LAYERS:
    for name in ('kernel', 'bias'):
      np.testing.assert_array_equal(resumed_params[layer][name], whole_params[layer][name])
  assert whole['error'][-1] < whole['error'][0]  # it learned: the params moved
