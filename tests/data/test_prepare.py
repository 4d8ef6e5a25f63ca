"""alexnet_jax/data/prepare.py: the prepared copy (prepare_data --out_dir) of a few embedded photos
and its PreparedSource, and TFDS's imagenet2012 builder on fake ILSVRC2012 archives. Truths:
labels and class names from the source folder's layout, pixels from PIL's decode of the source
file resized with preprocessing.resize_shorter_side and its central 256 x 256 patch cut with
numpy (the JPEG re-encoded at quality 95 may differ by JPEG loss only: mean abs diff < 1.5
levels), a corrupt file that PIL cannot open, and the
synsets and labels put into the archives."""
import glob
import io
import json
import os
import pickle
import shutil

import ml_collections
import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.data import prepare
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from tests.helpers import alexnet_config
from tests import helpers

CLASSES = ('hat', 'pants', 'shoes')
PER_CLASS = {'train': 4, 'val': 2}
CORRUPT = os.path.join('train', 'pants', 'zz_corrupt.jpg')


# --- the prepared copy ---


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """tmp/{train,val}/{hat,pants,shoes}/: 4 / 2 real JPEGs per class, plus one corrupt file."""
  root = tmp_path_factory.mktemp('source')
  helpers.copy_images(root, CLASSES, PER_CLASS)
  (root / CORRUPT).write_bytes(b'\xff\xd8\xff\xe0 this is not really a JPEG')
  return str(root)


def folder_config(folder, name='folder'):
  return ml_collections.ConfigDict({'name': name, 'folder': folder, 'data_dir': '',
                                    'manual_dir': ''})


@pytest.fixture(scope='module')
def prepared(source, tmp_path_factory):
  """(out_dir, metadata, printed lines) of a 256 px copy of `source`."""
  out = str(tmp_path_factory.mktemp('prepared') / 'small-256')
  lines = []
  meta = prepare.prepare_resized(folder_config(source), out, resize_size=256,
                                      log=lambda *a, **k: lines.append(' '.join(map(str, a))))
  return out, meta, lines


def pil_resized(path, size):
  with Image.open(path) as img:
    return pp.resize_shorter_side(np.asarray(img.convert('RGB')), size)


def test_records_are_the_source_at_256(source, prepared):
  out, _, _ = prepared
  for split in PER_CLASS:
    folder = sources.ImageFolderSource(source, split)
    ours = sources.PreparedSource(out, split)
    valid = [i for i, p in enumerate(folder.paths) if not p.endswith('zz_corrupt.jpg')]
    assert len(ours) == len(valid) == PER_CLASS[split] * len(CLASSES)
    assert sources.class_names_of(ours) == list(CLASSES) == folder.class_names
    for k, i in enumerate(valid):
      record = ours[k]
      assert record['label'] == folder.labels[i]
      assert record['label'] == CLASSES.index(os.path.basename(os.path.dirname(folder.paths[i])))
      img = pp.decode_image(record['image'])
      resized = pil_resized(folder.paths[i], 256)
      h, w = resized.shape[:2]
      truth = resized[(h - 256) // 2:(h - 256) // 2 + 256, (w - 256) // 2:(w - 256) // 2 + 256]
      assert img.shape == truth.shape == (256, 256, 3)
      assert np.abs(img.astype(np.int16) - truth).mean() < 1.5


def test_metadata_and_the_skipped_corrupt_file(source, prepared):
  out, meta, lines = prepared
  with open(os.path.join(out, 'metadata.json')) as f:
    assert json.load(f) == meta
  assert meta['class_names'] == list(CLASSES)
  assert meta['resize_size'] == 256 and meta['jpeg_quality'] == 95
  assert meta['stored'] == 'central patch'
  assert meta['source'] == {'name': 'folder', 'folder': source}
  train, val = meta['splits']['train'], meta['splits']['val']
  assert (train['source_records'], train['num_records'], train['skipped']) == (13, 12, 1)
  assert (val['source_records'], val['num_records'], val['skipped']) == (6, 6, 0)
  assert train['skipped_files'] == [os.path.join(source, CORRUPT)]
  assert any('skipped undecodable image' in l and CORRUPT in l for l in lines)


def test_a_second_run_keeps_the_copy_and_other_settings_are_refused(source, prepared):
  out, meta, _ = prepared
  stamp = os.path.getmtime(os.path.join(out, 'metadata.json'))
  assert prepare.prepare_resized(folder_config(source), out, log=lambda *a, **k: None) == meta
  assert os.path.getmtime(os.path.join(out, 'metadata.json')) == stamp
  with pytest.raises(UserError, match='other settings'):
    prepare.prepare_resized(folder_config(source), out, quality=80, log=lambda *a, **k: None)


def test_a_prepared_patch_is_decoded_into_the_batch_as_it_is_decoded_alone(prepared):
  """decode_and_resize_into: simplejpeg writes a prepared 256 x 256 JPEG straight into the
  batch's row, the same pixels as decode_and_resize; any other image (here a non-square photo,
  a PNG) goes through decode_and_resize."""
  out, _, _ = prepared
  for k in range(3):
    data = sources.PreparedSource(out, 'train')[k]['image']
    row = np.full((256, 256, 3), 7, np.uint8)
    pp.decode_and_resize_into(data, row)
    np.testing.assert_array_equal(row, pp.decode_and_resize(data, 256))
  photo = open(sorted(glob.glob(os.path.join(helpers.VAL, '*', '*')))[0], 'rb').read()
  png = io.BytesIO()
  Image.fromarray(pp.decode_image(photo)).save(png, 'PNG')
  for data in (photo, png.getvalue()):
    row = np.zeros((100, 100, 3), np.uint8)
    pp.decode_and_resize_into(data, row)
    np.testing.assert_array_equal(row, pp.decode_and_resize(data, 100))


def test_a_large_jpeg_is_copied_from_its_reduced_decode(monkeypatch):
  """The copy's writer decodes a JPEG much larger than 256 at reduced scale, as training does: a
  spy on simplejpeg sees 1/2 of a 1152 x 1408 mosaic of the embedded photos, and the stored JPEG
  is decode_and_resize's patch encoded at quality 95, byte for byte."""
  photos = sorted(glob.glob(os.path.join(helpers.DATA, 'train', '*', '*')))[::7]
  tiles = [pp.center_crop(pp.decode_image(open(p, 'rb').read()), 128) for p in photos[:99]]
  big = np.stack(tiles).reshape(9, 11, 128, 128, 3).transpose(0, 2, 1, 3, 4)
  data = jpeg_bytes(big.reshape(1152, 1408, 3), quality=90)
  shapes = []
  decode_jpeg = pp.simplejpeg.decode_jpeg

  def spy(*args, **kwargs):
    out = decode_jpeg(*args, **kwargs)
    shapes.append(out.shape[:2])
    return out
  monkeypatch.setattr(pp.simplejpeg, 'decode_jpeg', spy)
  copy = prepare.reencode(data, 256, 95)
  assert shapes == [(576, 704)]
  assert copy == jpeg_bytes(pp.decode_and_resize(data, 256), quality=95)


def jpeg_bytes(img, quality):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, 'JPEG', quality=quality)
  return buf.getvalue()


def test_no_resize_at_train_time(prepared, monkeypatch):
  out, _, _ = prepared
  record = sources.PreparedSource(out, 'train')[0]
  decoded = pp.decode_image(record['image'])

  def no_pil_resize(*args, **kwargs):
    raise AssertionError('resized at train time')
  monkeypatch.setattr(Image.Image, 'resize', no_pil_resize)
  np.testing.assert_array_equal(pp.decode_and_resize(record['image'], 256),
                                pp.center_crop(decoded, 256))


class Killed(BaseException):
  """Stops prepare_resized the way a kill would: nothing after it runs (no except, no metadata)."""


def test_a_resume_checks_the_shards_it_keeps_and_its_settings(source, prepared, tmp_path,
                                                              monkeypatch):
  """The val split (6 images) in shards of 2, stopped during the third shard. A recorded shard
  whose file was cut short is written again, the intact one is kept; a rerun with another
  --quality is refused while the copy is unfinished; the finished copy equals the copy made in
  one go (the `prepared` fixture)."""
  out = str(tmp_path / 'copy')
  reencode, calls = prepare.reencode, []

  def stop_at_fifth(*args):
    calls.append(1)
    if len(calls) == 5:
      raise Killed()
    return reencode(*args)
  monkeypatch.setattr(prepare, 'reencode', stop_at_fifth)
  with pytest.raises(Killed):
    prepare.prepare_resized(folder_config(source), out, splits=['val'], records_per_shard=2,
                            log=lambda *a, **k: None)
  monkeypatch.setattr(prepare, 'reencode', reencode)
  names = sources.prepared_shard_names('val', 3)
  assert sorted(os.listdir(out)) == sorted(names[:2] + [names[2] + '.partial', prepare.PROGRESS])
  with open(os.path.join(out, names[1]), 'r+b') as f:
    f.truncate(os.path.getsize(os.path.join(out, names[1])) - 100)
  helpers.one_line_error(
      lambda: prepare.prepare_resized(folder_config(source), out, splits=['val'], quality=80,
                                      records_per_shard=2, log=lambda *a, **k: None),
      'unfinished copy made with other settings')
  lines = []
  meta = prepare.prepare_resized(folder_config(source), out, splits=['val'], records_per_shard=2,
                                 log=lambda *a, **k: lines.append(' '.join(map(str, a))))
  assert any(f'val: kept 1 of its 3 shards, complete from an earlier run ({names[0]})' in line
             for line in lines), lines
  assert sorted(os.listdir(out)) == sorted(names + ['metadata.json'])
  ours = sources.PreparedSource(out, 'val')
  theirs = sources.PreparedSource(prepared[0], 'val')
  assert meta['splits']['val']['num_records'] == len(ours) == len(theirs) == 6
  assert [ours[i] for i in range(6)] == [theirs[i] for i in range(6)]


def prepared_config(out, **input_overrides):
  config = alexnet_config.get_config('tiny')
  config.dataset.update(name='prepared', folder=out)
  config.model.num_classes = len(CLASSES)
  config.input.update(resize_size=256, image_size=227, stats_file='')
  config.input.update(input_overrides)
  config.train.batch_size = 4
  config.eval.batch_size = 4
  return config


def test_train_and_eval_loaders_on_the_prepared_copy(prepared):
  out, _, _ = prepared
  config = prepared_config(out)
  info = dataset_lib.build(config)
  assert (info.num_train, info.num_eval, info.class_names) == (12, 6, CLASSES)
  iterator = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  for _ in range(4):  # past the first epoch (3 batches)
    batch = next(iterator)
    assert batch['image'].shape == (4, 227, 227, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4,) and set(batch['label']) <= {0, 1, 2}
  state = iterator.get_state()
  expected = next(iterator)
  restored = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
  restored.set_state(state)  # Grain compares repr(source): it must not change
  np.testing.assert_array_equal(next(restored)['image'], expected['image'])
  batches = list(pipeline.create_eval_loader(config, dataset_lib.build(config)))
  assert len(batches) == 2 and batches[0]['image'].shape == (4, 227, 227, 3)
  assert sum(int(b['mask'].sum()) for b in batches) == 6


def test_repr_and_pickle(source, prepared):
  """Grain stores repr(source) in iterator checkpoints: no path (the copy may move), no address."""
  out, _, _ = prepared
  source_name = os.path.basename(source)
  source = sources.PreparedSource(out, 'val')
  text = repr(source)
  assert text == (f"PreparedSource(dataset='{source_name}', resize_size=256, split='val', "
                  'num_records=6, num_classes=3)')
  assert '0x' not in text and os.sep not in text
  copy = pickle.loads(pickle.dumps(source))
  assert repr(copy) == text and copy[5]['image'] == source[5]['image']


def test_workers_write_the_same_files(source, prepared, tmp_path):
  out, _, _ = prepared
  prepare.prepare_resized(folder_config(source), str(tmp_path), splits=['val'], workers=2,
                               log=lambda *a, **k: None)
  name = 'val.array_record-00000-of-00001'
  with open(os.path.join(out, name), 'rb') as a, open(tmp_path / name, 'rb') as b:
    assert a.read() == b.read()


def test_errors(prepared, tmp_path):
  out, meta, _ = prepared
  helpers.one_line_error(lambda: sources.PreparedSource(str(tmp_path / 'nope'), 'train'),
                 'does not exist')
  helpers.one_line_error(lambda: sources.PreparedSource(str(tmp_path), 'train'), 'no metadata.json')
  helpers.one_line_error(lambda: sources.make_source(folder_config('', 'prepared'), 'train'),
                 'folder is empty')
  helpers.one_line_error(lambda: sources.PreparedSource(out, 'test'), "no split 'test'")
  helpers.one_line_error(lambda: dataset_lib.build(prepared_config(out, resize_size=72,
                                                                     image_size=67)),
                 'resize_size is 72')

  def broken_copy(name, edit):
    copy = tmp_path / name
    shutil.copytree(out, copy)
    edit(copy)
    return str(copy)

  def write_meta(copy, **changes):
    with open(copy / 'metadata.json', 'w') as f:
      json.dump({**meta, **changes}, f)

  bad_format = broken_copy('format', lambda c: write_meta(c, format='other/9'))
  helpers.one_line_error(lambda: sources.PreparedSource(bad_format, 'train'), 'format')
  splits = json.loads(json.dumps(meta['splits']))
  splits['train']['num_records'] = 11
  count = broken_copy('count', lambda c: write_meta(c, splits=splits))
  helpers.one_line_error(lambda: sources.PreparedSource(count, 'train'), 'says 11 images')
  missing = broken_copy('missing', lambda c: os.remove(c / 'val.array_record-00000-of-00001'))
  helpers.one_line_error(lambda: sources.PreparedSource(missing, 'val'), 'missing')
  garbage = broken_copy(
      'garbage', lambda c: (c / 'val.array_record-00000-of-00001').write_bytes(b'x' * 100))
  helpers.one_line_error(lambda: sources.PreparedSource(garbage, 'val'), 'cannot read')
  helpers.one_line_error(lambda: prepare.prepare_resized(folder_config(str(tmp_path / 'nope')),
                                                      str(tmp_path / 'o')), 'does not exist')


# --- imagenet2012 through TFDS ---


def test_prepare_imagenet_without_archives(tmp_path, capsys):
  """imagenet2012 without its archives is one error; a folder that a killed preparation left
  (TFDS's incomplete.*) is named in a note, since TFDS starts again from zero beside it."""
  stale = tmp_path / 'imagenet2012' / 'incomplete.AB12CD_5.1.0'
  os.makedirs(stale)
  with pytest.raises(UserError,
                     match='missing ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar'):
    prepare.prepare('imagenet2012', data_dir=str(tmp_path))
  notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith('note:')]
  assert len(notes) == 1 and str(stale) in notes[0] and 'again from the start' in notes[0]


# Imports TensorFlow (the imagenet2012 builder uses tf.io.gfile): ~8 s.
def test_prepare_imagenet2012_from_fake_archives(tmp_path):
  """The real TFDS imagenet2012 builder on archives laid out like ILSVRC2012's, 4+1 JPEGs."""
  import io
  import tarfile

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  jpegs = sorted(glob.glob(os.path.join(helpers.DATA, 'train', '*', '*')))
  manual = tmp_path / 'manual'
  os.makedirs(manual)
  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for k, synset in enumerate(['n01440764', 'n01443537']):  # labels 0 and 1
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for j in range(2):
          add(inner, f'{synset}_{j}.JPEG', open(jpegs[100 * k + j], 'rb').read())
      add(outer, f'{synset}.tar', buf.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as val:
    add(val, 'ILSVRC2012_val_00000001.JPEG', open(jpegs[500], 'rb').read())  # label 65
  data_dir = str(tmp_path / 'tfds')
  prepare.prepare('imagenet2012', data_dir=data_dir, manual_dir=str(manual))
  config = alexnet_config.get_config()
  config.dataset.data_dir = data_dir
  info = dataset_lib.build(config)
  assert (info.num_train, info.num_eval, info.num_classes) == (4, 1, 1000)
  assert info.class_names[:2] == ('n01440764', 'n01443537')
  train = sources.make_source(config.dataset, 'train')
  assert sorted(train[i]['label'] for i in range(4)) == [0, 0, 1, 1]
  assert sources.make_source(config.dataset, 'validation')[0]['label'] == 65
