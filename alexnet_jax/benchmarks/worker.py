"""Both ends of the pipe between the isolated benchmark (isolated.py) and one worker process.

A worker is a fresh Python interpreter (`python -m alexnet_jax.benchmarks.jax_worker` or
`torch_worker`, started with subprocess, never forked from a process that has JAX or torch
loaded) that holds one implementation's training step and runs it only when asked: it reads one
JSON request per line on stdin and answers one JSON line on its own copy of the stdout pipe
(stray prints of the libraries go to stderr, which is a log file). Between requests it blocks
in a read, so it runs nothing while another worker is timed.

Requests: {'op': 'setup', 'spec': {...}} builds and compiles the step and runs the warm-up;
{'op': 'window', 'steps': n} times n steps; {'op': 'peak', ...} measures the matmul peak (JAX
workers); {'op': 'finish'} returns what the step's record needs. An error is answered as
{'error': message, 'user_error': bool} and the worker exits; the parent's Worker turns it into
one line (UserError or RunFailure), and a worker that dies or stays silent past the timeout
into RunFailure, never a hang.

This module imports neither JAX nor torch: each worker module imports its own framework.
"""
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError


def frameworks_loaded() -> list[str]:
  """Which of the two frameworks this process has imported (a worker reports it)."""
  return sorted(m for m in ('jax', 'torch') if m in sys.modules)


def os_threads() -> int:
  """Threads of this process now (Linux /proc; 0 elsewhere): thread pools included."""
  try:
    with open('/proc/self/status') as f:
      return int(next(line.split()[1] for line in f if line.startswith('Threads:')))
  except (OSError, StopIteration):
    return 0


def host_rss_mb() -> tuple[float, float]:
  """(current, peak) resident memory of this process in MB."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
  current = float('nan')
  try:
    with open('/proc/self/status') as f:
      match = re.search(r'VmRSS:\s*(\d+) kB', f.read())
    current = int(match.group(1)) / 1024 if match else current
  except OSError:
    pass
  return current, peak


# The kernel's machine-wide memory counters (/proc/vmstat) read around a window: huge pages
# given at a fault (each one 2 MiB zeroed), huge pages split back into small ones, and
# allocations that stalled to compact memory. Machine-wide, but while a window runs the other
# workers are blocked, so on an otherwise idle machine they are the timed step's.
VMSTAT_COUNTERS = ('thp_fault_alloc', 'thp_split_pmd', 'compact_stall')


def vmstat() -> dict[str, int]:
  """VMSTAT_COUNTERS now (an empty dict where there is no /proc/vmstat)."""
  try:
    with open('/proc/vmstat') as f:
      fields = dict(line.split() for line in f)
  except (OSError, ValueError):
    return {}
  return {k: int(fields[k]) for k in VMSTAT_COUNTERS if k in fields}


def measured(run: Callable[[], float]) -> dict[str, float]:
  """run() -> seconds per step, with what this process cost the kernel meanwhile: minor page
  faults and system CPU seconds (where XLA's fresh buffers show up), user CPU seconds, and
  the vmstat counters' increase."""
  before, counters = resource.getrusage(resource.RUSAGE_SELF), vmstat()
  step_s = run()
  after, counters_after = resource.getrusage(resource.RUSAGE_SELF), vmstat()
  return {'step_s': step_s, 'minor_faults': after.ru_minflt - before.ru_minflt,
          'sys_s': after.ru_stime - before.ru_stime,
          'user_s': after.ru_utime - before.ru_utime,
          **{k: counters_after[k] - counters[k] for k in counters if k in counters_after}}


class Handlers:
  """A worker's requests, one method per op ('setup', 'window', ...); serve() calls the
  instance with each request. Subclasses set self.timer in setup."""

  def __init__(self):
    self.timer = None

  def __call__(self, request: dict) -> dict:
    return getattr(self, request['op'])(request)


def serve(handlers: Callable[[dict], dict]) -> None:
  """The worker's loop: handlers(request) -> reply, for each line on stdin until it closes.

  stdout is kept for the replies alone: file descriptor 1 is pointed at stderr before anything
  else runs, so a library's print cannot corrupt the protocol.
  """
  replies = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)
  for line in sys.stdin:
    try:
      reply = handlers(json.loads(line))
    except UserError as e:
      replies.write(json.dumps({'error': str(e), 'user_error': True}) + '\n')
      sys.exit(2)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      replies.write(json.dumps({'error': f'{type(e).__name__}: {e}', 'user_error': False})
                    + '\n')
      sys.exit(1)
    replies.write(json.dumps(reply) + '\n')


class Worker:
  """The parent's handle on one worker process: request(op) -> its reply, or one line of
  error. argv is the command that starts it; its stderr goes to a log file, kept (and named in
  the error) when it fails."""

  def __init__(self, name: str, argv: list[str], *, timeout_s: float, env=None):
    self.name, self.timeout_s = name, timeout_s
    self.log = tempfile.NamedTemporaryFile('w+', prefix=f'benchmark-{name}-', suffix='.log',
                                           delete=False)
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, env=env, bufsize=1)
    self.pid = self.proc.pid
    self._failed = False

  def request(self, op: str, timeout_s: float | None = None, **fields) -> dict[str, Any]:
    try:
      self.proc.stdin.write(json.dumps({'op': op, **fields}) + '\n')
      self.proc.stdin.flush()
    except (BrokenPipeError, OSError):
      self._fail(f'exited ({self.proc.poll()}) before {op!r}')
    timeout = self.timeout_s if timeout_s is None else timeout_s
    ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
    if not ready:
      self._fail(f'no answer to {op!r} within {timeout:.0f} s', stuck=True)
    line = self.proc.stdout.readline()
    if not line:
      self._fail(f'exited ({self.proc.wait(timeout=10)}) during {op!r}')
    reply = json.loads(line)
    if 'error' in reply:
      self._fail(reply['error'], user_error=reply['user_error'])
    return reply

  def _fail(self, why: str, user_error: bool = False, stuck: bool = False):
    self._failed = True
    self.close(kill=stuck)
    if user_error:
      raise UserError(why)
    last = _last_line(self.log.name)
    raise RunFailure(f'the {self.name} worker (pid {self.pid}) failed: {why}'
                     + (f' ({last})' if last and last not in why else '')
                     + f'; its log: {self.log.name}')

  def close(self, kill: bool = False) -> None:
    """Ends the worker: stdin closed (it exits), then SIGKILL if it has not within 10 s; a
    stuck one (kill) at once."""
    if self.proc.poll() is None:
      try:
        self.proc.stdin.close()
      except OSError:
        pass
      try:
        self.proc.wait(timeout=0 if kill else 10)
      except subprocess.TimeoutExpired:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
    self.proc.stdout.close()
    self.log.close()
    if not self._failed:
      os.unlink(self.log.name)


def _last_line(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ''
  return lines[-1][:300] if lines else ''


def cpu_ns(pid: int) -> int | None:
  """CPU nanoseconds all of a process's threads have run (Linux schedstat), or None."""
  try:
    tids = os.listdir(f'/proc/{pid}/task')
  except OSError:
    return None
  total = 0
  for tid in tids:
    try:
      with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
        total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):  # a thread that just ended
      continue
  return total


def settle(pid: int, pause_s: float, poll_s: float = 0.002) -> dict[str, float]:
  """Waits pause_s after a worker answered, watching its threads' CPU time.

  A thread pool does not sleep the moment its work ends: OpenMP's threads (PyTorch's) spin
  for a while waiting for more, and so may XLA's. The pause keeps that tail out of the next
  worker's window; what it returns shows whether it was long enough: the CPU ms the worker's
  threads burned after answering, and the last moment (ms into the pause) they were seen
  running. NaN where /proc has no schedstat.
  """
  start = time.perf_counter()
  first = last = cpu_ns(pid)
  busy_until = 0.0
  while True:
    elapsed = time.perf_counter() - start
    if elapsed >= pause_s:
      break
    time.sleep(min(poll_s, pause_s - elapsed))
    now = cpu_ns(pid)
    if now is not None and last is not None and now != last:
      busy_until, last = time.perf_counter() - start, now
  if first is None or last is None:
    return {'after_cpu_ms': float('nan'), 'busy_until_ms': float('nan')}
  return {'after_cpu_ms': (last - first) / 1e6, 'busy_until_ms': 1e3 * busy_until}
