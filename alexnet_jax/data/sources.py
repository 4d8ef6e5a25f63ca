"""Random-access data sources for Grain: image folders, TFDS datasets in array_record format, or
a prepared copy (prepare_data --out_dir: each image's central 256 x 256 patch, re-encoded).

Records are {'image': <encoded image bytes>, 'label': int}; decoding happens later, inside the
Grain workers (preprocessing.decode_and_resize). tensorflow_datasets is imported only for the
TFDS path, so the folder and prepared paths never pull in TensorFlow.
"""
import json
import os
import pathlib
import struct

import grain

from alexnet_jax import quiet_import
from alexnet_jax.errors import UserError

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]  # alexnet_jax/data/sources.py
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm')
IMAGENET_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


def resolve_path(path: str) -> str:
  """A relative path as given if it exists from the cwd, else relative to the repo root.

  The configs name repo-relative paths (data/clothing10-128); this lets tests and tools run
  from any directory.
  """
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = _REPO_ROOT / path
  return str(candidate) if candidate.exists() else path


class ImageFolderSource:
  """Grain RandomAccessDataSource over root/split/<class>/<image files>.

  Classes are the sorted sub-folder names (label = index), files are sorted within a class.
  """

  def __init__(self, root: str, split: str):
    self.root, self.split = root, split
    split_dir = os.path.join(resolve_path(root), split)
    if not os.path.isdir(split_dir):
      raise UserError(f'image folder {split_dir!r} does not exist (config.dataset.folder={root!r}, '
                      f'split {split!r}); expected {root}/{split}/<class>/<images>')
    self.class_names = sorted(
        d for d in os.listdir(split_dir)
        if not d.startswith('.') and os.path.isdir(os.path.join(split_dir, d)))
    if not self.class_names:
      raise UserError(f'no class folders in {split_dir!r}; expected {split_dir}/<class>/<images>')
    self.paths, self.labels = [], []
    for label, name in enumerate(self.class_names):
      class_dir = os.path.join(split_dir, name)
      files = sorted(f for f in os.listdir(class_dir)
                     if not f.startswith('.') and f.lower().endswith(_IMAGE_EXTENSIONS))
      self.paths += [os.path.join(class_dir, f) for f in files]
      self.labels += [label] * len(files)
    if not self.paths:
      raise UserError(f'split {split_dir!r} has {len(self.class_names)} class folders but no '
                      f'image files ({", ".join(_IMAGE_EXTENSIONS)})')

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    # 'source' names the file in the warning when it cannot be decoded.
    with open(self.paths[index], 'rb') as f:
      return {'image': f.read(), 'label': self.labels[index], 'source': self.paths[index]}

  def __repr__(self) -> str:
    # Grain stores repr(source) in iterator checkpoints and compares it on restore: keep it free
    # of memory addresses and absolute paths.
    return (f'ImageFolderSource(root={self.root!r}, split={self.split!r}, '
            f'num_records={len(self)}, num_classes={len(self.class_names)})')


# --- Prepared datasets (python -m alexnet_jax.tools.prepare_data --out_dir=DIR). ---

PREPARED_FORMAT = 'alexnet_jax.prepared/1'
PREPARED_METADATA = 'metadata.json'
_LABEL = struct.Struct('<i')


def encode_prepared_record(label: int, jpeg: bytes) -> bytes:
  """One prepared record: the label as a little-endian int32, then the JPEG bytes."""
  return _LABEL.pack(int(label)) + bytes(jpeg)


def decode_prepared_record(record: bytes) -> dict:
  return {'image': bytes(record[_LABEL.size:]), 'label': _LABEL.unpack_from(record)[0]}


def prepared_shard_names(split: str, num_shards: int) -> list[str]:
  return [f'{split}.array_record-{k:05d}-of-{num_shards:05d}' for k in range(num_shards)]


def load_prepared_metadata(folder: str) -> dict:
  """metadata.json of a prepared dataset, with one-line UserErrors when it is not one."""
  path = resolve_path(folder)
  how = ('write one with: python -m alexnet_jax.tools.prepare_data --dataset=folder '
         f'--folder=SRC --out_dir={folder}')
  if not path or not os.path.isdir(path):
    raise UserError(f'prepared dataset folder {path!r} does not exist (config.dataset.folder); '
                    f'{how}')
  meta_path = os.path.join(path, PREPARED_METADATA)
  if not os.path.isfile(meta_path):
    raise UserError(f'{path!r} has no {PREPARED_METADATA}: not a prepared dataset, or its '
                    f'preparation did not finish; {how}')
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {meta_path}: {e}') from None
  if not isinstance(meta, dict) or meta.get('format') != PREPARED_FORMAT:
    found = meta.get('format') if isinstance(meta, dict) else None
    raise UserError(f'{meta_path} has format {found!r}, expected {PREPARED_FORMAT!r}; '
                    'prepare the dataset again')
  return meta


class PreparedSource:
  """Grain RandomAccessDataSource over a prepared dataset's array_record files.

  The images are stored as their central resize_size square (copies made before 2026-11-30:
  with the shorter side at resize_size), so the train step's decode is of a small JPEG and
  resize_shorter_side has nothing to do (the paper likewise down-sampled ImageNet to 256 x 256
  once, section 2).
  """

  def __init__(self, folder: str, split: str):
    meta = load_prepared_metadata(folder)
    if split not in meta['splits']:
      raise UserError(f'prepared dataset {folder!r} has no split {split!r} (it has '
                      f'{", ".join(sorted(meta["splits"]))})')
    info = meta['splits'][split]
    self.folder, self.split = folder, split
    self.dataset, self.resize_size = meta['dataset'], int(meta['resize_size'])
    self.class_names = list(meta['class_names'])
    root = resolve_path(folder)
    paths = [os.path.join(root, name) for name in info['files']]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
      raise UserError(f'prepared dataset {folder!r}, split {split!r}: {len(missing)} of its '
                      f'{len(paths)} files are missing (e.g. {missing[0]}); prepare it again')
    if not info['num_records']:
      raise UserError(f'split {split!r} of prepared dataset {folder!r} holds no images')
    try:
      self._records = grain.sources.ArrayRecordDataSource(paths)
      num_records = len(self._records)
    except Exception as e:  # pylint: disable=broad-except  (array_record raises several types)
      raise UserError(f'prepared dataset {folder!r}, split {split!r}: cannot read its '
                      f'array_record files: {" ".join(str(e).split())}') from None
    if num_records != info['num_records']:
      raise UserError(f'prepared dataset {folder!r}, split {split!r}: {PREPARED_METADATA} says '
                      f'{info["num_records"]} images, its files hold {num_records}; prepare it '
                      'again')

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    return decode_prepared_record(self._records[index])

  def __repr__(self) -> str:
    # Stored in Grain's iterator checkpoints and compared on restore: the dataset's name from
    # its metadata, not the folder's path, so a moved copy resumes.
    return (f'PreparedSource(dataset={self.dataset!r}, resize_size={self.resize_size}, '
            f'split={self.split!r}, num_records={len(self)}, '
            f'num_classes={len(self.class_names)})')


def import_tfds():
  """tensorflow_datasets, imported only on the TFDS path: it pulls in TensorFlow, which the
  folder and prepared paths never need."""
  return quiet_import.import_quietly('tensorflow_datasets')


def _tfds_data_dir(dataset_config) -> str | None:
  return dataset_config.data_dir or None


def _default_data_dir() -> str:
  tfds = import_tfds()
  return os.fspath(tfds.core.constants.DATA_DIR)


def imagenet_manual_dir(dataset_config) -> str:
  """Where TFDS looks for the ImageNet archives: manual_dir, or <data_dir>/downloads/manual."""
  if dataset_config.manual_dir:
    return dataset_config.manual_dir
  data_dir = dataset_config.data_dir or _default_data_dir()
  return os.path.join(data_dir, 'downloads', 'manual')


def prepare_command(name: str, dataset_config) -> str:
  cmd = f'python -m alexnet_jax.tools.prepare_data --dataset={name}'
  if dataset_config.data_dir:
    cmd += f' --data_dir={dataset_config.data_dir}'
  if name == 'imagenet2012' and dataset_config.manual_dir:
    cmd += f' --manual_dir={dataset_config.manual_dir}'
  return cmd


def tfds_builder(dataset_config):
  """The TFDS builder of config.dataset.name, with one-line UserErrors when it cannot be read."""
  tfds = import_tfds()
  name = dataset_config.name
  try:
    builder = tfds.builder(name, data_dir=_tfds_data_dir(dataset_config))
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f"unknown dataset {name!r} (config.dataset.name): use 'folder' with "
                    "config.dataset.folder, or a TFDS image-classification dataset name such "
                    "as 'imagenet2012'") from None
  data_dir = _tfds_data_dir(dataset_config) or _default_data_dir()
  if not builder.is_prepared():
    if builder.name == 'imagenet2012':
      raise UserError(
          f'imagenet2012 is not prepared in {data_dir}: put {" and ".join(IMAGENET_FILES)} in '
          f'{imagenet_manual_dir(dataset_config)} and run: '
          f'{prepare_command("imagenet2012", dataset_config)}')
    raise UserError(f'TFDS dataset {name!r} is not prepared in {data_dir}; run (needs internet): '
                    f'{prepare_command(name, dataset_config)}')
  file_format = builder.info.file_format
  if file_format is None or getattr(file_format, 'value', file_format) != 'array_record':
    raise UserError(
        f'TFDS dataset {name!r} in {data_dir} is stored as {file_format}, but random access '
        'needs array_record: prepare it into another data_dir with '
        f'{prepare_command(name, dataset_config)}')
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise UserError(f'TFDS dataset {name!r} has features {list(features.keys())}; '
                    "an image-classification dataset with 'image' and 'label' is needed")
  return builder


def _tfds_source(dataset_config, split: str):
  tfds = import_tfds()
  tfds_builder(dataset_config)  # one-line errors for unknown / unprepared datasets.
  # SkipDecoding: keep the stored JPEG bytes so that decoding (mode conversion included) is
  # preprocessing.decode_image for folders and TFDS alike, done in the Grain workers.
  try:
    return tfds.data_source(dataset_config.name, split=split,
                            data_dir=_tfds_data_dir(dataset_config), download=False,
                            decoders={'image': tfds.decode.SkipDecoding()})
  except ValueError as e:  # e.g. "Unknown split 'x'. Should be one of ['train', 'validation']."
    raise UserError(f'TFDS dataset {dataset_config.name!r}, split {split!r}: '
                    f'{" ".join(str(e).split())}') from None


def make_source(dataset_config, split: str):
  """The Grain data source for config.dataset and a split name; items {'image', 'label'}."""
  if dataset_config.name in ('folder', 'prepared'):
    if not dataset_config.folder:
      raise UserError(f'config.dataset.name is {dataset_config.name!r} but '
                      'config.dataset.folder is empty')
    if dataset_config.name == 'folder':
      source = ImageFolderSource(dataset_config.folder, split)
    else:
      source = PreparedSource(dataset_config.folder, split)
  else:
    source = _tfds_source(dataset_config, split)
  if len(source) == 0:
    raise UserError(f'split {split!r} of dataset {dataset_config.name!r} is empty')
  return source


def class_names_of(source) -> list[str]:
  if isinstance(source, (ImageFolderSource, PreparedSource)):
    return list(source.class_names)
  return list(source.dataset_info.features['label'].names)


def check_num_classes(config, num_classes: int):
  if config.model.num_classes != num_classes:
    raise UserError(f'dataset {config.dataset.name!r} has {num_classes} classes but '
                    f'config.model.num_classes is {config.model.num_classes}')


def check_prepared_size(config, source):
  """A prepared copy must be at config.input.resize_size: training then never resizes."""
  if isinstance(source, PreparedSource) and source.resize_size != config.input.resize_size:
    raise UserError(f'prepared dataset {source.folder!r} has the shorter side at '
                    f'{source.resize_size} px but config.input.resize_size is '
                    f'{config.input.resize_size}: set --config.input.resize_size='
                    f'{source.resize_size} or prepare it again with --resize_size='
                    f'{config.input.resize_size}')
