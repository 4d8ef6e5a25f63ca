"""Metrics to a JSONL file in the workdir and, where TensorFlow is installed, TensorBoard.

clu's metric writers import TensorFlow for the summary writer; the GPU/TPU machines may not have
it, so TensorBoard files are written only when it imports, and the JSONL file always.
"""
import json
import os
import time
from typing import Any, Mapping

from alexnet_jax import quiet_import


class JsonlWriter:
  """Appends one JSON object per write_scalars call: {"step": ..., "time": ..., **scalars}."""

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(v) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MultiWriter:
  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_hparams(self, hparams):
    for w in self.writers:
      w.write_hparams(hparams)

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
    with quiet_import.native_stderr_silenced():
      from clu.metric_writers import SummaryWriter  # pylint: disable=g-import-not-at-top
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.set_visible_devices([], 'GPU')  # TF must not take the accelerator from JAX.
    writers.append(SummaryWriter(os.path.join(workdir, 'tensorboard')))
  except ImportError:
    pass
  return MultiWriter(writers)


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
