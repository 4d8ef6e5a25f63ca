r"""Does the input pipeline keep up with the training step?

  python -m alexnet_jax.tools.loader_benchmark --config=configs/alexnet.py:demo
  python -m alexnet_jax.tools.loader_benchmark --config=configs/alexnet.py:demo \
      --config.dataset.name=prepared --config.dataset.folder=DIR  # a prepare_data --out_dir copy

For each --workers count (Grain worker processes; 0 = the main process) it times
  1. decode + augment alone: batches from the real train loader (pipeline.
     create_train_loader), in img/s and img/s per core (one core per worker process, or the
     main process for 0);
  2. end to end: the real jitted train step (train.jit_train_step, as the training loop runs
     it) fed from that loader, against the same step fed one synthetic device-resident
     batch. Windows go round robin (synthetic, then each worker count), so that load from
     other processes on a shared machine hits every variant alike; the fraction is the median
     over rounds of synthetic time / end-to-end time within a round.
Rates are medians over --windows windows, after --warmup steps. It prints one JSON line per
measurement, then a table and the worker count with the best end-to-end rate.
"""
import functools
import gc
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.model import alexnet
from alexnet_jax.tools import cli
from alexnet_jax.tools import measure

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/alexnet.py:demo.', lock_config=True)
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'], 'Grain worker counts to compare.')
_LOADER_BATCHES = flags.DEFINE_integer('loader_batches', 8, 'Batches per loader-only window.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Train steps per end-to-end window.')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows (rounds) per figure; the median '
                                'is kept.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed real-data steps per worker count.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')
flags.mark_flags_as_required(['config'])


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
  """The training step as train.py builds and calls it: one state, donated at every step."""

  def __init__(self, config, dataset: dataset_lib.Dataset):
    run = train.RunLength.from_config(config.train, dataset.num_train)
    self.mesh = sharding.create_mesh(config.mesh)
    sharding.check_batch(config.train.batch_size, self.mesh)
    with jax.set_mesh(self.mesh):
      tx = optim.create_optimizer(config.optimizer, run.steps_per_epoch, run.total_steps,
                                  config.train.batch_size)
      self.state = train.create_train_state(
          alexnet.from_config(config.model), tx, jax.random.PRNGKey(config.seed),
          config.input.image_size, self.mesh)
      self.step_fn = train.jit_train_step(self.state, self.mesh)

  def device_batch(self, host_batch: dict):
    return sharding.global_batch(host_batch, self.mesh)

  def run(self, batches, steps: int, batch) -> tuple[float, float, object]:
    """`steps` steps from `batch` on, in the train loop's steady state; returns (seconds until
    the state is ready, seconds spent in next(batches), the batch for the next call).

    As in train.py, the next batch is fetched while the step just dispatched runs (JAX
    dispatches asynchronously), the last one too: no window starts or ends with a load that a
    training run would overlap with a step.
    """
    wait = 0.0
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      for _ in range(steps):
        self.state, _ = self.step_fn(self.state, batch)
        t = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t
      jax.block_until_ready(self.state)
    return time.perf_counter() - t0, wait, batch


def _repeat(x):
  while True:
    yield x


def _host_copy(batch: dict) -> dict:
  """A batch in ordinary memory: with workers, Grain's batches live in shared memory that is
  freed when the iterator closes."""
  return {k: np.array(v, copy=True) for k, v in batch.items()}


def _train_iterator(config, dataset: dataset_lib.Dataset, workers: int):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.input.workers = workers
  return iter(pipeline.create_train_loader(config, dataset, seed=config.seed))


def measure_loader(iterator, workers: int, *, batch_size: int, batches: int,
                   windows: int) -> dict:
  t0 = time.perf_counter()
  next(iterator)
  startup = time.perf_counter() - t0
  rates = time_loader(iterator, batches, windows, batch_size)
  rate = statistics.median(rates)
  return {'workers': workers, 'loader_img_per_s': rate,
          'loader_img_per_s_per_core': rate / max(workers, 1), 'loader_windows': rates,
          'loader_startup_s': startup}


def measure_end_to_end(runner: StepRunner, iterators: dict, synthetic, *, batch_size: int,
                       steps: int, windows: int, warmup: int) -> list[dict]:
  """Round robin: per round a synthetic window, then one window per worker count."""
  real = {w: (runner.device_batch(b) for b in it) for w, it in iterators.items()}
  pending = {w: runner.run(gen, warmup, next(gen))[2] for w, gen in real.items()}
  synth_times, real_times, waits = [], {w: [] for w in real}, {w: [] for w in real}
  for _ in range(windows):
    synth_times.append(runner.run(_repeat(synthetic), steps, synthetic)[0])
    for w, gen in real.items():
      seconds, wait, pending[w] = runner.run(gen, steps, pending[w])
      real_times[w].append(seconds)
      waits[w].append(wait / seconds)
  images = steps * batch_size
  synthetic_rate = images / statistics.median(synth_times)
  return [{
      'workers': w, 'synthetic_img_per_s': synthetic_rate,
      'end_to_end_img_per_s': images / statistics.median(real_times[w]),
      'fraction': statistics.median(s / r for s, r in zip(synth_times, real_times[w])),
      'data_wait_frac': statistics.median(waits[w]),
      'synthetic_window_s': synth_times, 'end_to_end_window_s': real_times[w],
  } for w in real]


def _table(results: list[dict]) -> str:
  lines = ['| workers | loader img/s | per core | synthetic step img/s | end to end img/s | '
           'end to end / synthetic | data wait |', '|---|---|---|---|---|---|---|']
  for r in results:
    lines.append(f'| {r["workers"]} | {r["loader_img_per_s"]:.0f} | '
                 f'{r["loader_img_per_s_per_core"]:.0f} | {r["synthetic_img_per_s"]:.2f} | '
                 f'{r["end_to_end_img_per_s"]:.2f} | {100 * r["fraction"]:.1f} % | '
                 f'{100 * r["data_wait_frac"]:.1f} % |')
  return '\n'.join(lines)


def run_benchmark(config, workers: list[int], *, loader_batches: int = 8, steps: int = 2,
                  windows: int = 5, warmup: int = 2, emit=print) -> list[dict]:
  """Every worker count's figures (also emitted); the step compiles once."""
  dataset = dataset_lib.build(config)
  runner = StepRunner(config, dataset)
  batch_size = config.train.batch_size
  iterators, loaders = {}, {}
  try:
    for w in workers:
      iterators[w] = _train_iterator(config, dataset, w)
      loaders[w] = measure_loader(iterators[w], w, batch_size=batch_size,
                                  batches=loader_batches, windows=windows)
      emit({'kind': 'loader', **loaders[w]})
    t0 = time.perf_counter()
    synthetic = runner.device_batch(_host_copy(next(iterators[workers[0]])))
    runner.run(_repeat(synthetic), 1, synthetic)  # compilation
    emit({'kind': 'setup', 'dataset': config.dataset.name, 'folder': config.dataset.folder,
          'batch_size': batch_size, 'image_size': config.input.image_size,
          'dtype': config.model.dtype, 'width': config.model.width,
          'compile_s': time.perf_counter() - t0,
          'devices': f'{jax.device_count()} {jax.devices()[0].platform}'})
    ends = measure_end_to_end(runner, iterators, synthetic, batch_size=batch_size, steps=steps,
                              windows=windows, warmup=warmup)
  finally:
    # Device arrays made from Grain's shared-memory batches sit in reference cycles; collect
    # them first, or the segments are never unlinked (a warning at exit).
    gc.collect()
    for it in iterators.values():
      pipeline.close_iterator(it)
  results = []
  for end in ends:
    emit({'kind': 'end_to_end', **end})
    results.append({**loaders[end['workers']], **end})
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  emit = functools.partial(measure.emit_json_line, json_out=_JSON_OUT.value)
  workers = [int(w) for w in _WORKERS.value]
  results = run_benchmark(_CONFIG.value, workers, loader_batches=_LOADER_BATCHES.value,
                          steps=_STEPS.value, windows=_WINDOWS.value, warmup=_WARMUP.value,
                          emit=emit)
  print(_table(results))
  best = max(results, key=lambda r: r['end_to_end_img_per_s'])
  print(f'best end to end: workers={best["workers"]} ({best["end_to_end_img_per_s"]:.2f} img/s, '
        f'{100 * best["fraction"]:.1f} % of the synthetic-batch step)')


if __name__ == '__main__':
  cli.run(main)
