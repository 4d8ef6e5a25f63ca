"""The loader benchmark's measurements, without flags (loader_benchmark.py and device_check.py
are the commands): the real train loader alone (img/s, the host's CPU ms per image), and the real
step fed by it against the same step fed a synthetic device-resident batch.
"""
import gc
import statistics
import time

import jax
import numpy as np

from alexnet_jax import config_validation
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.benchmarks import measure
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import device_preprocessing
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet


def time_loader(iterator, batches: int, windows: int, batch_size: int) -> list[float]:
  """img/s of `windows` windows of `batches` batches each, nothing else running."""
  rates = []
  for _ in range(windows):
    t0 = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    rates.append(batches * batch_size / (time.perf_counter() - t0))
  return rates


class StepRunner:
  """The training step as train.py builds and calls it: one state, donated at every step, and
  one jitted step per path (the device path's with the augmentation inside it)."""

  def __init__(self, config, dataset: dataset_lib.Dataset, paths=('host',)):
    self.mesh = sharding.create_mesh(config.mesh)
    config_validation.check_batches(config, self.mesh.shape['data'], jax.process_count(),
                                    dataset.num_train)
    run = train.RunLength.from_config(config.train, dataset.num_train)
    with jax.set_mesh(self.mesh):
      tx = optim.create_optimizer(config.optimizer, run.steps_per_epoch, run.total_steps,
                                  config.train.batch_size)
      # Ready before anything is timed: the initialisation runs asynchronously, and while it
      # did it doubled the CPU the loader measurements that follow counted.
      self.state = jax.block_until_ready(train.create_train_state(
          alexnet.from_config(config.model), tx, jax.random.PRNGKey(config.seed),
          config.input.image_size, self.mesh))
      augmentation = device_preprocessing.Augmentation.of(dataset.preprocess, config.seed)
      self.step_fns = {path: train.jit_train_step(
          self.state, self.mesh, augmentation if path == 'device' else None)
                       for path in {'host', *paths}}

  def device_batch(self, host_batch: dict):
    return sharding.global_batch(host_batch, self.mesh)

  def run(self, batches, steps: int, batch, path: str = 'host') -> tuple[float, float, object]:
    """`steps` steps from `batch` on, in the train loop's steady state; returns (seconds until
    the state is ready, seconds spent in next(batches), the batch for the next call).

    As in train.py, the next batch is fetched while the step just dispatched runs (JAX
    dispatches asynchronously), the last one too: no window starts or ends with a load that a
    training run would overlap with a step.
    """
    wait = 0.0
    step_fn = self.step_fns[path]
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      for _ in range(steps):
        self.state, _ = step_fn(self.state, batch)
        t = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t
      jax.block_until_ready(self.state)
    return time.perf_counter() - t0, wait, batch


def _repeat(x):
  while True:
    yield x


def synthetic_batch(config) -> dict:
  """A float batch of the net's input shape: what the net alone costs, with no input at all."""
  b, s = config.train.batch_size, config.input.image_size
  return {'image': np.zeros((b, s, s, 3), np.float32), 'label': np.zeros((b,), np.int32),
          'valid': np.ones((b,), bool)}


def _train_iterator(config, dataset: dataset_lib.Dataset, workers: int, threads: int,
                    augment_on: str):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.input.workers = workers
    config.input.prefetch = threads  # read threads per process (batches in flight)
    config.input.augment_on = augment_on
  return iter(pipeline.create_train_loader(config, dataset, seed=config.seed))


def measure_loader(iterator, *, batch_size: int, batches: int, windows: int) -> dict:
  """img/s of the loader alone, and the host CPU it costs per image (this process and its
  worker processes, over the timed windows; and this process's share)."""
  t0 = time.perf_counter()
  next(iterator)
  startup = time.perf_counter() - t0
  cpu0, main0 = measure.process_tree_cpu_s(), time.process_time()
  rates = time_loader(iterator, batches, windows, batch_size)
  images = batches * windows * batch_size
  cpu_ms = 1000 * (measure.process_tree_cpu_s() - cpu0) / images
  return {'loader_img_per_s': statistics.median(rates), 'loader_windows': rates,
          'host_cpu_ms_per_image': cpu_ms, 'img_per_s_per_core': 1000 / cpu_ms if cpu_ms else
          float('inf'), 'loader_startup_s': startup,
          # of which this process (its read threads; with workers, receiving their batches)
          'main_process_cpu_ms_per_image': 1000 * (time.process_time() - main0) / images}


def measure_end_to_end(runner: StepRunner, iterators: dict, synthetic, *, batch_size: int,
                       steps: int, windows: int, warmup: int) -> dict:
  """Round robin: per round a synthetic window, then one window per (path, workers)."""
  real = {key: (runner.device_batch(b) for b in it) for key, it in iterators.items()}
  pending = {key: runner.run(gen, warmup, next(gen), key[0])[2] for key, gen in real.items()}
  synth_times, real_times, waits = [], {k: [] for k in real}, {k: [] for k in real}
  for _ in range(windows):
    synth_times.append(runner.run(_repeat(synthetic), steps, synthetic)[0])
    for key, gen in real.items():
      seconds, wait, pending[key] = runner.run(gen, steps, pending[key], key[0])
      real_times[key].append(seconds)
      waits[key].append(wait / seconds)
  images = steps * batch_size
  synthetic_rate = images / statistics.median(synth_times)
  return {key: {
      'synthetic_img_per_s': synthetic_rate,
      'end_to_end_img_per_s': images / statistics.median(real_times[key]),
      'fraction': statistics.median(s / r for s, r in zip(synth_times, real_times[key])),
      'data_wait_frac': statistics.median(waits[key]),
      'synthetic_window_s': synth_times, 'end_to_end_window_s': real_times[key],
  } for key in real}


def cores_needed(cpu_ms_per_image: float, img_per_s: float) -> float:
  """Host cores kept busy feeding img_per_s at cpu_ms_per_image of CPU time each."""
  return img_per_s * cpu_ms_per_image / 1000


def table(results: list[dict], feed_rate: float) -> str:
  lines = ['| augment on | workers | threads | loader img/s | host CPU ms / image | '
           f'img/s per core | cores to feed {feed_rate:.0f} img/s | cores to feed this step | '
           'synthetic step img/s | end to end img/s | end to end / synthetic | data wait |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    lines.append(f'| {r["augment_on"]} | {r["workers"]} | {r["threads"]} | '
                 f'{r["loader_img_per_s"]:.0f} | '
                 f'{r["host_cpu_ms_per_image"]:.3f} | {r["img_per_s_per_core"]:.0f} | '
                 f'{r["cores_to_feed"]:.1f} | {r["cores_to_feed_step"]:.2f} | '
                 f'{r["synthetic_img_per_s"]:.2f} | {r["end_to_end_img_per_s"]:.2f} | '
                 f'{100 * r["fraction"]:.1f} % | {100 * r["data_wait_frac"]:.1f} % |')
  return '\n'.join(lines)


def run_benchmark(config, feeds: list[tuple[int, int]], *, augment_on=('host',),
                  loader_batches: int = 8, steps: int = 2, windows: int = 5, warmup: int = 2,
                  feed_rate: float = 20000.0, emit=print) -> list[dict]:
  """Every (path, feed)'s figures (also emitted); each path's step compiles once. A feed is
  (Grain worker processes, read threads in each process): config.input.workers and .prefetch;
  with 0 workers the threads decode in this process (simplejpeg lets go of the GIL)."""
  for path in augment_on:
    if path not in ('host', 'device'):
      raise UserError(f'--augment_on takes host and/or device, got {path!r}')
  dataset = dataset_lib.build(config)
  runner = StepRunner(config, dataset, tuple(augment_on))
  batch_size = config.train.batch_size
  iterators, loaders = {}, {}
  try:
    for path in augment_on:
      for w, threads in feeds:
        key = (path, w, threads)
        # Measured alone: an idle Grain iterator still costs CPU (its threads and worker
        # processes poll), which the next loader's CPU per image would count (measured after
        # the host path's loaders, the device path read high: docs/input_pipeline.md).
        loader = _train_iterator(config, dataset, w, threads, path)
        try:
          loaders[key] = measure_loader(loader, batch_size=batch_size,
                                        batches=loader_batches, windows=windows)
        finally:
          pipeline.close_iterator(loader)
        emit({'kind': 'loader', 'augment_on': path, 'workers': w, 'threads': threads,
              **loaders[key]})
    for key in loaders:  # end to end, side by side in rounds
      iterators[key] = _train_iterator(config, dataset, key[1], key[2], key[0])
    t0 = time.perf_counter()
    synthetic = runner.device_batch(synthetic_batch(config))
    runner.run(_repeat(synthetic), 1, synthetic)  # compilation
    emit({'kind': 'setup', 'dataset': config.dataset.name, 'folder': config.dataset.folder,
          'batch_size': batch_size, 'image_size': config.input.image_size,
          'resize_size': config.input.resize_size, 'dtype': config.model.dtype,
          'width': config.model.width, 'compile_s': time.perf_counter() - t0,
          'devices': f'{jax.device_count()} {jax.devices()[0].platform}',
          'feed_rate': feed_rate})
    ends = measure_end_to_end(runner, iterators, synthetic, batch_size=batch_size, steps=steps,
                              windows=windows, warmup=warmup)
  finally:
    # Device arrays made from Grain's shared-memory batches sit in reference cycles; collect
    # them first, or the segments are never unlinked (a warning at exit).
    gc.collect()
    for it in iterators.values():
      pipeline.close_iterator(it)
  results = []
  for (path, w, threads), end in ends.items():
    feed = {'augment_on': path, 'workers': w, 'threads': threads}
    emit({'kind': 'end_to_end', **feed, **end})
    cpu_ms = loaders[(path, w, threads)]['host_cpu_ms_per_image']
    results.append({**feed, **loaders[(path, w, threads)], **end,
                    'cores_to_feed': cores_needed(cpu_ms, feed_rate),
                    'cores_to_feed_step': cores_needed(cpu_ms, end['synthetic_img_per_s'])})
  return results
