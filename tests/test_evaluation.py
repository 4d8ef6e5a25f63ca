"""alexnet_jax/evaluation.py: the 10-crop eval_step against each crop through the net alone with
the softmax averaged in float64, and on the session's tiny training runs (conftest.py; one with
batch norm, whose running statistics must be restored): the centre-crop evaluate_run reproduces
the run's own evaluation in its summary.json, the 10-crop one covers every validation image, and
predict's own path (file -> preprocessing -> net) gets the same top-1 accuracy as the Grain eval
pipeline."""
import functools
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import evaluation
from alexnet_jax import optim
from alexnet_jax import train
from alexnet_jax.model import alexnet
from tests import helpers


def test_ten_crop_eval_step_averages_softmax_over_crops():
  model = alexnet.AlexNet(width=0.125, num_classes=5)
  # Jitted: op-by-op (eager) init and eval compiled ~400 small programs (20 s of this test).
  params = jax.jit(lambda key: model.init({'params': key}, jnp.zeros((1, 67, 67, 3)),
                                          train=False)['params'])(jax.random.PRNGKey(0))
  state = train.TrainState.create(apply_fn=model.apply, params=params,
                                  tx=optim.paper_sgd(0.01), rng=jax.random.PRNGKey(1))
  images = jax.random.normal(jax.random.PRNGKey(2), (3, 10, 67, 67, 3))
  labels = jnp.array([0, 3, 4])
  mask = jnp.array([True, True, False])
  sums = jax.jit(evaluation.eval_step)(state, {'image': images, 'label': labels, 'mask': mask})
  # Independent: each crop through the net alone, softmax in float64, averaged.
  one_crop = jax.jit(lambda image: model.apply({'params': params}, image[None], train=False)[0])
  probs = np.stack([np.mean([_softmax64(one_crop(images[b, c])) for c in range(10)], axis=0)
                    for b in range(3)])
  ranks = np.argsort(-probs, axis=1)
  assert float(sums['count']) == 2
  assert float(sums['top1']) == sum(ranks[b, 0] == labels[b] for b in range(2))
  assert float(sums['top5']) == 2  # 5 classes: top-5 always holds
  np.testing.assert_allclose(float(sums['loss']),
                             -sum(np.log(probs[b, labels[b]]) for b in range(2)), rtol=1e-5)


def _softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max())
  return z / z.sum()


# --- top-k: ties ranked as argmax ranks them, non-finite logits wrong ---


def _stable_topk_truth(logits, labels, k):
  """The label among the first k of a stable descending sort (numpy): ties by class index."""
  order = np.argsort(-np.asarray(logits, np.float64), axis=-1, kind='stable')[:, :k]
  return np.array([label in row for row, label in zip(order, labels)], np.float32)


def test_topk_ties_are_ranked_as_argmax_and_a_stable_sort_rank_them():
  """Logits drawn from 3 values (ties everywhere) and constant rows: top-1 is exactly
  `argmax == label`, and top-k for k = 1..5 is the stable sort's."""
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 3, (300, 10)).astype(np.float32)
  logits[:40] = 0.25  # constant rows: a dead net
  labels = rng.integers(0, 10, 300)
  argmax = np.asarray(jnp.argmax(jnp.asarray(logits), axis=-1))
  np.testing.assert_array_equal(evaluation.topk_correct(logits, labels, 1),
                                (argmax == labels).astype(np.float32))
  for k in range(1, 6):
    np.testing.assert_array_equal(evaluation.topk_correct(logits, labels, k),
                                  _stable_topk_truth(logits, labels, k))


def test_constant_logits_score_as_argmax_not_one():
  """10 classes, one example per label, every logit 0: argmax says class 0, so top-1 is 1/10
  (only label 0), and top-5 is 5/10 (labels 0-4), not 1.0 as when ties counted as correct."""
  logits, labels = np.zeros((10, 10), np.float32), np.arange(10)
  assert float(jnp.mean(evaluation.topk_correct(logits, labels, 1))) == pytest.approx(0.1)
  np.testing.assert_array_equal(evaluation.topk_correct(logits, labels, 5),
                                [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def test_ties_at_the_kth_place():
  """k=5, scores 9 8 7 6 5 5 5 0: classes 4, 5, 6 tie for 5th place; only the lowest index,
  4, is in the top 5. With the tie in the top places instead (5 5 5 5 5 5 1 0), classes 0-4
  are in, 5 is out."""
  row = np.array([9, 8, 7, 6, 5, 5, 5, 0], np.float32)
  got = evaluation.topk_correct(np.tile(row, (8, 1)), np.arange(8), 5)
  np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 0, 0, 0])
  row = np.array([5, 5, 5, 5, 5, 5, 1, 0], np.float32)
  got = evaluation.topk_correct(np.tile(row, (8, 1)), np.arange(8), 5)
  np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 0, 0, 0])


def test_non_finite_logits_are_wrong():
  """An example with a NaN or an infinity anywhere in its logits is wrong at every k, even
  where its label would otherwise rank first; its finite neighbour in the batch still counts."""
  good = [3.0, 0.0, 0.0, 0.0, 0.0, 0.0]
  rows = [good, [np.nan] * 6, [3.0, np.nan, 0, 0, 0, 0], [np.inf, 0, 0, 0, 0, 0],
          [3.0, 0, 0, 0, 0, -np.inf], [np.nan, 0, 0, 0, 0, 0]]
  logits = np.array(rows, np.float32)
  for k in (1, 5):
    np.testing.assert_array_equal(evaluation.topk_correct(logits, np.zeros(6, int), k),
                                  [1, 0, 0, 0, 0, 0])


def _logits_state(num_classes):
  """A stand-in for the train state whose 'net' returns the first num_classes values of each
  image as its logits: the test writes the logits it wants into the images."""
  apply_fn = lambda variables, x, train: x.reshape(x.shape[0], -1)[:, :num_classes]
  return types.SimpleNamespace(apply_fn=apply_fn, params={}, batch_stats={})


def _images_of(logits_BxNxC):
  """B x N x 2 x 2 x 3 images whose first C values per crop are the given logits."""
  b, n, c = logits_BxNxC.shape
  images = np.zeros((b, n, 12), np.float32)
  images[..., :c] = logits_BxNxC
  return images.reshape(b, n, 2, 2, 3)


def test_eval_step_counts_constant_and_non_finite_logits_as_argmax_would():
  """Centre crop: constant logits are right only for label 0 (argmax's pick); NaN or inf
  logits are wrong. 10-crop: the same, a NaN in one crop of ten makes the image wrong, and
  mean probabilities that underflow to 0 (logits 0 against -200) tie, by class index, rather
  than all reading as log(0) = -inf."""
  c = 6
  state = _logits_state(c)
  constant, nan_row, far = np.zeros(c), np.full(c, np.nan), np.array([0.0] + [-200.0] * 5)
  inf_row = np.array([np.inf] + [0.0] * 5)
  labels = np.array([0, 3, 0, 0, 4, 5])
  rows = np.array([constant, constant, nan_row, inf_row, far, far], np.float32)
  centre = evaluation.eval_step(state, {'image': _images_of(rows[:, None])[:, 0],
                                        'label': labels, 'mask': np.ones(6, bool)})
  # label 0 of constant: in; label 3 of constant: top-5 only; NaN, inf: out; far, labels 4 and
  # 5: class 0 first, then the tied classes 1-5 by index: 4 is 5th, 5 is 6th.
  assert (float(centre['top1']), float(centre['top5'])) == (1.0, 3.0)
  crops = np.repeat(rows[:, None], 10, axis=1)
  crops[1, 7, 2] = np.nan  # one crop of an image that top-5 would otherwise count
  ten = evaluation.eval_step(state, {'image': _images_of(crops), 'label': labels,
                                     'mask': np.ones(6, bool)})
  assert (float(ten['top1']), float(ten['top5'])) == (1.0, 2.0)
  assert float(ten['count']) == 6


# --- on a finished training run ---


RUNS = ['tiny_run', 'tiny_batchnorm_run']  # conftest.py's shared runs: LRN, batch norm


@functools.cache
def centre_eval(workdir):
  """evaluate_run's centre-crop result on a shared (read-only) run, computed once per module for
  the tests that compare against it."""
  return evaluation.evaluate_run(workdir, ten_crop=False)


@pytest.mark.parametrize('run', RUNS)
def test_centre_eval_reproduces_the_runs_own_evaluation(run, request):
  """The training run's last evaluation, to the digit: with batch norm this holds only if the
  checkpoint's running statistics are restored and used (the test below shows they matter)."""
  workdir = request.getfixturevalue(run)
  result = centre_eval(workdir)
  summary = helpers.read_summary(workdir)
  assert result['count'] == 240 and result['step'] == 30
  assert result['top1'] == summary['eval']['top1'] and result['top5'] == summary['eval']['top5']
  assert result['loss'] == pytest.approx(summary['eval']['loss'], rel=1e-6)
  assert os.path.exists(os.path.join(workdir, 'eval_centre_step30.json'))


def test_batch_norm_statistics_are_restored_and_matter(tiny_batchnorm_run):
  """load_variables returns the checkpoint's running statistics as Orbax stored them (read here
  without the library), moved by training from their initial 0 and 1; the net evaluated with
  the initial ones instead gives other logits."""
  config, variables, step = checkpointing.load_variables(tiny_batchnorm_run)
  _, saved = helpers.restore_state(tiny_batchnorm_run, step)
  assert set(variables['batch_stats']) == {f'bn{k}' for k in range(1, 6)}
  for a, b in zip(jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(saved['batch_stats'])):
    np.testing.assert_array_equal(a, b)
  assert np.abs(variables['batch_stats']['bn1']['mean']).max() > 1e-3
  model = alexnet.from_config(config.model)
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 67, 67, 3))
  apply = jax.jit(functools.partial(model.apply, train=False))  # one program for both
  logits = apply(variables, images)
  initial = {name: {'mean': np.zeros_like(v['mean']), 'var': np.ones_like(v['var'])}
             for name, v in variables['batch_stats'].items()}
  other = apply({**variables, 'batch_stats': initial}, images)
  assert np.abs(np.asarray(logits) - np.asarray(other)).max() > 1e-3


def test_ten_crop_eval_runs_over_every_image(tiny_run):
  result = evaluation.evaluate_run(tiny_run, ten_crop=True)
  assert result['count'] == 240 and 0 <= result['top1'] <= result['top5'] <= 1
  assert os.path.exists(os.path.join(tiny_run, 'eval_10crop_step30.json'))


@pytest.mark.parametrize('ten_crop', [False, True])
def test_device_crops_evaluate_like_the_host_pipeline(tiny_run, ten_crop):
  """The same checkpoint with the mean, crops and std done on the device from uint8 patches
  (input.augment_on=device) and by the Grain workers: the same accuracy over the 240 images,
  the same loss up to float32 rounding."""
  host = evaluation.evaluate_run(tiny_run, ten_crop, augment_on='host')
  device = evaluation.evaluate_run(tiny_run, ten_crop, augment_on='device')
  assert (host['augment_on'], device['augment_on']) == ('host', 'device')
  assert host['count'] == device['count'] == 240
  assert host['top1'] == device['top1'] and host['top5'] == device['top5']
  assert device['loss'] == pytest.approx(host['loss'], rel=1e-5)


@pytest.mark.parametrize('run', RUNS)
def test_predict_agrees_with_evaluation(run, request):
  # predict's own path (file -> preprocessing -> net) against the Grain eval pipeline: over
  # every validation image, its top-1 accuracy is the centre-crop eval's.
  tiny_run = request.getfixturevalue(run)
  classes = sorted(os.listdir(helpers.VAL))
  paths, labels = [], []
  for label, name in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(helpers.VAL, name))):
      paths.append(os.path.join(helpers.VAL, name, f))
      labels.append(name)
  predictions = evaluation.predict(tiny_run, paths)
  assert all(len(p) == 5 for p in predictions)
  for top in predictions:
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert {name for name, _ in top} <= set(classes)
  accuracy = np.mean([top[0][0] == label for top, label in zip(predictions, labels)])
  assert abs(accuracy - centre_eval(tiny_run)['top1']) < 1e-9


def test_evaluating_a_run_opens_only_its_eval_split(tiny_run, monkeypatch):
  """evaluate_run reads the validation folder alone (its statistics come from the run's stats
  file): listing a training folder of ImageNet's size is not part of an evaluation."""
  opened = helpers.record_folder_openings(monkeypatch)
  assert evaluation.evaluate_run(tiny_run, ten_crop=False)['count'] == 240
  assert opened == ['val']
