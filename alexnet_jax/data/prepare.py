r"""Prepares datasets for the Grain input pipeline, in array_record (random access); the command
is `python -m alexnet_jax.tools.prepare_data`.

TFDS datasets, as TFDS writes them (full-size images):

  python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 [--data_dir=DIR] [--manual_dir=DIR]

imagenet2012 cannot be downloaded by TFDS: register at image-net.org, put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual dir (--manual_dir, default
<data_dir>/downloads/manual) and run the command above (hours; ~150 GB of disk while it runs).
Other TFDS datasets (e.g. imagenette) are downloaded by TFDS, which needs internet.
array_record is required: tfds.data_source gives Grain random access only in that format.
After a kill, a rerun prepares the dataset again from the start: TFDS writes into
<data_dir>/<name>/incomplete.XXXXXX_<version>/, renames it when every split is written and does
not resume one left behind (the command names such a folder: delete it, it holds as much as was
written). What TFDS downloaded is kept; imagenet2012 reads its two archives where they are.

A prepared copy (--out_dir): every image re-encoded as a JPEG of its central resize x resize
patch after the shorter side is scaled to --resize_size (256: the paper's down-sampling of
ImageNet, section 2, "cropped out the central 256x256 patch"), so that training decodes small
square JPEGs straight into its batch and never resizes or crops to get there. The source is an
image folder or a TFDS dataset prepared above:

  python -m alexnet_jax.tools.prepare_data --dataset=folder --folder=data/clothing10-128 --out_dir=DIR
  python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 --out_dir=DIR [--data_dir=...]

then train with --config.dataset.name=prepared --config.dataset.folder=DIR. DIR holds, per
split, <split>.array_record-NNNNN-of-NNNNN files (one record per image: the label as a
little-endian int32, then the JPEG bytes) and metadata.json (class names, counts, size, source,
the undecodable source images that were skipped).

A copy resumes after a kill: run the same command again. Each shard is written under a temporary
name, renamed when complete and recorded in DIR/progress.json; a rerun with the same flags and
source (the same splits, classes and image counts) keeps every recorded shard whose file still
has its size and record count, says so, and writes the others. metadata.json is written last:
a directory without it is an unfinished copy, which training refuses.
"""
import dataclasses
import glob
import io
import json
import multiprocessing
import os
import time

from array_record.python import array_record_module
import ml_collections
import numpy as np
from PIL import Image

from alexnet_jax.data import sources
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.errors import UserError


def prepare(name: str, data_dir: str = '', manual_dir: str = '') -> str:
  """download_and_prepare(file_format='array_record'); returns the prepared dataset's folder."""
  tfds = sources.import_tfds()
  dataset_config = ml_collections.ConfigDict(
      {'name': name, 'data_dir': data_dir, 'manual_dir': manual_dir})
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown TFDS dataset {name!r}') from None
  if builder.is_prepared():
    print(f'{name} is already prepared in {builder.data_dir}')
    return os.fspath(builder.data_dir)
  # TFDS generates into <name>/incomplete.XXXXXX_<version>/ and renames it when every split is
  # written; a kill leaves that folder behind, and a rerun starts afresh in a new one.
  stale = sorted(glob.glob(os.path.join(os.fspath(builder.data_path.parent), 'incomplete.*')))
  if stale:
    print(f'note: {" and ".join(stale)} left by an unfinished earlier preparation: TFDS does not '
          f'resume it but prepares {name} again from the start; delete it to free its space',
          flush=True)
  if builder.name == 'imagenet2012':
    manual = sources.imagenet_manual_dir(dataset_config)
    missing = [f for f in sources.IMAGENET_FILES
               if not os.path.isfile(os.path.join(manual, f))]
    if missing:
      raise UserError(f'missing {" and ".join(missing)} in {manual}: download them from '
                      'image-net.org (registration needed), put them there (or pass '
                      '--manual_dir) and run this again')
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    builder.download_and_prepare(file_format='array_record', download_config=download_config)
  except OSError as e:  # no network (requests' errors are OSErrors), a full disk, ...
    raise UserError(f'could not prepare {name} in {builder.data_dir}: '
                    f'{" ".join(str(e).split())[:300]}') from None
  print(f'prepared {name} in {builder.data_dir}')
  return os.fspath(builder.data_dir)


# --- A prepared copy at the training resolution (--out_dir). ---


def reencode(data: bytes, size: int, quality: int) -> bytes:
  """Encoded image -> JPEG of its central size x size patch (ValueError if undecodable).

  The pixels are what training computes from the source (preprocessing.decode_and_resize:
  decode, at reduced scale where the JPEG is much larger than `size`, shorter side to `size`,
  the central patch), then one JPEG encode at `quality`; a JPEG already size x size is kept
  byte for byte (no second generation of JPEG loss).
  """
  img, reduction = pp.decode_image_reduced(data, size)
  if reduction == 1 and img.shape[:2] == (size, size) and bytes(data[:3]) == b'\xff\xd8\xff':
    return bytes(data)
  patch = pp.decode_and_resize(img, size)
  out = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(patch)).save(out, 'JPEG', quality=quality)
  return out.getvalue()


def _reencode_item(item):
  """(label, bytes, size, quality, read error) -> (label, jpeg or None, why it is None); runs in
  the pool."""
  label, data, size, quality, read_error = item
  if read_error:
    return label, None, read_error
  try:
    return label, reencode(data, size, quality), ''
  except ValueError as e:
    return label, None, str(e)


def _default_splits(dataset_config) -> list[str]:
  """Every split of the source: a folder's sub-folders, a TFDS or prepared dataset's splits."""
  if dataset_config.name == 'folder':
    root = sources.resolve_path(dataset_config.folder)
    if not os.path.isdir(root):
      raise UserError(f'image folder {root!r} does not exist (--folder)')
    return sorted(d for d in os.listdir(root)
                  if not d.startswith('.') and os.path.isdir(os.path.join(root, d)))
  if dataset_config.name == 'prepared':
    return sorted(sources.load_prepared_metadata(dataset_config.folder)['splits'])
  return sorted(sources.tfds_builder(dataset_config).info.splits.keys())


def _source_description(dataset_config) -> dict:
  if dataset_config.name in ('folder', 'prepared'):
    return {'name': dataset_config.name, 'folder': dataset_config.folder}
  return {'name': dataset_config.name, 'data_dir': dataset_config.data_dir}


def _short_name(dataset_config) -> str:
  """The dataset's name in PreparedSource's repr: a folder's base name or the TFDS name."""
  if dataset_config.name in ('folder', 'prepared'):
    return os.path.basename(os.path.normpath(dataset_config.folder))
  return dataset_config.name


class _Progress:
  """A line every `every` seconds on long work: images done, img/s, skipped."""

  def __init__(self, split: str, total: int, log, done: int = 0, every: float = 10.0):
    self.split, self.total, self.log, self.every = split, total, log, every
    self.start = self.last = time.perf_counter()
    self.first = done  # images an earlier run wrote: not in this run's rate

  def rate(self, done: int) -> float:
    return (done - self.first) / max(time.perf_counter() - self.start, 1e-9)

  def update(self, done: int, skipped: int):
    if time.perf_counter() - self.last >= self.every:
      self.last = time.perf_counter()
      self.log(f'{self.split}: {done}/{self.total} images, {self.rate(done):.0f} img/s, '
               f'{skipped} skipped', flush=True)


@dataclasses.dataclass
class _SplitResult:
  files: list[str]
  num_records: int
  source_records: int
  skipped: list[str]
  encoded: int  # source images this run read (not those of the shards an earlier run wrote)
  seconds: float


# --- Resuming after a kill: each shard is written under a temporary name and renamed when it is
# complete, then recorded in PROGRESS with its record count, size and skipped images. A rerun
# with the same settings keeps every recorded shard whose file still matches and writes the
# others; metadata.json, written last, still marks the finished copy. ---

PROGRESS = 'progress.json'
_PARTIAL = '.partial'


class _Journal:
  """PROGRESS: the settings of the copy under way and the shards it has completed."""

  def __init__(self, out_dir: str, settings: dict):
    self.path = os.path.join(out_dir, PROGRESS)
    self.settings, self.shards = settings, {}

  def load(self) -> bool:
    """Reads an earlier run's journal (True); a missing or unreadable one starts afresh. One
    written with other settings is a UserError: its shards hold another copy."""
    try:
      with open(self.path) as f:
        saved = json.load(f)
      settings, shards = saved['settings'], saved['shards']
    except (OSError, ValueError, KeyError, TypeError):
      return False
    if settings != self.settings:
      changed = sorted(k for k in set(settings) | set(self.settings)
                       if settings.get(k) != self.settings.get(k))
      raise UserError(
          f'{os.path.dirname(self.path)!r} holds an unfinished copy made with other settings or '
          f'another source ({", ".join(changed)} differ): rerun with the same flags to finish '
          'it, or choose another --out_dir or delete it')
    self.shards = shards
    return True

  def is_complete(self, out_dir: str, name: str) -> bool:
    """Whether shard `name` is recorded, and its file has the recorded size and records."""
    entry = self.shards.get(name)
    path = os.path.join(out_dir, name)
    if entry is None or not os.path.isfile(path) or os.path.getsize(path) != entry['bytes']:
      return False
    try:
      reader = array_record_module.ArrayRecordReader(path)
      try:
        return reader.num_records() == entry['records']
      finally:
        reader.close()
    except Exception:  # pylint: disable=broad-except  (array_record raises several types)
      return False

  def record(self, name: str, entry: dict):
    self.shards[name] = entry
    self.save()

  def save(self):
    _write_atomically(self.path, {'settings': self.settings, 'shards': self.shards})

  def remove(self):
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass


def _write_atomically(path: str, obj) -> None:
  """JSON to path via a temporary file, synced and renamed: the old file or the new, whole."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _write_shard(source, indices: range, path: str, *, resize_size: int, quality: int, pool,
                 progress: _Progress, skipped_before: int, log) -> dict:
  """Re-encodes source[indices] into the shard `path` (through path + '.partial', renamed once
  complete and synced); its journal entry."""
  records = (source[i] for i in indices)
  items = ((r['label'], r['image'], resize_size, quality, r.get('error', ''),
            r.get('source', '')) for r in records)
  wheres = []  # where each record comes from, for the skipped-images report (main process)

  def tagged():
    for *item, where in items:
      wheres.append(where)
      yield tuple(item)
  # imap keeps the source order: the copy is deterministic whatever the number of workers.
  results = (pool.imap(_reencode_item, tagged(), chunksize=16) if pool
             else map(_reencode_item, tagged()))
  tmp = path + _PARTIAL
  writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
  written, skipped = 0, []
  try:
    for k, (index, (label, jpeg, error)) in enumerate(zip(indices, results)):
      if jpeg is None:
        skipped.append(wheres[k] or f'{progress.split}[{index}]')
        what = 'unreadable' if error.startswith('cannot read') else 'undecodable'
        log(f'skipped {what} image {skipped[-1]}: {error}', flush=True)
      else:
        writer.write(sources.encode_prepared_record(label, jpeg))
        written += 1
      progress.update(index + 1, skipped_before + len(skipped))
  finally:
    writer.close()
  with open(tmp, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return {'records': written, 'bytes': os.path.getsize(path), 'skipped': skipped}


def _write_split(source, split: str, out_dir: str, *, resize_size: int, quality: int, pool,
                 records_per_shard: int, journal: _Journal, log) -> _SplitResult:
  n = len(source)
  starts = range(0, n, records_per_shard)
  names = sources.prepared_shard_names(split, len(starts))
  kept = [name for name in names if journal.is_complete(out_dir, name)]
  if kept:
    log(f'{split}: kept {len(kept)} of its {len(names)} shards, complete from an earlier run '
        f'({", ".join(kept) if len(kept) <= 3 else f"{kept[0]} ... {kept[-1]}"}); writing the '
        f'other {len(names) - len(kept)}', flush=True)
  done = sum(min(records_per_shard, n - start) for name, start in zip(names, starts)
             if name in kept)
  progress = _Progress(split, n, log, done=done)
  skipped = sum(len(journal.shards[name]['skipped']) for name in kept)
  for name, start in zip(names, starts):
    if name in kept:
      continue
    entry = _write_shard(source, range(start, min(start + records_per_shard, n)),
                         os.path.join(out_dir, name), resize_size=resize_size, quality=quality,
                         pool=pool, progress=progress, skipped_before=skipped, log=log)
    journal.record(name, entry)
    skipped += len(entry['skipped'])
  return _SplitResult(files=names, num_records=sum(journal.shards[k]['records'] for k in names),
                      source_records=n,
                      skipped=[s for k in names for s in journal.shards[k]['skipped']],
                      encoded=n - done, seconds=time.perf_counter() - progress.start)


def _check_existing(out_dir: str, wanted: dict, log) -> dict | None:
  """The metadata of a finished copy with the same source and settings, None if there is none."""
  if not os.path.isfile(os.path.join(out_dir, sources.PREPARED_METADATA)):
    return None
  meta = sources.load_prepared_metadata(out_dir)
  have = {k: meta.get(k) for k in wanted}
  if have != wanted:
    raise UserError(f'{out_dir!r} already holds a prepared dataset with other settings '
                    f'({json.dumps(have)}); choose another --out_dir or delete it')
  log(f'{out_dir} is already prepared ({", ".join(meta["splits"])})', flush=True)
  return meta


def prepare_resized(dataset_config, out_dir: str, *, splits: list[str] | None = None,
                    resize_size: int = 256, quality: int = 95, workers: int = 0,
                    records_per_shard: int = 10000, log=print) -> dict:
  """Writes the prepared copy of config.dataset-like `dataset_config` to out_dir; its metadata.

  Undecodable (or unreadable) source images are skipped, printed and counted, not fatal.
  workers > 0 re-encodes in that many processes (the output is the same). An unfinished copy
  in out_dir with the same settings is resumed: its complete shards are kept (module doc).
  """
  if resize_size <= 0 or not 1 <= quality <= 100 or records_per_shard <= 0:
    raise UserError(f'bad --resize_size={resize_size}, --quality={quality} or '
                    f'--records_per_shard={records_per_shard}')
  splits = list(splits) if splits else _default_splits(dataset_config)
  if not splits:
    raise UserError(f'no splits found in {_source_description(dataset_config)}')
  # 'stored': copies of the earlier format (no 'stored' key) kept the whole image (shorter side
  # at resize_size); training reads either, and preparing into such a directory again says it
  # differs.
  wanted = {'source': _source_description(dataset_config), 'resize_size': resize_size,
            'jpeg_quality': quality, 'split_names': sorted(splits), 'stored': 'central patch'}
  existing = _check_existing(out_dir, wanted, log)
  if existing is not None:
    _Journal(out_dir, {}).remove()  # left if a kill came between metadata.json and its removal
    return existing
  split_sources = {split: sources.make_source(dataset_config, split) for split in splits}
  class_names = sources.class_names_of(split_sources[splits[0]])
  for split, source in split_sources.items():
    if sources.class_names_of(source) != class_names:
      raise UserError(f'splits {splits[0]!r} and {split!r} have different classes')
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create --out_dir {out_dir!r}: {e.strerror}') from None
  # What a rerun must find unchanged to keep the shards this run completes.
  journal = _Journal(out_dir, {
      **wanted, 'records_per_shard': records_per_shard, 'class_names': class_names,
      'source_records': {split: len(source) for split, source in split_sources.items()}})
  if journal.load():
    log(f'{out_dir}: resuming an unfinished copy ({len(journal.shards)} shards recorded as '
        f'complete in {PROGRESS})', flush=True)
  else:
    journal.save()

  pool = multiprocessing.get_context('spawn').Pool(workers) if workers > 0 else None
  try:
    results = {}
    for split in splits:
      log(f'{split}: re-encoding {len(split_sources[split])} images as their central '
          f'{resize_size} x {resize_size} patch into {out_dir} ({max(workers, 1)} process(es))',
          flush=True)
      r = _write_split(split_sources[split], split, out_dir, resize_size=resize_size,
                       quality=quality, pool=pool, records_per_shard=records_per_shard,
                       journal=journal, log=log)
      results[split] = r
      size_mb = sum(os.path.getsize(os.path.join(out_dir, f)) for f in r.files) / 1e6
      log(f'{split}: {r.num_records} images written, {len(r.skipped)} skipped, '
          f'{r.encoded / max(r.seconds, 1e-9):.0f} img/s, {size_mb:.1f} MB', flush=True)
  finally:
    if pool is not None:
      pool.close()
      pool.join()

  meta = {
      'format': sources.PREPARED_FORMAT,
      'dataset': _short_name(dataset_config),
      **wanted,
      'record': 'label as a little-endian int32, then the JPEG bytes',
      'class_names': class_names,
      'splits': {split: {'files': r.files, 'num_records': r.num_records,
                         'source_records': r.source_records, 'skipped': len(r.skipped),
                         'skipped_files': r.skipped[:1000]}
                 for split, r in results.items()},
  }
  # Written last, atomically: a copy without metadata.json is an unfinished one.
  tmp = os.path.join(out_dir, sources.PREPARED_METADATA + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(meta, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, sources.PREPARED_METADATA))
  journal.remove()  # the copy is finished: metadata.json says so, and lists its shards
  log(f'prepared {meta["dataset"]} in {out_dir}: train with --config.dataset.name=prepared '
      f'--config.dataset.folder={out_dir}', flush=True)
  return meta
