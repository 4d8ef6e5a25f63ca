"""alexnet_jax/metric_logging.py: the TensorBoard event files it writes read back in
TensorBoard's own reader (the dashboard's data path) with every scalar at its step, and writing
them imports no TensorFlow (nor clu, whose writer did: ~3 s at every start of a run)."""
import subprocess
import sys

from tests import helpers


def test_tensorboard_reads_the_scalars_and_no_tensorflow_is_imported(tmp_path):
  code = f"""
import sys
from alexnet_jax import metric_logging
writer = metric_logging.create_writer({str(tmp_path)!r}, is_main_process=True)
writer.write_scalars(1, {{'train/loss': 2.5, 'train/top1': 0.125}})
writer.write_scalars(7, {{'train/loss': 1.25, 'eval/top1': 0.5}})
writer.close()
bad = [m for m in ('tensorflow', 'clu') if m in sys.modules]
assert not bad, bad
"""
  proc = subprocess.run([sys.executable, '-c', code], cwd=helpers.ROOT, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]
  assert scalars('train/loss') == [(1, 2.5), (7, 1.25)]
  assert scalars('train/top1') == [(1, 0.125)]
  assert scalars('eval/top1') == [(7, 0.5)]
  # metrics.jsonl holds the same.
  records = metric_logging_records(tmp_path)
  assert [(r['step'], r['train/loss']) for r in records] == [(1, 2.5), (7, 1.25)]


def metric_logging_records(workdir):
  from alexnet_jax import metric_logging  # pylint: disable=g-import-not-at-top
  return metric_logging.read_jsonl(str(workdir / 'metrics.jsonl'))
