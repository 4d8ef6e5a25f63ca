"""alexnet_jax/data/sources.py: the image-folder source on the embedded clothing10 photos (labels
from the class folder names, bytes equal to the files), its one-line errors, a run's file index
(equal to the listing, pickled as its path, read by later starts and other processes, files
deleted or added since noted and read as errors), and a TFDS source on a real array_record
dataset built from those photos in a temporary data_dir (each record's bytes and label equal to
the JPEG it was built from, and the images the loaders make from it identified with the same
files preprocessed one by one)."""
import glob
import os
import pickle
import shutil

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


# --- the run's file index (sources.open_folder) ---


def test_file_index_is_the_listing_and_workers_get_its_path(tmp_path, small_folder, monkeypatch):
  """A run's first start lists the folder into <workdir>/file_index/<split>; every later start
  reads it without listing; a saved index pickles (into each Grain worker) as its path."""
  listed = sources.ImageFolderSource(small_folder, 'train')
  run = str(tmp_path / 'run')
  indexed = sources.open_folder(small_folder, 'train', run)
  index_dir = os.path.join(run, 'file_index', 'train')
  assert indexed.index.directory == index_dir
  assert os.listdir(os.path.join(run, 'file_index')) == ['train']  # no temporary folder left
  expected = [(p, helpers.SMALL_CLASSES.index(os.path.basename(os.path.dirname(p))))
              for name in helpers.SMALL_CLASSES
              for p in sorted(glob.glob(os.path.join(small_folder, 'train', name, '*')))]
  assert [(indexed.path(i), indexed[i]['label']) for i in range(len(indexed))] == expected
  assert listed.paths == indexed.paths and listed.labels == indexed.labels
  assert all(indexed[i]['image'] == open(p, 'rb').read() for i, (p, _) in enumerate(expected))
  assert repr(indexed) == repr(listed)  # Grain's checkpoints compare it
  pickled = pickle.dumps(indexed)
  assert len(pickled) < 600 and b'.jpg' not in pickled  # the index's path, not its names
  assert pickle.loads(pickled)[5] == indexed[5]
  assert len(pickle.dumps(listed)) > len(pickled)  # an in-memory index travels whole
  # A later start reads the index and lists nothing.
  monkeypatch.setattr(sources.FileIndex, 'from_listing', lambda *a: pytest.fail('listed'))
  lines = []
  again = sources.open_folder(small_folder, 'train', run, log=lambda *a, **k: lines.append(a))
  assert again.paths == listed.paths and lines == []  # the folder did not change: no note


def test_a_resume_reads_its_own_index_after_the_folder_changed(tmp_path):
  """Files deleted after the index was built are still records (read as errors, which the
  loaders skip and count), files and classes added are not seen, and one note says so."""
  folder = helpers.copy_images(tmp_path / 'data', helpers.SMALL_CLASSES, {'train': 6})
  run = str(tmp_path / 'run')
  first = sources.open_folder(folder, 'train', run)
  gone = [first.path(1), first.path(7)]  # one of each class
  for path in gone:
    os.remove(path)
  shutil.copy(first.path(0), os.path.join(folder, 'train', 'shoes', 'new.jpg'))
  os.makedirs(os.path.join(folder, 'train', 'socks'))
  lines = []
  source = sources.open_folder(folder, 'train', run, log=lambda line, **_: lines.append(line))
  assert len(source) == 12 and source.class_names == list(helpers.SMALL_CLASSES)
  assert len(lines) == 1 and lines[0].startswith('note: ')
  assert ('2 of its 12 files are gone' in lines[0] and
          '1 file(s) and 1 class folder(s) added are not seen' in lines[0])
  assert source[1] == {'image': b'', 'label': 0, 'source': gone[0],
                       'error': 'cannot read it: No such file or directory'}
  assert source[7]['error'] and source[7]['label'] == 1
  assert source[0]['image'] == open(first.path(0), 'rb').read() and 'error' not in source[0]


def test_other_processes_read_the_index_process_0_wrote(tmp_path, small_folder):
  """With several processes only process 0 lists and writes; the others wait (the barrier)
  and read its index, or stop with one line when the workdir is not shared."""
  run = str(tmp_path / 'run')
  write = lambda: sources.open_folder(small_folder, 'val', run)  # process 0, at the barrier
  source = sources.open_folder(small_folder, 'val', run, writer=False, barrier=write)
  assert source.index.directory == os.path.join(run, 'file_index', 'val') and len(source) == 6
  assert 'shared --workdir' in helpers.one_line_error(
      lambda: sources.open_folder(small_folder, 'train', run, writer=False, barrier=lambda: 0))


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
