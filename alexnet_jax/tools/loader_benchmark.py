r"""Does the input pipeline keep up with the training step?

  python -m alexnet_jax.tools.loader_benchmark --config=configs/alexnet.py:demo
  python -m alexnet_jax.tools.loader_benchmark --config=configs/alexnet.py:demo \
      --config.dataset.name=prepared --config.dataset.folder=DIR  # a prepare_data --out_dir copy

For each --augment_on path (host: the workers decode and augment; device: they only decode,
and the augmentation runs in the jitted step), each --workers count (Grain worker processes;
0 = the main process) and each --threads count (read threads in each process,
config.input.prefetch: with 0 workers, threads decoding side by side in this process) it
measures
  1. the loader alone: batches from the real train loader (pipeline.create_train_loader), in
     img/s, and what they cost the host: CPU ms per image (user + system time of this process's
     threads and of the worker processes, over the timed windows), img/s per core (1000 / that),
     and the cores needed to feed --feed_rate img/s and to feed the measured step;
  2. end to end: the real jitted train step (train.jit_train_step, as the training loop runs
     it, with the device augmentation inside it on that path) fed from that loader, against
     the plain step fed one synthetic device-resident float batch (the net alone). Windows go
     round robin (synthetic, then each path, worker and thread count), so that load from other
     processes on a shared machine hits every variant alike; the fraction is the median over
     rounds of synthetic time / end-to-end time within a round.
Rates are medians over --windows windows, after --warmup steps. It prints one JSON line per
measurement, then a table and the path, workers and threads with the best end-to-end rate.
"""
import functools

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax.benchmarks import loader_timing
from alexnet_jax.benchmarks import measure
from alexnet_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/alexnet.py:demo.', lock_config=True)
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'], 'Grain worker counts to compare.')
_THREADS = flags.DEFINE_list('threads', [], 'Read threads per process to compare (each with '
                             "every --workers count); default: the config's input.prefetch.")
_AUGMENT_ON = flags.DEFINE_list('augment_on', ['host', 'device'],
                                'Where the augmentation runs: host, device or both.')
_FEED_RATE = flags.DEFINE_float('feed_rate', 20000.0, 'img/s a device eats (one H100 runs '
                                "AlexNet's step at about 20-24k img/s): the table gives the "
                                'host cores needed to feed it.')
_LOADER_BATCHES = flags.DEFINE_integer('loader_batches', 8, 'Batches per loader-only window.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Train steps per end-to-end window.')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows (rounds) per figure; the median '
                                'is kept.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed real-data steps per worker count.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also append the JSON lines to this file.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  emit = functools.partial(measure.emit_json_line, json_out=_JSON_OUT.value)
  threads = [int(t) for t in _THREADS.value] or [_CONFIG.value.input.prefetch]
  feeds = [(int(w), t) for w in _WORKERS.value for t in threads]
  results = loader_timing.run_benchmark(_CONFIG.value, feeds, augment_on=_AUGMENT_ON.value,
                                        loader_batches=_LOADER_BATCHES.value,
                                        steps=_STEPS.value, windows=_WINDOWS.value,
                                        warmup=_WARMUP.value, feed_rate=_FEED_RATE.value,
                                        emit=emit)
  print(loader_timing.table(results, _FEED_RATE.value))
  best = max(results, key=lambda r: r['end_to_end_img_per_s'])
  print(f'best end to end: augment_on={best["augment_on"]} workers={best["workers"]} '
        f'threads={best["threads"]} '
        f'({best["end_to_end_img_per_s"]:.2f} img/s, {100 * best["fraction"]:.1f} % of the '
        'synthetic-batch step)')


if __name__ == '__main__':
  cli.run(main)
