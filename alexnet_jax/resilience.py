"""What keeps a long run alive and its workdir intact: a workdir lock, stop signals handled
between steps, and the policy for non-finite steps.

Days-long ImageNet runs get preempted (SIGTERM), interrupted (Ctrl-C), started twice by
mistake, and occasionally diverge. Each case ends in a clear message and a restorable workdir.
"""
import fcntl
import os
import signal
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError

ON_NONFINITE = ('stop', 'skip')


class NonFiniteError(RunFailure, FloatingPointError):
  """A step with a non-finite loss or gradient, with on_nonfinite='stop'."""


class WorkdirLock:
  """An exclusive flock on <workdir>/.lock for the life of the run.

  A second run on the same workdir (which would interleave checkpoints and metrics) is
  refused. The kernel drops the lock when the holder exits, kill -9 included, so a crashed
  run never leaves a stale lock behind.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self.file = None

  def __enter__(self) -> 'WorkdirLock':
    self.file = open(self.path, 'a+')
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self.file.seek(0)
      holder = self.file.read().strip() or 'another process'
      self.file.close()
      self.file = None
      raise UserError(f'workdir {os.path.dirname(self.path)!r} is in use by a running '
                      f'training ({holder}); wait for it to finish or use another '
                      '--workdir') from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f'pid {os.getpid()} on {os.uname().nodename}, started '
                    f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n')
    self.file.flush()
    return self

  def __exit__(self, *exc) -> None:
    if self.file is not None:
      fcntl.flock(self.file, fcntl.LOCK_UN)
      self.file.close()
      self.file = None


class StopSignals:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) ask the loop to stop after the current step.

  The loop then saves a checkpoint and returns; a second Ctrl-C restores the default and
  interrupts at once. Handlers are installed only in the main thread and restored on exit.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._signalled: int | None = None
    self._multiprocess = False
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    self._signalled = signum
    if not self._multiprocess:
      self.received = signum
    signal.signal(signum, signal.SIG_DFL)  # a second one is not caught
    print(f'\nreceived {signal.Signals(signum).name}: stopping after the current step and '
          'saving a checkpoint (send it again to abort without saving)', flush=True)

  @property
  def name(self) -> str:
    return signal.Signals(self.received).name if self.received else ''

  def agree(self) -> None:
    """With several processes, stop only where all see it: called at the same steps on every
    process (a collective), it makes `received` the first signal any process got."""
    signals = multihost_utils.process_allgather(np.int32(self._signalled or 0))
    received = [int(s) for s in np.ravel(signals) if s]
    if received:
      self.received = received[0]

  def __enter__(self) -> 'StopSignals':
    self._multiprocess = jax.process_count() > 1
    try:
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      pass
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


def check_on_nonfinite(value: str) -> str:
  if value not in ON_NONFINITE:
    raise UserError(f'config.train.on_nonfinite={value!r}; choose one of '
                    f'{", ".join(ON_NONFINITE)}')
  return value
