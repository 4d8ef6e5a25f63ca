"""Grain input pipelines: the paper's augmentation for training, ordered padded passes for eval.

All work (file reads, JPEG decoding, resizing, augmentation) is numpy/PIL inside Grain; the
batches are numpy: {'image': float32 (B, S, S, 3), 'label': int32 (B,)} (+ 'mask' for eval).
With config.input.augment_on='device' the workers stop after decoding: 'image' is the uint8
(B, R, R, 3) patch, training batches carry each example's 'epoch' and 'index' (int32), and
device_preprocessing.py does the rest inside the jitted step.

Determinism: the training order is one endless sequence of records, every epoch a fresh
seeded permutation (Grain's MapDataset shuffle + repeat), and every position in it gets its own
np.random.Generator keyed by (seed, position) for the augmentation. Global batch k is positions
[k B, (k+1) B), split over processes by Grain's ElasticIterator (BatchFirstIterator on the
device path, which decodes a batch at a time); its state is the next position alone. So the
batches, their augmentation and a restored iterator do not depend on timing, on the number of
worker processes or on the number of hosts, and a state saved with one worker count restores
with another (or onto another process count) at the same place.
"""
import math

from absl import flags
import grain
import jax  # grain imports it anyway
import numpy as np

from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data.dataset import Dataset
from alexnet_jax.data.preprocessing import PreprocessParams
from alexnet_jax.errors import UserError


def _skip_unreadable(record, error: ValueError) -> None:
  """The one line a truncated, empty or non-image file gets. Its image becomes a blank one
  marked invalid (the step gives it no weight and the loop counts it), so one bad file among
  millions does not stop a run, and batch shapes and the data order stay as they were."""
  print(f'warning: skipping unreadable image {record.get("source", "(no path)")}: {error}',
        flush=True)


class DecodeResize(grain.transforms.Map):
  """Decode, shorter side to resize_size, central resize x resize patch (paper section 2)."""

  def __init__(self, resize_size: int):
    self.resize_size = resize_size

  def map(self, record):
    out = {'label': np.int32(record['label']), 'valid': np.bool_(True)}
    # Allocated only where needed: zeroing 196 KB for every record cost ~5 % of its decode.
    blank = lambda: np.zeros((self.resize_size, self.resize_size, 3), np.uint8)
    if record.get('mask', True):
      try:
        out['image'] = pp.decode_and_resize(record['image'], self.resize_size)
      except ValueError as e:
        _skip_unreadable(record, e)
        out['image'], out['valid'] = blank(), np.bool_(False)
    else:  # eval padding: no file behind it.
      out['image'] = blank()
    if 'mask' in record:
      out['mask'] = np.bool_(record['mask'])
    return out


class TrainAugment(grain.transforms.RandomMap):
  """Mean, random crop + flip, PCA lighting, optional /std (paper 4.1); Grain's per-record rng."""

  def __init__(self, params: PreprocessParams):
    self.p = params

  def random_map(self, record, rng: np.random.Generator):
    p = self.p
    image = pp.train_transform(record['image'], rng, image_size=p.image_size, mean=p.mean,
                               std=p.std, flip=p.random_flip, crop=p.random_crop,
                               lighting_std=p.lighting_std,
                               eigval=p.eigval, eigvec=p.eigvec)
    return {'image': image, 'label': record['label'], 'valid': record['valid']}


class ReadBatch(grain.transforms.Map):
  """A batch of record indices -> those records, read from the source directly. Grain's
  per-record bookkeeping (statistics, metrics) cost about as much CPU as the read, and held the
  GIL, so that threads decoding side by side in one process scaled worse (the README's
  input-pipeline section has the figures)."""

  def __init__(self, source):
    self.source = source

  def map(self, indices):
    return [self.source[int(i)] for i in indices]


class DecodeBatch(grain.transforms.MapWithIndex):
  """For device augmentation: batch k of this process's raw records -> one batch, each image
  decoded (and resized, if the data is not prepared) straight into its row of a uint8
  (b, R, R, 3) array, with each record's (epoch, index) in the endless training order, from
  which the device derives its random draws (row i of batch k is position first + (k b + i)
  stride). Decoding after batching costs Grain one element per batch instead of one per
  record, and the rows need no stacking (the README's input-pipeline section has the
  figures)."""

  def __init__(self, resize_size: int, num_records: int, first: int, stride: int):
    self.resize_size, self.num_records = resize_size, num_records
    self.first, self.stride = first, stride

  def map_with_index(self, k: int, records):
    size, b = self.resize_size, len(records)
    images = np.empty((b, size, size, 3), np.uint8)
    valid = np.ones(b, np.bool_)
    for row, record in enumerate(records):
      try:
        pp.decode_and_resize_into(record['image'], images[row])
      except ValueError as e:
        _skip_unreadable(record, e)
        images[row], valid[row] = 0, False
    positions = self.first + (k * b + np.arange(b, dtype=np.int64)) * self.stride
    epoch, index = np.divmod(positions, self.num_records)
    return {'image': images, 'label': np.array([r['label'] for r in records], np.int32),
            'valid': valid, 'epoch': epoch.astype(np.int32), 'index': index.astype(np.int32)}


class BatchFirstIterator(grain.DatasetIterator):
  """Grain's ElasticIterator with the reading and decoding after batching (ReadBatch,
  DecodeBatch): this process's records are positions global_next_index + shard_index,
  + shard_count, ... of the endless order (`order`: record indices), batch_size / shard_count
  at a time. Its state is the same {'global_next_index': the next global position}, so a
  checkpoint of either restores into the other, with any worker or process count."""

  def __init__(self, source, order: grain.MapDataset, resize_size: int,
               global_batch_size: int, shard_options: grain.sharding.ShardOptions, *,
               read_options: grain.ReadOptions,
               multiprocessing_options: grain.MultiprocessingOptions | None = None):
    super().__init__()
    self._source, self._order, self._resize_size = source, order, resize_size
    self._global_batch_size, self._shard_options = global_batch_size, shard_options
    self._read_options, self._multiprocessing = read_options, multiprocessing_options
    self._global_next_index = 0
    self._iterator = None

  def _start(self):
    shard = self._shard_options
    first = self._global_next_index + shard.shard_index
    decode = DecodeBatch(self._resize_size, len(self._source), first, shard.shard_count)
    batches = (self._order[first::shard.shard_count]
               .batch(self._global_batch_size // shard.shard_count, drop_remainder=True,
                      batch_fn=list)
               .map(ReadBatch(self._source))
               .map_with_index(decode)
               .to_iter_dataset(read_options=self._read_options))
    if self._multiprocessing is not None:
      batches = batches.mp_prefetch(self._multiprocessing)
    return iter(batches)

  def __next__(self):
    if self._iterator is None:
      self._iterator = self._start()
    batch = next(self._iterator)
    self._global_next_index += self._global_batch_size
    return batch

  def get_state(self) -> dict:
    return {'global_next_index': self._global_next_index}

  def set_state(self, state):
    self.close()
    self._global_next_index = state['global_next_index']

  def close(self):
    if self._iterator is not None and hasattr(self._iterator, 'close'):
      self._iterator.close()
    self._iterator = None


class EvalTransform(grain.transforms.Map):
  """Mean, centre crop or the ten patches (paper 4.1), optional /std; zeros for padding."""

  def __init__(self, params: PreprocessParams, ten_crop: bool, on_device: bool = False):
    self.p, self.ten_crop, self.on_device = params, ten_crop, on_device

  def map(self, record):
    p = self.p
    if self.on_device:  # the uint8 R x R patch; device_preprocessing.eval_images crops it
      image = record['image']
    else:
      image = pp.eval_transform(record['image'], image_size=p.image_size, mean=p.mean,
                                std=p.std, ten_crop=self.ten_crop)
    if not record['mask']:
      image = np.zeros_like(image)
    # mask: counts in the metrics; skipped: a real record whose file could not be read.
    return {'image': image, 'label': record['label'],
            'mask': np.bool_(record['mask'] and record['valid']),
            'skipped': np.bool_(record['mask'] and not record['valid'])}


class PaddedSource:
  """A source padded with {'mask': False} records to `length`; real records get mask True."""

  def __init__(self, source, length: int):
    self.source, self.length = source, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    if index < len(self.source):
      return {**self.source[index], 'mask': True}
    return {'image': None, 'label': 0, 'mask': False}

  def __repr__(self) -> str:
    return f'PaddedSource({self.source!r}, length={self.length})'


def _shard_options(shard_index, shard_count, drop_remainder: bool) -> grain.sharding.ShardOptions:
  if shard_index is None and shard_count is None:
    # One shard per JAX process (jax.process_index() / process_count()).
    return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)
  if shard_index is None or shard_count is None or not 0 <= shard_index < shard_count:
    raise ValueError(f'bad shard_index={shard_index} / shard_count={shard_count}')
  return grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=drop_remainder)


def _ensure_flags_parsed():
  """Grain reads its absl flags when it starts worker processes; outside an absl app (pytest,
  notebooks) nothing has parsed them, so use their defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


AUGMENT_ON = ('auto', 'device', 'host')


def resolve_augment_on(value: str, platform: str) -> str:
  """'device' or 'host' for config.input.augment_on on a backend ('cpu', 'gpu', 'tpu').

  'auto' is 'device' on an accelerator, where decoding alone keeps the host's cores busy (the
  README's input-pipeline section), and 'host' on a CPU, where the same cores run both: there
  the two paths measured level end to end (tools/loader_benchmark on the demo, 2026-11-30:
  96-104 % of the synthetic-batch step on both, within this VM's noise), and every CPU result
  in the README was measured on the host path.
  """
  if value not in AUGMENT_ON:
    raise UserError(f"config.input.augment_on must be one of {', '.join(AUGMENT_ON)}, got "
                    f'{value!r}')
  if value != 'auto':
    return value
  return 'host' if platform == 'cpu' else 'device'


def augment_on_device(config) -> bool:
  """config.input.augment_on resolved for this process's backend ('auto': the device on an
  accelerator, the host on a CPU)."""
  return resolve_augment_on(config.input.get('augment_on', 'host'),
                            jax.default_backend()) == 'device'


def create_train_loader(config, dataset: Dataset, *, seed: int, shard_index: int | None = None,
                        shard_count: int | None = None) -> grain.IterDataset:
  """Endless shuffled training batches of config.train.batch_size // shard_count per process,
  from dataset's training source with its preprocessing.

  Use iter(loader): the iterator's get_state() is {'global_next_index': the next position in
  the training order}, and set_state() of any such state (saved with any worker or process
  count) continues there. Each epoch is a new permutation of all records; a global batch may
  straddle two epochs (nothing is dropped).
  """
  shard_options = _shard_options(shard_index, shard_count, drop_remainder=True)
  count = shard_options.shard_count
  if config.train.batch_size % count:
    raise UserError(f'config.train.batch_size ({config.train.batch_size}) is not divisible by '
                    f'the number of processes ({count})')
  source = dataset.train_source
  if len(source) < config.train.batch_size:
    raise UserError(f'the training split has {len(source)} images: fewer than one batch of '
                    f'{config.train.batch_size}')
  params = dataset.preprocess
  seed = int(seed) % 2**32  # Grain's seeds are uint32
  multiprocessing = None
  if config.input.workers:
    _ensure_flags_parsed()
    multiprocessing = grain.MultiprocessingOptions(
        num_workers=config.input.workers, per_worker_buffer_size=config.input.prefetch)
  # The elements read ahead are whole batches: Grain's default (500 ahead, 16 threads) would
  # hold ~10 GB of the demo's batches per process.
  prefetch = max(1, config.input.prefetch)
  read_options = grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
  # The training order: a new permutation of the records every epoch (Grain's shuffle, seeded
  # seed + epoch), endless (the loop counts steps, not epochs). The same on both paths: the
  # permutation is of positions, whatever the dataset holds.
  shuffled = lambda ds: ds.shuffle(seed=seed).repeat()
  if augment_on_device(config):
    # uint8 R x R + the position the device's draws come from, read and decoded a batch at a
    # time.
    return BatchFirstIterator(source, shuffled(grain.MapDataset.range(len(source))),
                              params.resize_size, config.train.batch_size, shard_options,
                              read_options=read_options, multiprocessing_options=multiprocessing)
  dataset = (shuffled(grain.MapDataset.source(source))
             .map(DecodeResize(params.resize_size))
             .random_map(TrainAugment(params), seed=seed))  # rng from (seed, position)
  return grain.experimental.ElasticIterator(
      dataset, config.train.batch_size, shard_options, read_options=read_options,
      multiprocessing_options=multiprocessing)


def close_iterator(iterator):
  """Stops an iterator's Grain worker processes and frees their shared memory now.

  Otherwise that happens in garbage collection, which at interpreter exit prints
  'Exception ignored in SharedMemoryArray.__del__' noise. The training iterator (a Grain
  DatasetIterator) has close(); grain 0.2.18's DataLoaderIterator (eval) has no public close(),
  its inner DatasetIterator does.
  """
  closable = iterator if hasattr(iterator, 'close') else getattr(iterator, '_iterator', None)
  if hasattr(closable, 'close'):
    closable.close()


def eval_num_batches(num_records: int, batch_size: int, shard_count: int) -> int:
  """Batches per process in one eval pass: the same on every process."""
  return math.ceil(math.ceil(num_records / shard_count) / batch_size)


def create_eval_loader(config, dataset: Dataset, *, ten_crop: bool | None = None,
                       shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.DataLoader:
  """One ordered pass over dataset's eval split in batches of config.eval.batch_size per
  process.

  The split is padded so that every process gets the same number of full batches (shape never
  changes, so the jitted eval step never recompiles); batch['mask'] is True for real examples
  and padding is zeros with label 0. With ten_crop (default config.eval.ten_crop) the images
  are (B, 10, S, S, 3).
  """
  ten_crop = config.eval.ten_crop if ten_crop is None else ten_crop
  shard_options = _shard_options(shard_index, shard_count, drop_remainder=False)
  batch = config.eval.batch_size
  source = dataset.eval_source
  count = shard_options.shard_count
  padded = PaddedSource(source, count * batch * eval_num_batches(len(source), batch, count))
  params = dataset.preprocess
  sampler = grain.samplers.IndexSampler(
      num_records=len(padded), shard_options=shard_options, shuffle=False, num_epochs=1)
  if config.input.workers:
    _ensure_flags_parsed()
  return grain.DataLoader(
      data_source=padded, sampler=sampler,
      operations=[DecodeResize(params.resize_size),
                  EvalTransform(params, bool(ten_crop), on_device=augment_on_device(config)),
                  grain.transforms.Batch(batch, drop_remainder=True)],
      worker_count=config.input.workers, worker_buffer_size=config.input.prefetch,
      shard_options=shard_options)
