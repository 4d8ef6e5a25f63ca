"""Random-access data sources for Grain: image folders, TFDS datasets in array_record format, or
a prepared copy (prepare_data --out_dir: each image's central 256 x 256 patch, re-encoded).

Records are {'image': <encoded image bytes>, 'label': int}; decoding happens later, inside the
Grain workers (preprocessing.decode_and_resize). tensorflow_datasets is imported only for the
TFDS path, so the folder and prepared paths never pull in TensorFlow.
"""
import json
import os
import pathlib
import shutil
import struct
import tempfile

import grain
import numpy as np

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


FILE_INDEX_DIR = 'file_index'  # in the workdir: <workdir>/file_index/<split>/, one per split
_INDEX_FORMAT = 'alexnet_jax.file_index/1'
_INDEX_META = 'index.json'  # written last into the folder, which is then renamed into place


def _split_dir(root: str, split: str) -> str:
  split_dir = os.path.join(resolve_path(root), split)
  if not os.path.isdir(split_dir):
    raise UserError(f'image folder {split_dir!r} does not exist (config.dataset.folder={root!r}, '
                    f'split {split!r}); expected {root}/{split}/<class>/<images>')
  return split_dir


def _class_folders(split_dir: str) -> list[str]:
  return sorted(d for d in os.listdir(split_dir)
                if not d.startswith('.') and os.path.isdir(os.path.join(split_dir, d)))


def _image_files(class_dir: str) -> list[str]:
  return sorted(f for f in os.listdir(class_dir)
                if not f.startswith('.') and f.lower().endswith(_IMAGE_EXTENSIONS))


class FileIndex:
  """One split's file listing, compact: every file's path relative to the split folder
  ('<class>/<file>') in one UTF-8 bytes blob with int64 offsets into it, int32 labels, the
  class names and each class folder's mtime when it was listed.

  A list of 1.28M path strings costs a Python object per file in every process that holds it,
  and is pickled into every Grain worker; the arrays cost a fraction of that, and saved to a
  folder (save/load) they are memory-mapped: the workers share the page cache's one copy and
  receive only the folder's path (docs/input_pipeline.md has the measured memory).
  """

  def __init__(self, class_names, names, offsets, labels, class_starts, mtimes: dict,
               directory: str | None = None):
    self.class_names = list(class_names)
    self._names, self._offsets, self._labels = names, offsets, labels
    self._class_starts = class_starts  # class c's files are [starts[c], starts[c + 1])
    self.mtimes = mtimes  # {class name: its folder's st_mtime_ns when listed; '': the split's}
    self.directory = directory  # where it was saved (None: in memory only)

  @classmethod
  def from_listing(cls, split_dir: str) -> 'FileIndex':
    """Lists root/split/<class>/<image files>: classes are the sorted sub-folder names
    (label = index), files are sorted within a class. The mtimes are read before the listing,
    so a change made while it runs shows as a change later."""
    mtimes = {'': os.stat(split_dir).st_mtime_ns}
    class_names = _class_folders(split_dir)
    if not class_names:
      raise UserError(f'no class folders in {split_dir!r}; expected {split_dir}/<class>/<images>')
    chunks, lengths, counts = [], [], []
    for name in class_names:
      class_dir = os.path.join(split_dir, name)
      mtimes[name] = os.stat(class_dir).st_mtime_ns
      files = [f'{name}/{f}'.encode('utf-8', 'surrogateescape') for f in _image_files(class_dir)]
      chunks += files
      lengths += [len(f) for f in files]
      counts.append(len(files))
    if not chunks:
      raise UserError(f'split {split_dir!r} has {len(class_names)} class folders but no '
                      f'image files ({", ".join(_IMAGE_EXTENSIONS)})')
    offsets = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    names = np.frombuffer(b''.join(chunks), np.uint8)
    class_starts = np.zeros(len(class_names) + 1, np.int64)
    np.cumsum(counts, out=class_starts[1:])
    labels = np.repeat(np.arange(len(class_names), dtype=np.int32), counts)
    return cls(class_names, names, offsets, labels, class_starts, mtimes)

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def name(self, index: int) -> str:
    """File index's path relative to the split folder."""
    start, end = self._offsets[index], self._offsets[index + 1]
    return bytes(self._names[start:end]).decode('utf-8', 'surrogateescape')

  def label(self, index: int) -> int:
    return int(self._labels[index])

  @property
  def labels(self) -> np.ndarray:
    return self._labels

  def class_files(self, label: int) -> list[str]:
    """The file names (without the class folder) of one class, as listed."""
    cut = len(self.class_names[label]) + 1
    return [self.name(i)[cut:] for i in range(self._class_starts[label],
                                              self._class_starts[label + 1])]

  _ARRAYS = ('names', 'offsets', 'labels', 'class_starts')

  def save(self, directory: str) -> None:
    """Writes the index to `directory` atomically: into a temporary folder beside it, renamed
    into place when complete, so a reader sees the whole index or none."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
    try:
      for key in self._ARRAYS:
        np.save(os.path.join(tmp, f'{key}.npy'), np.asarray(getattr(self, f'_{key}')))
      with open(os.path.join(tmp, _INDEX_META), 'w') as f:
        json.dump({'format': _INDEX_FORMAT, 'num_records': len(self),
                   'class_names': self.class_names, 'mtimes_ns': self.mtimes}, f)
      os.rename(tmp, directory)
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
      if not is_saved(directory):  # else another process renamed its copy first: use that
        raise

  @classmethod
  def load(cls, directory: str) -> 'FileIndex':
    """An index that save() wrote, its arrays memory-mapped (read-only)."""
    try:
      with open(os.path.join(directory, _INDEX_META)) as f:
        meta = json.load(f)
      if meta.get('format') != _INDEX_FORMAT:
        raise ValueError(f'format {meta.get("format")!r}, expected {_INDEX_FORMAT!r}')
      arrays = {key: np.load(os.path.join(directory, f'{key}.npy'), mmap_mode='r')
                for key in cls._ARRAYS}
    except (OSError, ValueError) as e:
      raise UserError(f'cannot read the file index {directory!r}: {e}; delete it to list the '
                      'folder again (a resume then reads the folder as it is now)') from None
    index = cls(meta['class_names'], arrays['names'], arrays['offsets'], arrays['labels'],
                arrays['class_starts'], meta['mtimes_ns'], directory)
    if len(index) != meta['num_records']:
      raise UserError(f'the file index {directory!r} is incomplete ({len(index)} of '
                      f'{meta["num_records"]} files); delete it to list the folder again')
    return index

  def changes(self, split_dir: str) -> tuple[int, int, int]:
    """(files gone, files added, class folders added) in split_dir since the listing, found
    by listing only the class folders whose mtime changed (adding, removing or renaming a file
    changes its folder's mtime): a stat per class when nothing changed."""
    gone = added = new_classes = 0
    if _mtime(split_dir) != self.mtimes.get(''):
      new_classes = len(set(_class_folders(split_dir)) - set(self.class_names))
    for label, name in enumerate(self.class_names):
      class_dir = os.path.join(split_dir, name)
      if _mtime(class_dir) == self.mtimes.get(name):
        continue
      before = set(self.class_files(label))
      now = set(_image_files(class_dir)) if os.path.isdir(class_dir) else set()
      gone += len(before - now)
      added += len(now - before)
    return gone, added, new_classes


def _mtime(path: str) -> int | None:
  try:
    return os.stat(path).st_mtime_ns
  except OSError:
    return None


def is_saved(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, _INDEX_META))


class ImageFolderSource:
  """Grain RandomAccessDataSource over root/split/<class>/<image files>.

  Classes are the sorted sub-folder names (label = index), files are sorted within a class
  (FileIndex.from_listing). ImageFolderSource(root, split) lists the folder; from_index opens
  a saved listing instead, without listing anything: then the source pickles (into each Grain
  worker) as the index's path, and each process memory-maps it on first use.

  A file that cannot be read (gone since the listing, a permission or I/O error) gives a
  record with empty image bytes and its 'error': the loaders skip and count it as they do an
  undecodable image.
  """

  def __init__(self, root: str, split: str):
    self.root, self.split = root, split
    self.split_dir = _split_dir(root, split)
    self._index = FileIndex.from_listing(self.split_dir)

  @classmethod
  def from_index(cls, root: str, split: str, directory: str) -> 'ImageFolderSource':
    """The split as a saved FileIndex lists it (no listing of the folder)."""
    source = cls.__new__(cls)
    source.root, source.split = root, split
    source.split_dir = _split_dir(root, split)
    source._index = FileIndex.load(directory)
    return source

  @property
  def class_names(self) -> list[str]:
    return self._index.class_names

  @property
  def index(self) -> FileIndex:
    return self._index

  @property
  def paths(self) -> list[str]:
    """Every file's path (built on demand: a list of strings is what the index avoids)."""
    return [self.path(i) for i in range(len(self))]

  @property
  def labels(self) -> list[int]:
    return self._index.labels.tolist()

  def path(self, index: int) -> str:
    return os.path.join(self.split_dir, self._index.name(index))

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int) -> dict:
    # 'source' names the file in the warning when it cannot be read or decoded.
    path = self.path(index)
    try:
      with open(path, 'rb') as f:
        image = f.read()
    except OSError as e:  # gone since the listing, EIO, a permission: skipped, counted
      return {'image': b'', 'label': self._index.label(index), 'source': path,
              'error': f'cannot read it: {e.strerror or e}'}
    return {'image': image, 'label': self._index.label(index), 'source': path}

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)
    if self._index.directory:  # a saved index: its path, memory-mapped again where unpickled
      state['_index'] = self._index.directory
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    if isinstance(self._index, str):
      self._index = FileIndex.load(self._index)

  def __repr__(self) -> str:
    # Grain stores repr(source) in iterator checkpoints and compares it on restore: keep it free
    # of memory addresses and absolute paths.
    return (f'ImageFolderSource(root={self.root!r}, split={self.split!r}, '
            f'num_records={len(self)}, num_classes={len(self.class_names)})')


def open_folder(root: str, split: str, run_dir: str | None = None, *, writer: bool = True,
                barrier=None, log=print) -> ImageFolderSource:
  """The split's source; with run_dir, through the run's own file index.

  Without run_dir the folder is listed (tools, tests). With it, the index is
  <run_dir>/file_index/<split>/: the first start lists the folder once and saves the listing
  there (the `writer`, process 0, alone; `barrier`, when several processes run, waits for it),
  and every later start reads that index instead of listing 1.28M files again. A resume so
  reads the files its run started with: if the folder changed since, one note line says how
  (files gone are skipped and counted when read, files added are not seen).
  """
  if not run_dir:
    return ImageFolderSource(root, split)
  directory = os.path.join(run_dir, FILE_INDEX_DIR, split)
  listed = False
  if writer and not is_saved(directory):
    ImageFolderSource(root, split).index.save(directory)
    listed = True
  if barrier is not None:
    barrier()
  if not is_saved(directory):  # not the writer, and the writer's index is not here
    _split_dir(root, split)  # a missing folder is that error
    raise UserError(f'the file index {directory!r} that process 0 wrote is not visible here: '
                    'every process of a run needs the same shared --workdir')
  source = ImageFolderSource.from_index(root, split, directory)
  note = '' if listed or not log else _change_note(source)
  if note:
    log(note, flush=True)
  return source


def _change_note(source: ImageFolderSource) -> str:
  """'' or the one line that says how the folder changed since the run's index was built."""
  gone, added, new_classes = source.index.changes(source.split_dir)
  if not (gone or added or new_classes):
    return ''
  parts = [f'{gone} of its {len(source)} files are gone, each skipped and counted as '
           'unreadable when read'] if gone else []
  new = ' and '.join(f'{n} {what}' for n, what in ((added, 'file(s)'),
                                                   (new_classes, 'class folder(s)')) if n)
  if new:
    parts.append(f'{new} added are not seen')
  return (f'note: {source.split_dir} changed since this run listed it into '
          f'{source.index.directory}: {"; ".join(parts)}. A resume reads its run\'s own file '
          'index')


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

  The images are stored as their central resize_size square (copies of the earlier format
  hold the whole image with its shorter side at resize_size), so the train step's decode is of
  a small JPEG and resize_shorter_side has nothing to do (the paper likewise down-sampled
  ImageNet to 256 x 256 once, section 2).
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


def make_source(dataset_config, split: str, run_dir: str | None = None, **index_options):
  """The Grain data source for config.dataset and a split name; items {'image', 'label'}.

  run_dir (a run's workdir): an image folder is read through the run's own file index
  (open_folder, which index_options go to)."""
  if dataset_config.name in ('folder', 'prepared'):
    if not dataset_config.folder:
      raise UserError(f'config.dataset.name is {dataset_config.name!r} but '
                      'config.dataset.folder is empty')
    if dataset_config.name == 'folder':
      source = open_folder(dataset_config.folder, split, run_dir, **index_options)
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
