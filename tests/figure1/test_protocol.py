"""alexnet_jax/figure1.py: the full-pass training error against the same net written in numpy,
the two regimes' init and input against their definitions, pairing (same seed, same draws and
order for both activations), the lr choice and the pruned grid on made-up curves, the steps
ratio's interval against the t formula by hand, and a short run that stops where it should and
is the start of a longer one."""
import math
import os

import jax
import numpy as np
import pytest
from scipy import stats as scipy_stats

from alexnet_jax import figure1
from alexnet_jax.data import preprocessing
from alexnet_jax.errors import UserError
from tests import helpers

SIZE = 16


@pytest.fixture(scope='module')
def images():
  return figure1.load_images(helpers.DATA, 'train', SIZE, num_images=20)


def setup(**changes) -> figure1.Setup:
  base = dict(folder='data/clothing10-128', split='train', image_size=SIZE, num_images=20,
              batch_size=10, momentum=0.9, eval_every=2, target=0.5, stuck_steps=0)
  return figure1.Setup(**dict(base, **changes))


def test_load_images_is_a_balanced_subset_at_the_size(images):
  assert images.pixels.shape == (20, SIZE, SIZE, 3) and images.pixels.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(images.labels), [2] * 10)
  first = sorted(os.listdir(os.path.join(helpers.DATA, 'train', helpers.CLASSES[0])))[0]
  with open(os.path.join(helpers.DATA, 'train', helpers.CLASSES[0], first), 'rb') as f:
    img = preprocessing.decode_image(f.read())
  np.testing.assert_array_equal(images.pixels[0], preprocessing.center_crop(
      preprocessing.resize_shorter_side(img, SIZE), SIZE))


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
  x = figure1.regime_inputs(images.pixels, 'modern')
  params = figure1.init_params(3, 'modern', activation, SIZE)
  # A few SGD steps first, so that the guesses vary from image to image (a random net's do not).
  velocity = jax.tree.map(np.zeros_like, params)
  for _ in range(8):
    params, velocity, _ = figure1.sgd_step(activation, 10)(params, velocity, x, images.labels,
                                                         0.01, 0.9)
  logits = np_logits(params, x, activation)
  error, loss = figure1.training_error(params, x, images.labels, activation, 10)
  expected = np.mean(np.argmax(logits, -1) != images.labels)
  assert len(set(np.argmax(logits, -1))) > 3 and 0 < expected < 1  # not a constant guess
  assert error == expected
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  assert float(loss) == pytest.approx(-log_p[np.arange(20), images.labels].mean(), rel=1e-4)


def test_paper_init_std_001_and_zero_biases_modern_fan_in():
  for activation in ('relu', 'tanh'):
    paper = figure1.init_params(0, 'paper', activation, 32)
    modern = figure1.init_params(0, 'modern', activation, 32)
    assert figure1.num_params(paper) == 89_578  # 2,432 + 25,632 + 51,264 + 10,250
    for layer in figure1.LAYERS:
      kernel = np.asarray(paper[layer]['kernel'])
      assert not np.any(np.asarray(paper[layer]['bias']))
      assert not np.any(np.asarray(modern[layer]['bias']))
      assert np.std(kernel) == pytest.approx(0.01, rel=0.05) and abs(kernel.mean()) < 0.001
      fan_in = int(np.prod(kernel.shape[:-1]))
      gain = 2.0 if activation == 'relu' and layer != 'dense' else 1.0
      assert np.std(np.asarray(modern[layer]['kernel'])) == pytest.approx(
          math.sqrt(gain / fan_in), rel=0.05)


def test_same_seed_same_init_and_order_for_both_activations():
  relu = figure1.init_params(5, 'paper', 'relu', SIZE)
  tanh = figure1.init_params(5, 'paper', 'tanh', SIZE)
  jax.tree.map(np.testing.assert_array_equal, relu, tanh)
  modern_relu = figure1.init_params(5, 'modern', 'relu', SIZE)
  modern_tanh = figure1.init_params(5, 'modern', 'tanh', SIZE)
  for layer in figure1.LAYERS:  # the same draws, He's sqrt(2) apart before a ReLU
    scale = 1.0 if layer == 'dense' else math.sqrt(2)
    np.testing.assert_allclose(modern_relu[layer]['kernel'], scale * modern_tanh[layer]['kernel'],
                               rtol=1e-6)
  other = figure1.init_params(6, 'paper', 'relu', SIZE)
  assert not np.array_equal(other['conv1']['kernel'], relu['conv1']['kernel'])
  # The order is a function of the seed alone (train_run takes it so for both activations):
  # an epoch of 20 images in batches of 10 is a permutation.
  order = figure1.batch_order(5, 20, 10, 6)
  np.testing.assert_array_equal(order, figure1.batch_order(5, 20, 10, 6))
  assert order.shape == (6, 10)
  for epoch in range(3):
    assert sorted(order[2 * epoch:2 * epoch + 2].ravel()) == list(range(20))
  assert not np.array_equal(order, figure1.batch_order(6, 20, 10, 6))


def test_paper_input_is_raw_pixels_minus_the_mean_image(images):
  raw = images.pixels.astype(np.float64)
  mean_image = raw.mean(axis=0)
  np.testing.assert_allclose(figure1.regime_inputs(images.pixels, 'paper'), raw - mean_image,
                             atol=1e-4)
  modern = figure1.regime_inputs(images.pixels, 'modern')
  centred = raw - mean_image
  np.testing.assert_allclose(modern, centred / centred.std(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(modern.std(axis=(0, 1, 2)), 1, atol=1e-5)


# --- the lr choice, on made-up curves ---


def curve(lr, reach_at, max_steps, k=10, diverge_at=None, stuck=False):
  """A train_run-like result: error falls linearly from 0.9 to 0.25 at step reach_at."""
  steps, errors, loss = [0], [0.9], [2.3]
  outcome = 'max_steps'
  for s in range(k, max_steps + 1, k):
    steps.append(s)
    errors.append(0.9 if stuck else max(0.9 - 0.65 * s / reach_at, 0.0))
    loss.append(None if diverge_at and s >= diverge_at else 1.0)
    if diverge_at and s >= diverge_at:
      outcome = 'diverged'
    elif stuck and s >= 100:
      outcome = 'stuck'
    elif errors[-1] <= 0.25:
      outcome = 'reached'
    if outcome != 'max_steps':
      break
  return {'lr': lr, 'outcome': outcome, 'steps': steps, 'error': errors, 'loss': loss,
          'steps_to_target': steps[-1] if outcome == 'reached' else None,
          'max_steps': max_steps, 'wall_s': 0.0}


CURVES = {0.1: dict(reach_at=10_000, diverge_at=30),  # diverges
          0.05: dict(reach_at=40, diverge_at=40),  # non-finite at the step it would reach
          0.03: dict(reach_at=10_000, stuck=True),  # dead: at chance
          0.01: dict(reach_at=200), 0.003: dict(reach_at=200),  # a tie: the smaller lr wins
          0.001: dict(reach_at=600), 0.0003: dict(reach_at=5_000)}  # never within 1000


def test_choose_lr_fastest_that_did_not_diverge():
  runs = [curve(lr, max_steps=1000, **kw) for lr, kw in CURVES.items()]
  outcomes = {r['lr']: r['outcome'] for r in runs}
  assert outcomes == {0.1: 'diverged', 0.05: 'diverged', 0.03: 'stuck', 0.01: 'reached',
                      0.003: 'reached', 0.001: 'reached', 0.0003: 'max_steps'}
  assert figure1.choose_lr(runs) == 0.003
  assert figure1.choose_lr([r for r in runs if r['lr'] >= 0.01]) == 0.01
  assert figure1.choose_lr([r for r in runs if r['lr'] >= 0.03]) is None


def test_tune_prunes_only_runs_that_cannot_win():
  assert figure1.middle_out([0.1, 0.03, 0.01, 0.003, 0.001]) == [0.01, 0.03, 0.003, 0.1, 0.001]
  assert figure1.middle_out([0.001, 0.01, 0.003, 0.03]) == [0.003, 0.01, 0.001, 0.03]
  asked = []

  def run(lr, max_steps):
    asked.append((lr, max_steps))
    return curve(lr, max_steps=max_steps, **CURVES[lr])

  brute_force = figure1.choose_lr([curve(lr, max_steps=1000, **kw) for lr, kw in CURVES.items()])
  chosen, runs = figure1.tune(run, list(CURVES), 1000)
  assert chosen == brute_force == 0.003
  # Middle out: 0.01 first (reached at 200), then every other lr for at most 200 steps.
  assert asked == [(0.01, 1000), (0.03, 200), (0.003, 200), (0.05, 200), (0.001, 200),
                   (0.1, 200), (0.0003, 200)]
  assert [r['lr'] for r in runs] == sorted(CURVES, reverse=True)
  assert [r['outcome'] for r in runs] == ['diverged', 'diverged', 'stuck', 'reached', 'reached',
                                          'max_steps', 'max_steps']
  # Any order of the grid gives the same choice.
  for grid in ([0.1, 0.05, 0.03], [0.001, 0.0003, 0.01]):
    assert figure1.tune(run, grid, 1000)[0] == figure1.choose_lr(
        [curve(lr, max_steps=1000, **CURVES[lr]) for lr in grid])


def test_a_choice_at_the_grids_edge_extends_the_grid():
  assert [figure1.next_lr(lr, up=True) for lr in (0.001, 0.003, 0.03, 0.1)] == [
      0.003, 0.01, 0.1, 0.3]
  assert [figure1.next_lr(lr, up=False) for lr in (0.001, 0.003, 0.03, 0.1)] == [
      0.0003, 0.001, 0.01, 0.03]
  fastest = {0.0003: 900, 0.001: 700, 0.003: 500, 0.01: 300, 0.03: 200, 0.1: 150, 0.3: 170}
  asked = []

  def run(lr, max_steps):
    asked.append(lr)
    return curve(lr, fastest[lr], max_steps)

  # 0.01 is the grid's top and wins: 0.03 is tried, wins, then 0.1 (two extensions).
  assert figure1.tune(run, [0.001, 0.003, 0.01], 1000, extend=2)[0] == 0.1
  assert asked == [0.003, 0.01, 0.001, 0.03, 0.1]
  asked.clear()  # a third extension finds 0.3 slower: 0.1 is inside the lrs tried, and stays
  assert figure1.tune(run, [0.001, 0.003, 0.01], 1000, extend=5)[0] == 0.1
  assert asked == [0.003, 0.01, 0.001, 0.03, 0.1, 0.3]
  # At the bottom edge it goes down; without `extend`, never.
  fastest.update({0.0003: 100, 0.001: 200})
  assert figure1.tune(run, [0.001, 0.003], 1000, extend=0)[0] == 0.001
  assert figure1.tune(run, [0.001, 0.003], 1000, extend=1)[0] == 0.0003


def test_tuning_never_uses_the_measured_seeds(images, tmp_path):
  with pytest.raises(UserError, match='tuning seed'):
    figure1.run_regime(images, 'paper', setup(), {'relu': (0.01,), 'tanh': (0.01,)}, 4,
                       tuning_seed=2, seeds=(1, 2, 3), workdir=str(tmp_path))


# --- steps to a level and the ratio ---


def test_steps_to_and_common_level():
  a = {'steps': [0, 10, 20, 30], 'error': [0.9, 0.5, 0.3, 0.2]}
  b = {'steps': [0, 10, 20], 'error': [0.9, 0.6, 0.4]}
  assert figure1.steps_to(a, 0.25) == 30 and figure1.steps_to(b, 0.25) is None
  assert figure1.common_level([a], 0.25) == 0.25
  assert figure1.common_level([a, b], 0.25) == 0.4  # the lowest level both reach
  assert figure1.steps_to(a, 0.4) == 20 and figure1.steps_to(b, 0.4) == 20


def test_ratio_interval_is_the_t_interval_of_log_ratios_by_hand():
  relu, tanh = [100, 120, 90, 110], [500, 700, 400, 520]
  q = figure1.ratio_interval(relu, tanh)
  logs = np.log(np.array(tanh) / np.array(relu))
  half = scipy_stats.t.ppf(0.975, 3) * logs.std(ddof=1) / 2  # sqrt(4) = 2
  assert q['ratios'] == pytest.approx([5.0, 700 / 120, 400 / 90, 520 / 110])
  assert q['geometric_mean'] == pytest.approx(math.exp(logs.mean()))
  assert q['low'] == pytest.approx(math.exp(logs.mean() - half))
  assert q['high'] == pytest.approx(math.exp(logs.mean() + half))
  assert q['n'] == 4 and q['excludes_1']
  assert not figure1.ratio_interval([100, 100, 100], [90, 120, 100])['excludes_1']


# --- a run ---


def test_a_short_run_is_the_start_of_a_longer_one(images):
  x = figure1.regime_inputs(images.pixels, 'modern')
  long = figure1.train_run(x, images.labels, 'modern', 'relu', 0.01, 1, setup(target=0.0), 12)
  short = figure1.train_run(x, images.labels, 'modern', 'relu', 0.01, 1, setup(target=0.0), 6)
  assert long['steps'] == [0, 2, 4, 6, 8, 10, 12] and long['outcome'] == 'max_steps'
  cut = figure1.truncate(long, 6)
  assert cut['steps'] == short['steps'] and cut['outcome'] == short['outcome'] == 'max_steps'
  np.testing.assert_allclose(cut['error'], short['error'])
  np.testing.assert_allclose(cut['loss'], short['loss'], rtol=1e-5)
  assert long['error'][-1] < long['error'][0]  # it learns
  # It stops at the first pass at or below the target, and when the loss is not finite.
  level = long['error'][3]
  reached = figure1.train_run(x, images.labels, 'modern', 'relu', 0.01, 1,
                              setup(target=level), 12)
  assert reached['outcome'] == 'reached' and reached['steps_to_target'] == figure1.steps_to(
      long, level)
  diverged = figure1.train_run(x, images.labels, 'modern', 'relu', 1e6, 1, setup(), 12)
  assert diverged['outcome'] == 'diverged' and diverged['steps_to_target'] is None


def test_run_store_reuses_and_refuses(tmp_path):
  store = figure1.RunStore(str(tmp_path), 'paper', setup())
  run = dict(curve(0.01, reach_at=200, max_steps=1000), regime='paper', activation='relu', seed=1)
  store.save(run)
  assert store.load('relu', 0.01, 1, 1000)['steps_to_target'] == 200
  assert store.load('relu', 0.01, 1, 100)['outcome'] == 'max_steps'  # truncated
  assert store.load('relu', 0.01, 2, 1000) is None
  short = dict(curve(0.001, reach_at=600, max_steps=200), regime='paper', activation='relu',
               seed=1)
  store.save(short)
  assert store.load('relu', 0.001, 1, 200)['outcome'] == 'max_steps'
  assert store.load('relu', 0.001, 1, 1000) is None  # it stopped sooner: run it again
  with pytest.raises(UserError, match='another setup'):
    figure1.RunStore(str(tmp_path), 'paper', setup(target=0.3)).load('relu', 0.01, 1, 1000)
