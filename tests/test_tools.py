"""eval / predict / Figure 3 on a checkpoint trained in the test."""
import glob
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from alexnet_jax.tools import figures
from alexnet_jax import evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL = os.path.join(ROOT, 'data', 'clothing10-128', 'val')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tools') / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS='')
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/alexnet.py:tiny',
                         f'--workdir={workdir}', '--config.train.num_steps=30'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return workdir


def test_centre_eval_reproduces_the_runs_own_evaluation(run_dir):
  result = evaluation.evaluate_run(run_dir, ten_crop=False)
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  assert result['count'] == 240 and result['step'] == 30
  assert result['top1'] == summary['eval']['top1'] and result['top5'] == summary['eval']['top5']
  assert os.path.exists(os.path.join(run_dir, 'eval_centre_step30.json'))


def test_ten_crop_eval_runs_over_every_image(run_dir):
  result = evaluation.evaluate_run(run_dir, ten_crop=True)
  assert result['count'] == 240 and 0 <= result['top1'] <= result['top5'] <= 1
  assert os.path.exists(os.path.join(run_dir, 'eval_10crop_step30.json'))


def test_predict_agrees_with_evaluation(run_dir):
  # predict's own path (file -> preprocessing -> net) against the Grain eval pipeline: over
  # every validation image, its top-1 accuracy is the centre-crop eval's.
  classes = sorted(os.listdir(VAL))
  paths, labels = [], []
  for label, name in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(VAL, name))):
      paths.append(os.path.join(VAL, name, f))
      labels.append(name)
  predictions = evaluation.predict(run_dir, paths)
  assert all(len(p) == 5 for p in predictions)
  for top in predictions:
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert {name for name, _ in top} <= set(classes)
  accuracy = np.mean([top[0][0] == label for top, label in zip(predictions, labels)])
  centre = evaluation.evaluate_run(run_dir, ten_crop=False)
  assert abs(accuracy - centre['top1']) < 1e-9


def test_predict_command_prints_class_names(run_dir):
  images = sorted(glob.glob(os.path.join(VAL, 'hat', '*.jpg')))[:2]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS='')
  proc = subprocess.run([sys.executable, '-m', 'alexnet_jax.tools.predict',
                         f'--workdir={run_dir}', *images], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2 and lines[0].startswith(images[0])
  assert len(lines[0].split(': ')[1].split(', ')) == 5
  bad = subprocess.run([sys.executable, '-m', 'alexnet_jax.tools.predict',
                        f'--workdir={run_dir}', os.path.join(ROOT, 'README.md')], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and 'cannot read image' in bad.stderr
  assert 'Traceback' not in bad.stderr


def test_chroma_fraction_and_kernel_grid():
  rng = np.random.default_rng(0)
  gray = np.repeat(rng.standard_normal((4, 11, 11, 1)), 3, axis=-1)
  assert np.allclose(figures.chroma_fraction(gray), 0)
  red_only = np.zeros((1, 11, 11, 3))
  red_only[..., 0] = rng.standard_normal((11, 11))
  # A pure-red kernel, by the definition written out: colour energy over centred energy.
  k = red_only[0]
  colour = np.sum((k - k.mean(-1, keepdims=True)) ** 2)
  assert np.isclose(figures.chroma_fraction(red_only)[0], colour / np.sum((k - k.mean()) ** 2))
  kernel = rng.standard_normal((2, 11, 11, 3, 48))
  grid = figures.kernel_grid(kernel)
  assert grid.min() >= 0 and grid.max() <= 1
  # Group 1's first kernel at the top left, contrast-normalised; group 2's below the gap.
  first = kernel[0, ..., 0]
  np.testing.assert_allclose(grid[:11, :11], (first - first.min()) / np.ptp(first))
  second_group_top = 3 * 12 + 4
  last = kernel[1, ..., 0]
  np.testing.assert_allclose(grid[second_group_top:second_group_top + 11, :11],
                             (last - last.min()) / np.ptp(last))


def test_conv1_figure_writes_a_png(run_dir, tmp_path):
  out = str(tmp_path / 'conv1.png')
  result = figures.conv1_figure(run_dir, out)
  image = matplotlib.image.imread(out)
  assert image.ndim == 3 and min(image.shape[:2]) > 100
  assert len(result['chroma_per_group']) == 2


def write_train_curve(workdir, errors):
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step, err in enumerate(errors, 1):
      f.write(json.dumps({'step': step, 'train/top1': 1 - err, 'train/loss': 1.0}) + '\n')


def test_relu_tanh_ratio_from_curves(tmp_path):
  # ReLU's error falls 0.9 -> 0.4 over 10 steps, tanh's reaches the same level 3x later.
  relu = np.concatenate([np.linspace(0.9, 0.4, 10), np.full(20, 0.4)])
  tanh = np.linspace(0.9, 0.4, 30)
  write_train_curve(tmp_path / 'relu' / 'seed0', relu)
  write_train_curve(tmp_path / 'tanh' / 'seed0', tanh)
  out = str(tmp_path / 'fig1.png')
  result = figures.relu_tanh_figure(str(tmp_path), out, level=0.5)
  # Smoothing is a 5-log running mean: the steps where the running mean first reaches 0.5.
  def first(errors):
    smoothed = np.convolve(errors, np.ones(5) / 5, mode='valid')
    return int(np.nonzero(smoothed <= 0.5)[0][0]) + 5
  assert result['steps'] == {'relu': first(relu), 'tanh': first(tanh)}
  assert result['ratio'] == first(tanh) / first(relu) and result['ratio'] > 2
  assert matplotlib.image.imread(out).ndim == 3


def test_nearest_neighbours_by_hand():
  features = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.5]])
  # Distances from point 0: 0, 5, 1, 2.5 -> order 0, 2, 3, 1.
  np.testing.assert_array_equal(figures.nearest_neighbours(features, [0, 1], 3),
                                [[0, 2, 3], [1, 3, 2]])


def test_retrieval_figure(run_dir, tmp_path):
  images = tmp_path / 'images'
  for name in ('hat', 'shoes'):
    (images / name).mkdir(parents=True)
    for f in sorted(os.listdir(os.path.join(VAL, name)))[:4]:
      (images / name / f).write_bytes(open(os.path.join(VAL, name, f), 'rb').read())
  out = str(tmp_path / 'nn.png')
  result = figures.retrieval_figure(run_dir, str(images), out, num_queries=3, k=4)
  assert len(result['queries']) == 3
  for query, row in zip(result['queries'], result['neighbours']):
    assert row[0] == query and len(row) == 5 and len(set(row)) == 5  # itself first, distinct
  assert matplotlib.image.imread(out).ndim == 3
