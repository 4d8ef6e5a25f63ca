"""configs/cifar10.py and configs/sweeps/cifar10_lrn.py, cuda-convnet's CIFAR-10 recipe: its values
against layer-params-conv-local-11pct.cfg (3878e8f) and convdata.py read by hand, the 10 test
views against cuda-convnet's multiview offsets, the 32 x 32 images left as they are, the sweep's
paired seeds, TFDS's `cifar10` read through tfds.testing.mock_data (generated examples, no
download) and prepared by prepare_data, and one tiny training run through launch.py on a folder
of generated 32 x 32 PNGs (made in tmp_path), stopped and resumed bit for bit, and its
checkpoint through evaluate_run and predict."""
import os
from unittest import mock

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from alexnet_jax import config_validation as cv
from alexnet_jax import evaluation
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.data import prepare
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.sweeps import plan as sweep_plan
from alexnet_jax.tools import cli
from tests import helpers

CONFIG = 'configs/cifar10.py'
cifar10 = cli.config_module(CONFIG)
sweep_config = cli.config_module('configs/sweeps/cifar10_lrn.py')


def test_config_is_cuda_convnets_recipe():
  c = cifar10.get_config()
  assert (c.model.arch, c.model.norm, c.model.num_classes, c.model.dropout) == (
      'cuda_convnet_cifar10', 'lrn', 10, 0.0)
  assert (c.dataset.name, c.dataset.train_split, c.dataset.eval_split) == (
      'cifar10', 'train', 'test')
  # convdata.py: 24 x 24 crops of the 32 x 32 images, flips, the mean image, nothing else.
  assert (c.input.resize_size, c.input.image_size, c.input.random_crop, c.input.random_flip) == (
      32, 24, True, True)
  assert (c.input.mean, c.input.standardize, c.input.pca_lighting) == ('pixel', False, False)
  assert c.input.stats_images >= 50000 and c.eval.ten_crop
  # layer-params-conv-local-11pct.cfg at 3878e8f: epsW 0.001, epsB 0.002, mom 0.9, wc 0 on the
  # convs and 0.004 on local3, local4, fc10; batch 128 (convnet.py's default minibatch).
  o = c.optimizer
  assert (o.name, o.lr, o.momentum, o.weight_decay) == ('sgd', 0.001, 0.9, 0.004)
  assert (o.lr * o.bias_lr_mult, o.bias_decay_mult, o.decay_mults) == (0.002, 0.0,
                                                                       'conv1=0,conv2=0')
  assert (o.schedule, o.step_at_epochs, c.train.num_epochs) == ('step', '35,40', 45)
  assert (c.train.batch_size, o.lr_scaling, o.warmup_epochs) == (128, 'none', 0.0)
  cv.validate(c)
  folder = cifar10.get_config('folder')
  assert (folder.dataset.name, folder.dataset.eval_split) == ('folder', 'val')
  for variant in ('folder', 'tiny'):
    config = cifar10.get_config(variant)
    config.dataset.folder = helpers.DATA
    cv.validate(config)
  assert cifar10.get_config('tiny').model == c.model  # the tests train the same net


def test_ten_views_are_cuda_convnets_multiview():
  """convdata.py (35d0bc4, lines 104-111) with crop_border 4: starts (0,0), (0,8), (4,4),
  (8,0), (8,8) of 24 x 24 in 32 x 32, and each mirrored; and a 32 x 32 image goes into them
  unresized (resize_size 32)."""
  assert set(pp.ten_crop_offsets(32, 32, 24)) == {(0, 0), (0, 8), (4, 4), (8, 0), (8, 8)}
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  np.testing.assert_array_equal(pp.decode_and_resize(image, 32), image)
  views = pp.eval_transform(image, image_size=24, mean=np.zeros(3), ten_crop=True)
  expected = [image[y:y + 24, x:x + 24] for y, x in pp.ten_crop_offsets(32, 32, 24)]
  np.testing.assert_array_equal(views, np.stack(expected + [v[:, ::-1] for v in expected]))


def test_sweep_pairs_the_seeds_and_changes_only_the_norm(tmp_path):
  sweep = sweep_config.get_config().sweep
  runs = sweep_plan.plan(sweep, str(tmp_path))
  assert len(runs) == 6 and sweep.base == CONFIG
  by_variant = {}
  for run in runs:
    by_variant.setdefault(run.variant, []).append(run)
    cv.validate(sweep_plan.run_config(sweep, run))
  assert sorted(by_variant) == ['lrn', 'no_lrn']
  assert [r.seed for r in by_variant['lrn']] == [r.seed for r in by_variant['no_lrn']] == [1, 2, 3]
  for lrn, none in zip(by_variant['lrn'], by_variant['no_lrn']):
    a, b = (sweep_plan.run_config(sweep, r).to_dict() for r in (lrn, none))
    assert a['model'].pop('norm') == 'lrn' and b['model'].pop('norm') == 'none'
    assert a == b  # nothing else differs, the seed included
  assert dict(sweep.paper_signs) == {'no_lrn': '-'}  # the paper: 13 % error without, 11 % with


def write_cifar10_metadata(data_dir: str, num_examples: int) -> None:
  """TFDS's own cifar10 DatasetInfo (features, splits 'train' and 'test'), written to data_dir
  as array_record metadata without any data, for mock_data's USE_FILES policy."""
  builder = tfds.builder('cifar10', data_dir=data_dir, file_format='array_record')
  splits = [tfds.core.SplitInfo(
      name=split, shard_lengths=[num_examples], num_bytes=0,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=builder.data_path, dataset_name='cifar10', split=split,
          filetype_suffix='array_record'))
            for split in ('train', 'test')]
  builder.info.set_splits(tfds.core.SplitDict(splits))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)


def test_tfds_cifar10_through_mock_data(tmp_path):
  """--config.dataset.name=cifar10 (the default) reads TFDS's cifar10 by tfds.data_source:
  here mock_data's generated examples (encoded 32 x 32 PNGs, labels of 10 classes) behind the
  real dataset's metadata; the eval split is 'test'; a batch is 24 x 24 crops, 10 views in
  evaluation."""
  data_dir = str(tmp_path)
  write_cifar10_metadata(data_dir, 12)
  config = cifar10.get_config()
  config.dataset.data_dir = data_dir
  config.input.workers = 0
  config.train.batch_size = config.eval.batch_size = 4
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    dataset = dataset_lib.build(config, log=None)
    assert (dataset.num_train, dataset.num_eval, dataset.num_classes) == (12, 12, 10)
    record = dataset.train_source[0]
    assert pp.decode_image(record['image']).shape == (32, 32, 3)  # the stored PNG bytes
    assert dataset.preprocess.mean.shape == (32, 32, 3)  # the mean image
    batch = next(iter(pipeline.create_train_loader(config, dataset, seed=0, on_device=False)))
    assert batch['image'].shape == (4, 24, 24, 3) and set(batch['label']) <= set(range(10))
    views = next(iter(pipeline.create_eval_loader(config, dataset, ten_crop=True,
                                                  on_device=False)))
    assert views['image'].shape == (4, 10, 24, 24, 3)


def test_prepare_data_takes_cifar10(tmp_path):
  """prepare_data's TFDS path builds TFDS's cifar10 in array_record (under mock_data, whose
  download_and_prepare downloads nothing; the call is recorded)."""
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE), mock.patch.object(
      tfds.core.DatasetBuilder, 'download_and_prepare', autospec=True) as download_and_prepare:
    prepare.prepare('cifar10', data_dir=str(tmp_path))
  (builder,), kwargs = download_and_prepare.call_args
  assert builder.name == 'cifar10' and kwargs['file_format'] == 'array_record'


def generated_folder(root, classes=10, train=2, val=1):
  """root/{train,val}/<class>/<k>.png: random 32 x 32 RGB images (generated, not real photos)."""
  rng = np.random.default_rng(0)
  for split, count in (('train', train), ('val', val)):
    for c in range(classes):
      os.makedirs(os.path.join(root, split, f'class{c}'))
      for k in range(count):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, split, f'class{c}', f'{k}.png'))
  return str(root)


def test_tiny_run_resumes_bit_for_bit(tmp_path):
  """configs/cifar10.py:tiny through launch.py on 20 generated images (batch 8, 2 steps an
  epoch): 4 steps straight against 2 steps, stopped, and resumed to 4; the 4-step checkpoints
  (params, momentum, step, key) are equal bit for bit, and so are the per-step losses."""
  folder = generated_folder(tmp_path / 'images')
  common = [f'--config.dataset.folder={folder}']
  straight, stopped = str(tmp_path / 'straight'), str(tmp_path / 'stopped')
  helpers.launch(straight, *common, '--config.train.num_steps=4', config=f'{CONFIG}:tiny')
  helpers.launch(stopped, *common, '--config.train.num_steps=2', config=f'{CONFIG}:tiny')
  out = helpers.launch(stopped, *common, '--config.train.num_steps=4',
                       config=f'{CONFIG}:tiny').stdout
  assert 'resumed from' in out and 'at step 2' in out
  (step_a, state_a), (step_b, state_b) = (helpers.restore_state(d) for d in (straight, stopped))
  assert step_a == step_b == 4
  assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
  for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_array_equal(a, b)
  records = [helpers.train_records(d) for d in (straight, stopped)]
  assert [records[0][s]['train/loss'] for s in (3, 4)] == [records[1][s]['train/loss']
                                                           for s in (3, 4)]
  _, after_two = helpers.restore_state(stopped, 2)
  assert not np.array_equal(after_two['params']['local3']['kernel'],
                            state_b['params']['local3']['kernel'])  # steps 3-4 moved it
  assert set(state_b['params']) == {'conv1', 'conv2', 'local3', 'local4', 'fc10'}


def test_evaluate_and_predict_read_a_cuda_convnet_run(tmp_path):
  """A checkpoint of cuda-convnet's net goes through the tools' paths (model.arch from the
  run's stored config): evaluate_run's 10-view result is the run's own last evaluation, and
  predict's top-1 over the validation images is evaluate_run's centre-crop top-1."""
  folder = generated_folder(tmp_path / 'images', val=2)
  workdir = str(tmp_path / 'run')
  helpers.launch(workdir, f'--config.dataset.folder={folder}', '--config.train.num_steps=2',
                 config=f'{CONFIG}:tiny')
  summary = helpers.read_summary(workdir)
  ten = evaluation.evaluate_run(workdir, ten_crop=True)
  assert ten['count'] == 20 and ten['step'] == 2
  assert (ten['top1'], ten['top5']) == (summary['eval']['top1'], summary['eval']['top5'])
  assert ten['loss'] == pytest.approx(summary['eval']['loss'], rel=1e-6)
  centre = evaluation.evaluate_run(workdir, ten_crop=False)
  paths, labels = [], []
  for name in sorted(os.listdir(os.path.join(folder, 'val'))):
    for f in sorted(os.listdir(os.path.join(folder, 'val', name))):
      paths.append(os.path.join(folder, 'val', name, f))
      labels.append(name)
  predictions = evaluation.predict(workdir, paths, top_k=3)
  assert all(len(p) == 3 for p in predictions)
  accuracy = np.mean([top[0][0] == label for top, label in zip(predictions, labels)])
  assert abs(accuracy - centre['top1']) < 1e-9
