"""alexnet_jax/metric_logging.py: the TensorBoard event files it writes read back in
TensorBoard's own reader (the dashboard's data path) with every scalar at its step, writing
them imports no TensorFlow (nor clu, whose writer did: ~3 s at every start of a run), and a
resume trims them to its checkpoint."""
import subprocess
import sys

from alexnet_jax import metric_logging
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
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]
  assert scalars('train/loss') == [(1, 2.5), (7, 1.25)]
  assert scalars('train/top1') == [(1, 0.125)]
  assert scalars('eval/top1') == [(7, 0.5)]
  # metrics.jsonl holds the same.
  records = metric_logging.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [(r['step'], r['train/loss']) for r in records] == [(1, 2.5), (7, 1.25)]


def test_a_resume_trims_the_event_files_to_the_checkpoint_and_a_record_cut_short(tmp_path):
  """drop_after(step): the events logged after the checkpoint a run resumes from, and a record a
  kill cut short, are gone; TensorBoard's reader then sees each step once, in order."""
  writer = metric_logging.TensorBoardWriter(str(tmp_path / 'tensorboard'))
  for step in range(1, 6):
    writer.write_scalars(step, {'train/loss': step / 2})
  writer.close()
  (path,) = (tmp_path / 'tensorboard').iterdir()
  path.write_bytes(path.read_bytes()[:-5])  # the last record (step 5) cut short
  assert metric_logging.drop_after(str(tmp_path), 3) == 1  # step 4 (step 5 was never whole)
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars('train/loss')] == [(1, 0.5), (2, 1.0),
                                                                       (3, 1.5)]
  assert metric_logging.drop_after(str(tmp_path), 3) == 0  # nothing more to trim
