"""Metrics to a JSONL file in the workdir and TensorBoard event files beside it.

The event files are written with TensorBoard's own record writer and protos, which need no
TensorFlow: clu's SummaryWriter imports TensorFlow, seconds at every start of a run
(docs/performance.md), and the GPU/TPU machines may not have it. Without the tensorboard
package the run writes metrics.jsonl only.

Every file written here fails the same way: a write that raises OSError (a full disk, a file
too large, an I/O error) is one RunFailure naming the file, never a traceback. The run's small
files (config.json, summary.json: write_file) and the rewrites at a resume are written whole or
not at all (a temporary file renamed over the old one). A checkpoint is never written here, so
the last one stays as it was.
"""
import contextlib
import glob
import io
import json
import os
import socket
import time
from typing import Any, Mapping

from alexnet_jax.errors import RunFailure


def _write_failed(path: str, error: OSError) -> RunFailure:
  return RunFailure(
      f'could not write {path} ({error.strerror or error}); the checkpoints written so far are '
      'intact. Free disk space (or fix the path) and run the same command again to resume from '
      'the last one')


def write_file(path: str, content: str | bytes) -> None:
  """path holds content, whole, or (a RunFailure: a full disk...) is as it was before."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(content.encode() if isinstance(content, str) else content)
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise _write_failed(path, e) from None


class _OpenFile:
  """A writer's one file, open for the whole run and flushed at every write."""
  _file: Any
  _path: str

  def _open(self, path: str, mode: str, **kwargs) -> None:
    self._path = path
    try:
      self._file = open(path, mode, **kwargs)
    except OSError as e:
      raise _write_failed(path, e) from None

  def _written(self, write) -> None:
    """write() then flush; where either fails, the file is closed with what it could not write
    dropped (else closing it again at exit prints a second error) and a RunFailure raised."""
    try:
      write()
      self._file.flush()
    except OSError as e:
      with contextlib.suppress(OSError):
        self._file.close()  # the flush inside fails again; the file is closed all the same
      raise _write_failed(self._path, e) from None

  def flush(self) -> None:
    self._written(lambda: None)

  def close(self) -> None:
    if not self._file.closed:
      self._written(lambda: None)
      self._file.close()


class JsonlWriter(_OpenFile):
  """Appends one JSON object per write_scalars call: {"step": ..., "time": ..., **scalars}."""

  def __init__(self, path: str):
    self._open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    self._written(lambda: self._file.write(json.dumps(record) + '\n'))


class TensorBoardWriter(_OpenFile):
  """Scalars as TensorBoard events (simple_value), one event per step, in an event file of
  TensorBoard's naming written with its RecordWriter: TensorBoard's dashboard and readers take
  them as they take tf.summary's. (TensorBoard's EventFileWriter would import TensorFlow where
  it is installed, for its file system layer.)"""

  def __init__(self, logdir: str):
    # pylint: disable=g-import-not-at-top  # optional: only where tensorboard is installed
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer import record_writer
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    try:
      os.makedirs(logdir, exist_ok=True)
    except OSError as e:
      raise _write_failed(logdir, e) from None
    name = (f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.'
            f'{os.getpid()}.0')
    self._open(os.path.join(logdir, name), 'ab')
    self._records = record_writer.RecordWriter(self._file)
    self._write(self._event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    # On disk now (flushed), as metrics.jsonl's line is: a run killed after its next checkpoint
    # must not lose the steps logged before it (the resume trims the event files to it).
    self._written(lambda: self._records.write(event.SerializeToString()))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=int(step),
                            summary=self._summary(value=values)))


class MultiWriter:
  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def create_writer(workdir: str, is_main_process: bool) -> MultiWriter:
  if not is_main_process:
    return MultiWriter([])
  writers = [JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))]
  try:
    writers.append(TensorBoardWriter(os.path.join(workdir, 'tensorboard')))
  except ImportError:  # no tensorboard package: metrics.jsonl only
    pass
  return MultiWriter(writers)


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics.jsonl; a line cut short by a kill (the last one) is left out."""
  with open(path, encoding='utf-8') as f:
    return _parse_lines(f.readlines())


def _parse_lines(lines: list[str]) -> list[dict]:
  records = []
  for line in lines:
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def drop_after(workdir: str, step: int) -> int:
  """Removes from metrics.jsonl and the TensorBoard event files everything logged after `step`.

  A run resumes from its last checkpoint and logs the steps after it again; what the killed run
  had logged past that checkpoint would otherwise appear twice (TensorBoard only hides such
  "orphaned" points at a restart marker, which this writer does not write). Returns the
  number of records dropped. Files are rewritten whole and renamed over the old ones.
  """
  dropped = 0
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      lines = f.readlines()
    records = _parse_lines(lines)
    kept = [r for r in records if r.get('step', 0) <= step]
    if len(kept) < len(lines):  # records past `step`, or a line cut short by a kill
      dropped += len(records) - len(kept)
      write_file(path, ''.join(json.dumps(r) + '\n' for r in kept))
  for events in sorted(glob.glob(os.path.join(workdir, 'tensorboard', '**', '*tfevents*'),
                              recursive=True)):
    dropped += _drop_events_after(events, step)
  return dropped




def read_event_records(path: str) -> list[bytes]:
  """An event file's records (serialized Event protos), up to one cut short by a kill, read with
  TensorBoard's own TF-free record reader (its event loaders import TensorFlow where it is
  installed)."""
  # pylint: disable-next=g-import-not-at-top  # optional: only where there are event files
  from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
  reader = pywrap_tensorflow.PyRecordReader_New(path)
  records = []
  while True:
    try:
      reader.GetNext()
    except (errors.OutOfRangeError, errors.DataLossError):  # the end, or a record cut short
      return records
    records.append(reader.record())


def _drop_events_after(path: str, step: int) -> int:
  """Keeps an event file's records up to `step`, and none cut short by a kill (TensorBoard's own
  reader and writer, no TF)."""
  # pylint: disable=g-import-not-at-top  # tensorboard (optional) only where there are event files
  try:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer import record_writer
  except ImportError:  # event files copied to a machine without TensorBoard: left as they are
    return 0
  raw = read_event_records(path)
  kept = [r for r in raw if event_pb2.Event.FromString(r).step <= step]
  whole = sum(len(r) + 16 for r in raw) == os.path.getsize(path)  # 16: a record's framing
  if len(kept) == len(raw) and whole:
    return 0
  framed = io.BytesIO()
  writer = record_writer.RecordWriter(framed)
  for record in kept:
    writer.write(record)
  write_file(path, framed.getvalue())
  return len(raw) - len(kept)
