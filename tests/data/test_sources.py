"""alexnet_jax/data/sources.py: the image-folder source on the embedded clothing10 photos (labels
from the class folder names, bytes equal to the files), its one-line errors, and a TFDS source on
a real array_record dataset built from those photos in a temporary data_dir (each record's bytes
and label equal to the JPEG it was built from, and the images the loaders make from it identified
with the same files preprocessed one by one)."""
import glob
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.data import prepare
from alexnet_jax.data import sources
from tests import helpers


# --- ImageFolderSource ---


def test_folder_source_real_data():
  train = sources.ImageFolderSource(helpers.DATA, 'train')
  val = sources.ImageFolderSource(helpers.DATA, 'val')
  assert (len(train), len(val)) == (1000, 240)
  assert train.class_names == helpers.CLASSES and len(helpers.CLASSES) == 10
  for i in (0, 99, 100, 537, 999):
    item = train[i]
    path = train.paths[i]
    assert os.path.basename(os.path.dirname(path)) == helpers.CLASSES[item['label']]
    assert item['image'] == open(path, 'rb').read()
  # files sorted within each class, classes in sorted order
  assert train.paths[:100] == sorted(glob.glob(os.path.join(helpers.DATA, 'train',
                                                            helpers.CLASSES[0], '*')))
  assert np.bincount(val.labels).tolist() == [24] * 10
  assert repr(train) == ("ImageFolderSource(root=%r, split='train', num_records=1000, "
                         'num_classes=10)' % helpers.DATA)


def test_folder_source_errors(tmp_path):
  def one_line_error(root, split='train'):
    return helpers.one_line_error(lambda: sources.ImageFolderSource(str(root), split))

  assert 'does not exist' in one_line_error(tmp_path / 'missing')
  os.makedirs(tmp_path / 'train')
  assert 'no class folders' in one_line_error(tmp_path)
  os.makedirs(tmp_path / 'train' / 'cat')
  (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('x')
  assert 'no image files' in one_line_error(tmp_path)


def test_relative_folder_resolves_from_repo_root(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  source = sources.make_source(helpers.tiny_config(folder='data/clothing10-128').dataset, 'val')
  assert len(source) == 240


# --- TFDS path: a real array_record dataset built in a temporary data_dir ---


TFDS_FILES = {split: [(p, label) for label, name in enumerate(helpers.SMALL_CLASSES)
                      for p in sorted(glob.glob(os.path.join(helpers.DATA, folder, name, '*')))[:n]]
              for split, folder, n in (('train', 'train', 10), ('validation', 'val', 3))}


class AlexnetTestClothing(tfds.core.GeneratorBasedBuilder):
  """20 train / 6 validation clothing JPEGs, 2 classes (registered as 'alexnet_test_clothing')."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'label': tfds.features.ClassLabel(names=list(helpers.SMALL_CLASSES))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in TFDS_FILES}

  def _generate_examples(self, split):
    for i, (path, label) in enumerate(TFDS_FILES[split]):
      yield f'{split}{i}', {'image': path, 'label': label}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepared = prepare.prepare('alexnet_test_clothing', data_dir=data_dir)
  assert glob.glob(os.path.join(prepared, '*.array_record*'))
  return data_dir


def tfds_config(data_dir, size=24):
  config = helpers.plain_config(helpers.DATA, size)
  config.dataset.update(name='alexnet_test_clothing', data_dir=data_dir, train_split='train',
                        eval_split='validation')
  return config


def test_tfds_source_and_info(tfds_dir):
  config = tfds_config(tfds_dir)
  source = sources.make_source(config.dataset, 'train')
  assert len(source) == 20
  originals = {open(p, 'rb').read(): label for p, label in TFDS_FILES['train']}
  for i in range(len(source)):
    item = source[i]
    assert isinstance(item['image'], bytes)
    assert originals[item['image']] == item['label']  # the stored JPEG bytes, right label
  info = dataset_lib.build(config)
  assert (info.num_train, info.num_eval, info.num_classes) == (20, 6, 2)
  assert info.class_names == helpers.SMALL_CLASSES


def test_tfds_train_and_eval_loaders(tfds_dir):
  config = tfds_config(tfds_dir)
  table = helpers.expected_table(TFDS_FILES['train'])
  it = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  found = helpers.identify(helpers.take(it, 5), table)  # one epoch: 20 images
  assert sorted(found) == sorted(p for p, _ in TFDS_FILES['train'])
  table = helpers.expected_table(TFDS_FILES['validation'])
  batches = list(iter(pipeline.create_eval_loader(config, dataset_lib.build(config))))
  assert len(batches) == 2 and sum(b['mask'].sum() for b in batches) == 6
  assert sorted(helpers.identify(batches, table)) == sorted(p for p, _ in TFDS_FILES['validation'])


def test_tfds_errors(tmp_path, tfds_dir):
  def one_line_error(config, split='train'):
    return helpers.one_line_error(lambda: sources.make_source(config.dataset, split))

  config = tfds_config(str(tmp_path))
  config.dataset.name = 'no_such_dataset_xyz'
  assert "unknown dataset 'no_such_dataset_xyz'" in one_line_error(config)

  config.dataset.name = 'imagenet2012'
  msg = one_line_error(config)
  manual = os.path.join(str(tmp_path), 'downloads', 'manual')
  for part in ('not prepared', 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', manual,
               'python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 '
               f'--data_dir={tmp_path}'):
    assert part in msg
  config.dataset.manual_dir = '/archives/imagenet'
  assert 'in /archives/imagenet and run' in one_line_error(config)

  config.dataset.name = 'mnist'
  assert 'is not prepared' in one_line_error(config)

  assert "Unknown split 'test'" in one_line_error(tfds_config(tfds_dir), 'test')
