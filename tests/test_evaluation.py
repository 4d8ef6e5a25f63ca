"""alexnet_jax/evaluation.py: the 10-crop eval_step against each crop through the net alone with
the softmax averaged in float64, and on the session's tiny training runs (conftest.py; one with
batch norm, whose running statistics must be restored): the centre-crop evaluate_run reproduces
the run's own evaluation in its summary.json, the 10-crop one covers every validation image, and
predict's own path (file -> preprocessing -> net) gets the same top-1 accuracy as the Grain eval
pipeline."""
import json
import os

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


# --- on a finished training run ---


RUNS = ['tiny_run', 'tiny_batchnorm_run']  # conftest.py's shared runs: LRN, batch norm


@pytest.mark.parametrize('run', RUNS)
def test_centre_eval_reproduces_the_runs_own_evaluation(run, request):
  """The training run's last evaluation, to the digit: with batch norm this holds only if the
  checkpoint's running statistics are restored and used (the test below shows they matter)."""
  workdir = request.getfixturevalue(run)
  result = evaluation.evaluate_run(workdir, ten_crop=False)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
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
  logits = model.apply(variables, images, train=False)
  initial = {name: {'mean': np.zeros_like(v['mean']), 'var': np.ones_like(v['var'])}
             for name, v in variables['batch_stats'].items()}
  other = model.apply({**variables, 'batch_stats': initial}, images, train=False)
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
  centre = evaluation.evaluate_run(tiny_run, ten_crop=False)
  assert abs(accuracy - centre['top1']) < 1e-9


def test_evaluating_a_run_opens_only_its_eval_split(tiny_run, monkeypatch):
  """evaluate_run reads the validation folder alone (its statistics come from the run's stats
  file): listing a training folder of ImageNet's size is not part of an evaluation."""
  opened = helpers.record_folder_openings(monkeypatch)
  assert evaluation.evaluate_run(tiny_run, ten_crop=False)['count'] == 240
  assert opened == ['val']
