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
import dataclasses
import gc
import math
import os
import weakref

from absl import flags
import grain
from grain._src.python.ipc import shared_memory_array
import jax  # grain imports it anyway
from jax.experimental import multihost_utils
import numpy as np

from alexnet_jax.data import augment_on
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data.dataset import Dataset
from alexnet_jax.data.preprocessing import PreprocessParams
from alexnet_jax.errors import RunFailure


def _skip_unreadable(record, error: ValueError) -> None:
  """The one line a truncated, empty or non-image file gets, or one that could not be read
  (an OSError: gone since the run's file index was built, EIO, a permission). Its image becomes
  a blank one marked invalid (the step gives it no weight and the loop counts it), so one bad
  file among millions does not stop a run, and batch shapes and the data order stay as they
  were; UnreadableImages stops a run where too many are."""
  print(f'warning: skipping unreadable image {record.get("source", "(no path)")}: {error}',
        flush=True)


def _encoded(record) -> bytes:
  """The record's image bytes; a ValueError (skipped as an undecodable image is) where the
  source could not read the file (sources.ImageFolderSource puts the OSError in 'error')."""
  if record.get('error'):
    raise ValueError(record['error'])
  return record['image']


class DecodeResize(grain.transforms.Map):
  """Decode, shorter side to resize_size, central resize x resize patch (paper section 2)."""

  def __init__(self, resize_size: int):
    self.resize_size = resize_size

  def map(self, record):
    out = {'label': np.int32(record['label']), 'valid': np.bool_(True)}
    # Allocated only where needed: zeroing 196 KB for every record cost a measurable share of
    # its decode (docs/input_pipeline.md).
    blank = lambda: np.zeros((self.resize_size, self.resize_size, 3), np.uint8)
    if record.get('mask', True):
      try:
        out['image'] = pp.decode_and_resize(_encoded(record), self.resize_size)
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
  GIL, so that threads decoding side by side in one process scaled worse (docs/input_pipeline.md
  has the figures)."""

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
  record, and the rows need no stacking (docs/input_pipeline.md has the figures)."""

  def __init__(self, resize_size: int, num_records: int, first: int, stride: int):
    self.resize_size, self.num_records = resize_size, num_records
    self.first, self.stride = first, stride

  def map_with_index(self, k: int, records):
    size, b = self.resize_size, len(records)
    images = np.empty((b, size, size, 3), np.uint8)
    valid = np.ones(b, np.bool_)
    for row, record in enumerate(records):
      try:
        pp.decode_and_resize_into(_encoded(record), images[row])
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


# --- how many worker processes and read threads (config.input.workers / prefetch; -1 = auto) ---

# Environment variables that launchers set to the number of processes on this host.
_LOCAL_PROCESS_COUNT_VARS = ('LOCAL_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_SIZE', 'MPI_LOCALNRANKS',
                             'SLURM_NTASKS_PER_NODE')
# Threads one process decodes with at most: what still holds the GIL (the part of an image's CPU
# time simplejpeg does not release) caps one process at about 8 cores' decoding, as measured on
# the CPU (docs/input_pipeline.md); past that, worker processes.
MAX_THREADS_PER_PROCESS = 8
CPU_THREADS = 2  # on a CPU backend: the step needs the cores (see loader_size)


def host_cores(environ=None) -> tuple[int, int]:
  """(cores this process may decode on, processes on this host that share them).

  The cores are os.sched_getaffinity's (a container's or a SLURM task's CPU set included).
  Where that is the whole machine and a launcher says several processes run on this host
  (LOCAL_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS, SLURM_NTASKS_PER_NODE), each
  gets its share; a process already bound to fewer cores has its share.
  """
  environ = os.environ if environ is None else environ
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  processes = 1
  for name in _LOCAL_PROCESS_COUNT_VARS:
    digits = environ.get(name, '').split('(')[0].split(',')[0]  # SLURM: '4(x2)' or '4,2'
    if digits.isdigit() and int(digits) > 0:
      processes = int(digits)
      break
  if processes > 1 and cores >= (os.cpu_count() or cores):
    cores = max(1, cores // processes)
  return cores, processes


@dataclasses.dataclass(frozen=True)
class LoaderSize:
  """Grain worker processes and read threads per process of this run's loaders."""
  workers: int
  threads: int
  cores: int  # this process's share of the host's cores
  processes: int  # processes on this host
  platform: str
  auto: tuple[str, ...]  # the keys that were -1 (auto)

  def describe(self) -> str:
    """The start-up line's part about the loaders."""
    how = (f' ({" and ".join(self.auto)} auto: {self.cores} core(s) for this process'
           f'{f" of {self.processes} on this host" if self.processes > 1 else ""}, '
           f'{self.platform} backend)') if self.auto else ''
    return (f'input: {self.workers} worker process(es), {self.threads} read thread(s) per '
            f'process{how}')


def loader_size(input_config, platform: str | None = None,
                host: tuple[int, int] | None = None) -> LoaderSize:
  """config.input.workers and .prefetch, where -1 (auto) is chosen from the machine.

  On a CPU backend the jitted step itself runs on every core, and decoding would take cores
  from it: the loader costs a few per cent of the step's CPU time (2 threads in the main
  process fed the full net's step as fast as synthetic batches, within noise, on the 2-core VM:
  docs/input_pipeline.md), so 0 workers and CPU_THREADS threads. On a GPU or TPU the host does
  little besides decoding: one core is left to the main process (the loop, the dispatch, the
  transfers) and every other core of this process's share decodes, as threads in the main
  process up to MAX_THREADS_PER_PROCESS, past that in worker processes of at most that many
  threads each. host: (cores, processes on this host), default host_cores().
  """
  platform = platform or jax.default_backend()
  cores, processes = host or host_cores()
  workers, threads = int(input_config.workers), int(input_config.prefetch)
  auto = tuple(k for k, v in (('input.workers', workers), ('input.prefetch', threads)) if v < 0)
  decoding = max(1, cores - 1)
  if platform == 'cpu':
    workers = 0 if workers < 0 else workers
    threads = CPU_THREADS if threads < 0 else threads
  else:
    if workers < 0:
      per_process = MAX_THREADS_PER_PROCESS if threads < 0 else threads
      workers = 0 if decoding <= per_process else math.ceil(decoding / per_process)
    if threads < 0:
      threads = min(MAX_THREADS_PER_PROCESS, math.ceil(decoding / max(1, workers)))
  return LoaderSize(workers=workers, threads=max(1, threads), cores=cores, processes=processes,
                    platform=platform, auto=auto)


def _read_options(config) -> tuple[grain.ReadOptions, grain.MultiprocessingOptions | None]:
  """Grain's read threads and worker processes for loader_size(config.input)."""
  size = loader_size(config.input)
  multiprocessing = None
  if size.workers:
    _ensure_flags_parsed()
    multiprocessing = grain.MultiprocessingOptions(num_workers=size.workers,
                                                   per_worker_buffer_size=size.threads)
  # The elements read ahead are whole batches: Grain's default (500 ahead, 16 threads) would
  # hold ~10 GB of the demo's batches per process.
  return (grain.ReadOptions(num_threads=size.threads, prefetch_buffer_size=size.threads),
          multiprocessing)


def create_train_loader(config, dataset: Dataset, *, seed: int, on_device: bool | None = None,
                        shard_index: int | None = None,
                        shard_count: int | None = None) -> grain.IterDataset:
  """Endless shuffled training batches of config.train.batch_size // shard_count per process,
  from dataset's training source with its preprocessing. on_device: the run's
  augment_on.on_device(config) (None: resolved here the same way); True: uint8 patches with each
  example's position, for device_preprocessing.

  Use iter(loader): the iterator's get_state() is {'global_next_index': the next position in
  the training order}, and set_state() of any such state (saved with any worker or process
  count) continues there. Each epoch is a new permutation of all records; a global batch may
  straddle two epochs (nothing is dropped).
  """
  on_device = augment_on.on_device(config) if on_device is None else on_device
  shard_options = _shard_options(shard_index, shard_count, drop_remainder=True)
  source = dataset.train_source
  # config_validation.check_batches refused the others at start-up.
  assert config.train.batch_size % shard_options.shard_count == 0, 'a batch per process'
  assert config.train.batch_size <= len(source), 'at least one batch per epoch'
  params = dataset.preprocess
  seed = int(seed) % 2**32  # Grain's seeds are uint32
  read_options, multiprocessing = _read_options(config)
  # The training order: a new permutation of the records every epoch (Grain's shuffle, seeded
  # seed + epoch), endless (the loop counts steps, not epochs). The same on both paths: the
  # permutation is of positions, whatever the dataset holds.
  shuffled = lambda ds: ds.shuffle(seed=seed).repeat()
  if on_device:
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
  DatasetIterator) and the EvalLoader have close().
  """
  closable = iterator if hasattr(iterator, 'close') else getattr(iterator, '_iterator', None)
  if hasattr(closable, 'close'):
    closable.close()


def eval_num_batches(num_records: int, batch_size: int, shard_count: int) -> int:
  """Batches per process in one eval pass: the same on every process."""
  return math.ceil(math.ceil(num_records / shard_count) / batch_size)


class EvalLoader:
  """The eval split's ordered passes: iter(loader) is one pass of num_batches batches.

  Every pass is read from one endless Grain iterator (grain.experimental.RepeatIterDataset,
  which puts its parent back to the start at the end of each pass and keeps the worker
  processes), so the workers start at the first evaluation and serve every later one; a new
  iterator per evaluation started new processes (and imported JAX in each) every time. The
  records are the same every pass (no randomness), so every pass gives the same batches. A
  pass left unfinished is put back to the start before the next. Between evaluations the
  workers hold the next pass's first batches, read ahead (their buffers: a few batches per
  worker), so an evaluation starts without waiting for them.
  """

  def __init__(self, one_pass: grain.IterDataset, num_batches: int):
    self._one_pass, self.num_batches = one_pass, num_batches
    self._iterator = self._start_state = None
    self._position = 0  # batches read of the current pass
    self._finalizer = None

  def __iter__(self):
    if self._iterator is None:
      self._iterator = iter(grain.experimental.RepeatIterDataset(self._one_pass))
      self._start_state = self._iterator.get_state()
      # Workers stopped and shared memory freed when the loader goes, or at exit.
      self._finalizer = weakref.finalize(self, _close, self._iterator)
    elif self._position:
      self._iterator.set_state(self._start_state)
      self._position = 0
    return self._one_pass_batches()

  def _one_pass_batches(self):
    while self._position < self.num_batches:
      batch = next(self._iterator)
      self._position += 1
      yield batch
    self._position = 0

  def close(self) -> None:
    if self._finalizer is not None:
      self._finalizer()
    self._iterator = self._finalizer = None
    self._position = 0


def _close(iterator) -> None:
  if hasattr(iterator, 'close'):
    iterator.close()
  # Batches the workers had read ahead sit in shared memory, some in reference cycles (Grain's
  # read-ahead thread ends a pass on a StopIteration whose traceback holds the last batch):
  # freed now, and their segments unlinked before this returns (Grain unlinks them on a
  # thread of its own, which interpreter exit would cut short: leaked segments and a
  # resource_tracker warning).
  gc.collect()
  deleter = getattr(shared_memory_array.SharedMemoryArray, '_del_thread_pool', None)
  if deleter is not None:
    deleter.apply(int)  # one thread, in order: every unlink queued before it is done


def create_eval_loader(config, dataset: Dataset, *, ten_crop: bool | None = None,
                       on_device: bool | None = None, shard_index: int | None = None,
                       shard_count: int | None = None) -> EvalLoader:
  """Ordered passes over dataset's eval split in global batches of config.eval.batch_size,
  like config.train.batch_size: each of the shard_count processes reads its
  eval.batch_size / shard_count rows of every batch (one process: all of them). iter() of it
  is one pass; its worker processes start once (EvalLoader).

  The split is padded so that every process gets the same number of full batches (shape never
  changes, so the jitted eval step never recompiles); batch['mask'] is True for real examples
  and padding is zeros with label 0. With ten_crop (default config.eval.ten_crop) the images
  are (B, 10, S, S, 3). on_device: as create_train_loader's (True: the uint8 R x R patches,
  device_preprocessing.eval_images crops them).

  Batches are made before the worker processes split the work: each worker reads whole
  batches (worker i: batches i, i + workers, ...) and Grain hands them out in turn, so the
  batches are those of 0 workers, in the same order, whatever the worker count. (Before, a
  grain.DataLoader split the records over the workers and each batched its own, dropping the
  remainder: 2 workers evaluated 200 of the demo's 240 validation images.)
  """
  ten_crop = config.eval.ten_crop if ten_crop is None else ten_crop
  on_device = augment_on.on_device(config) if on_device is None else on_device
  shard_options = _shard_options(shard_index, shard_count, drop_remainder=False)
  source = dataset.eval_source
  count = shard_options.shard_count
  # config_validation.check_batches refused the others at start-up.
  assert config.eval.batch_size % count == 0, 'a global batch splits over the processes'
  batch = config.eval.batch_size // count  # this process's rows of each global batch
  num_batches = eval_num_batches(len(source), batch, count)
  padded = PaddedSource(source, count * batch * num_batches)
  params = dataset.preprocess
  first = shard_options.shard_index * batch * num_batches  # this process's contiguous part
  read_options, multiprocessing = _read_options(config)
  one_pass = (grain.MapDataset.source(padded)[first:first + batch * num_batches]
              .map(DecodeResize(params.resize_size))
              .map(EvalTransform(params, bool(ten_crop), on_device=on_device))
              .batch(batch, drop_remainder=True)
              .to_iter_dataset(read_options=read_options))
  if multiprocessing is not None:
    one_pass = one_pass.mp_prefetch(multiprocessing)
  return EvalLoader(one_pass, num_batches)


class UnreadableImages:
  """Stops a run where too many images cannot be read (config.input.max_unreadable_frac).

  A few unreadable files (deleted since the file index was built, truncated, not images) are
  skipped and counted; a lost mount or a folder moved away makes every read fail, and the run
  would go on training on blank, weightless batches. The training images read since the last
  check (at log steps, once at least MIN_WINDOW of them, summed over processes) and each
  evaluation pass (of at least MIN_WINDOW images, or none readable) are checked: past the
  fraction, RunFailure (one line).
  """
  MIN_WINDOW = 1000  # images; fewer would stop a small run on one bad file

  def __init__(self, max_frac: float):
    self.max_frac = float(max_frac)
    self.read = self.unreadable = 0  # this process's training images since the last check

  def add(self, valid: np.ndarray) -> None:
    """A training batch's 'valid' flags (this process's rows)."""
    self.read += int(np.size(valid))
    self.unreadable += int(np.size(valid) - np.count_nonzero(valid))

  def check(self, step: int) -> None:
    """At the same steps on every process (a collective when there are several)."""
    read, unreadable = self.read, self.unreadable
    if jax.process_count() > 1:
      read, unreadable = np.sum(multihost_utils.process_allgather(
          np.array([read, unreadable], np.int64)).reshape(-1, 2), axis=0).tolist()
    if read < self.MIN_WINDOW:
      return
    self.read = self.unreadable = 0
    self._fail_past(unreadable, read, f'of the last {read} training images (step {step})')

  def check_eval(self, result: dict, step: int) -> None:
    """An evaluation's result (evaluation.evaluate: count, skipped_images; all processes). A
    split smaller than MIN_WINDOW stops the run only when none of it could be read."""
    skipped = int(result.get('skipped_images', 0))
    total = skipped + int(result['count'])
    if total < self.MIN_WINDOW and skipped < total:
      return
    self._fail_past(skipped, total,
                    f'of the {skipped + int(result["count"])} validation images (step {step})')

  def _fail_past(self, unreadable: int, read: int, what: str) -> None:
    if read and unreadable / read > self.max_frac:
      raise RunFailure(
          f'{unreadable} {what} could not be read ({unreadable / read:.1%} > '
          f'config.input.max_unreadable_frac={self.max_frac:g}; the warnings above name them): '
          'is the data folder still there and readable? The checkpoints are kept; fix the data '
          'and run the same command again to resume')
