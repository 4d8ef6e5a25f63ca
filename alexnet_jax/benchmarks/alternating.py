"""Timers in their own processes, their windows alternating: a fair comparison of frameworks.

Two frameworks in one process share its allocator and its thread pools: a step of one can slow
the other's (docs/performance.md, "How speed is compared").
Here each timer runs in a worker process of its own, started by the benchmark command, and the
parent asks the workers for one timed window at a time, in turn (window 1 of each, then window
2 of each, ...): only one works at a time, and a burst of load on a shared machine still hits
all alike.

The protocol is JSON lines behind a PREFIX, so that a library's stray print on stdout cannot
be mistaken for a result: the worker says `ready` (with what it wants reported) once its step is
compiled and warmed up, then answers each `window` line with that window's timings; `stop` or
the end of its input ends it. Nothing here imports JAX or PyTorch.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, TextIO

from alexnet_jax.errors import RunFailure

PREFIX = 'alternating-worker: '


def send(message: dict, out: TextIO) -> None:
  out.write(PREFIX + json.dumps(message) + '\n')
  out.flush()


def serve(info: dict, window: Callable[[], dict], infile: TextIO = sys.stdin,
          outfile: TextIO = sys.stdout) -> None:
  """The worker's side: `ready` with info, then window() for each `window` line, until `stop`
  or the end of the input."""
  send(dict(info, event='ready'), outfile)
  for line in infile:
    command = line.strip()
    if command == 'stop':
      return
    if command != 'window':
      raise ValueError(f'unknown command {command!r}')
    send(dict(window(), event='window'), outfile)


class Worker:
  """One worker process: `command` run with stdin and stdout as the protocol's pipes and stderr
  kept in a file, whose last lines a failure reports."""

  def __init__(self, name: str, command: list[str], cwd: str | None = None,
               env: dict | None = None):
    self.name = name
    self._stderr = tempfile.TemporaryFile(mode='w+')
    self._proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                  bufsize=1)
    self.info: dict[str, Any] = {}

  def _receive(self, event: str) -> dict:
    for line in self._proc.stdout:
      if line.startswith(PREFIX):
        message = json.loads(line[len(PREFIX):])
        if message.get('event') != event:
          raise RunFailure(f'worker {self.name}: expected {event!r}, got {message!r}')
        return message
    self._proc.wait()
    self._stderr.seek(0)
    tail = ' | '.join(self._stderr.read().strip().splitlines()[-5:])
    raise RunFailure(f'worker {self.name} ended (exit status {self._proc.returncode}) before '
                     f'its {event!r} answer: {tail}')

  def ready(self) -> dict:
    """Waits for the worker's step to be compiled and warmed up; its info."""
    self.info = self._receive('ready')
    return self.info

  def window(self) -> dict:
    self._proc.stdin.write('window\n')
    self._proc.stdin.flush()
    return self._receive('window')

  def stop(self) -> None:
    if self._proc.poll() is None:
      try:
        self._proc.stdin.write('stop\n')
        self._proc.stdin.close()
      except (BrokenPipeError, OSError):
        pass
      try:
        self._proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._stderr.close()


def alternate(workers: list[Worker], windows: int, pause_s: float = 0.0) -> dict[str, list]:
  """Every worker ready (started one after another, so that no compilation overlaps another's),
  then `windows` rounds of one window per worker, in order, `pause_s` apart: {name: [window
  answers]}. The workers are stopped at the end, also on a failure."""
  try:
    for worker in workers:
      worker.ready()
    out = {worker.name: [] for worker in workers}
    for _ in range(windows):
      for worker in workers:
        if pause_s:
          time.sleep(pause_s)
        out[worker.name].append(worker.window())
    return out
  finally:
    for worker in workers:
      worker.stop()


def environment(huge_pages: bool) -> dict:
  """This process's environment for a worker, with or without malloc's huge pages (our commands
  ask for them: alexnet_jax/tools/huge_pages.py; another framework runs as a user starts it,
  without)."""
  env = dict(os.environ)
  if not huge_pages:
    tunables = [t for t in env.get('GLIBC_TUNABLES', '').split(':')
                if t and not t.startswith('glibc.malloc.hugetlb')]
    if tunables:
      env['GLIBC_TUNABLES'] = ':'.join(tunables)
    else:
      env.pop('GLIBC_TUNABLES', None)
    env['ALEXNET_JAX_HUGE_PAGES'] = '0'
  return env
