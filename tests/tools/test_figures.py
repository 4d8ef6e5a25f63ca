"""alexnet_jax/tools/figures.py: the kernel grid and chroma fraction against their definitions
written out, nearest neighbours (Figure 4) against distances by hand, and the conv1 (Figure 3)
and retrieval figures written as images from the session's tiny training runs (conftest.py),
the retrieval's fc7 features of the batch-norm run with its checkpoint's running statistics.
Figure 1 is its own sub-package and command (alexnet_jax/figure1/, tests/figure1/)."""
import glob
import json
import os

import matplotlib.image
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import evaluation
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.model import alexnet
from alexnet_jax.tools import figures
from tests import helpers


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


def test_conv1_figure_writes_a_png(tiny_run, tmp_path):
  out = str(tmp_path / 'conv1.png')
  result = figures.conv1_figure(tiny_run, out)
  image = matplotlib.image.imread(out)
  assert image.ndim == 3 and min(image.shape[:2]) > 100
  assert len(result['chroma_per_group']) == 2


def test_nearest_neighbours_by_hand():
  features = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.5]])
  # Distances from point 0: 0, 5, 1, 2.5 -> order 0, 2, 3, 1.
  np.testing.assert_array_equal(figures.nearest_neighbours(features, [0, 1], 3),
                                [[0, 2, 3], [1, 3, 2]])


@pytest.mark.parametrize('run', ['tiny_run', 'tiny_batchnorm_run'])
def test_retrieval_figure(run, request, tmp_path):
  tiny_run = request.getfixturevalue(run)
  images = os.path.join(helpers.copy_images(tmp_path / 'images', ('hat', 'shoes'), {'val': 4}),
                        'val')  # images/val/{hat,shoes}/: 4 photos each
  out = str(tmp_path / 'nn.png')
  result = figures.retrieval_figure(tiny_run, images, out, num_queries=3, k=4)
  assert len(result['queries']) == 3
  for query, row in zip(result['queries'], result['neighbours']):
    assert row[0] == query and len(row) == 5 and len(set(row)) == 5  # itself first, distinct
  assert matplotlib.image.imread(out).ndim == 3


def test_fc7_features_of_a_batchnorm_run_use_its_running_statistics(tiny_batchnorm_run):
  """The embedding Figure 4 draws from: fc7 of the net with the checkpoint's own params and
  running statistics, read here straight from Orbax's files, in eval mode."""
  paths = sorted(glob.glob(os.path.join(helpers.VAL, 'hat', '*.jpg')))[:3]
  features, _ = figures.fc7_features(tiny_batchnorm_run, paths)
  _, saved = helpers.restore_state(tiny_batchnorm_run)
  config, _, _ = checkpointing.load_run(tiny_batchnorm_run)
  prep = dataset_lib.of_run(tiny_batchnorm_run, config).preprocess
  images = np.stack([evaluation.read_image(p, prep)[1] for p in paths])
  _, state = alexnet.from_config(config.model).apply(
      {'params': saved['params'], 'batch_stats': saved['batch_stats']}, images, train=False,
      mutable=['intermediates'])
  np.testing.assert_allclose(features, state['intermediates']['fc7_out'][0], rtol=1e-5,
                             atol=1e-5)


def test_curves_marks_where_a_run_left_chance_and_its_decays(tmp_path):
  """A run's metrics written by hand: at chance for the evaluations at steps 10 and 20, above it
  from step 30, a decay at step 50: the summary says so, and the PNG is drawn."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps({'model': {'num_classes': 10}}))
  records = [{'step': s, 'train/loss': 2.3 - 0.01 * s} for s in range(1, 61)]
  for step, top1, chance, decayed in [(10, 0.1, 1, 0), (20, 0.12, 1, 0), (30, 0.3, 0, 0),
                                      (40, 0.2, 1, 0), (50, 0.4, 0, 1), (60, 0.5, 0, 0)]:
    records.append({'step': step, 'eval/top1': top1, 'eval/at_chance': float(chance),
                    'eval/lr_decayed': float(decayed)})
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  proc = helpers.run_tool('figures', 'curves', f'--workdir={workdir}',
                          f'--out={tmp_path}/curves.png', timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert 'left chance at step 30' in proc.stdout
  assert 'lr decays at steps [50], 0 before leaving chance' in proc.stdout
  helpers.assert_png(tmp_path / 'curves.png')
  summary = figures.chance_summary(records + [{'step': 15, 'eval/top1': 0.1,
                                               'eval/lr_decayed': 1.0}])
  assert summary['left_chance_step'] == 30 and summary['decays_before_leaving_chance'] == [15]
