"""Transparent huge pages for the commands' malloc, by re-executing the command once.

XLA:CPU writes every step's activations and gradients into freshly allocated buffers, and
with 4 KiB pages each step faults them in anew: 234,000 page faults and 0.6 s of system
time per float32 training step at batch 32 on the 2-core VM (1.7 s per step). glibc's
`glibc.malloc.hugetlb=1` tunable makes malloc ask for transparent huge pages (2 MiB), where
the kernel gives them only on request (`/sys/kernel/mm/transparent_hugepage/enabled` is
`madvise`): about 1,000 faults and 1.33-1.37 s per step, measured 2026-11-30
(`python -m alexnet_jax.tools.benchmark` prints the step's speed; the README has the table).

A tunable is read when a process starts, so a command that lacks it runs itself again, in the
same process (os.execve keeps the PID, signals and exit status), with it set. Nothing is
re-executed where it cannot help: not Linux, glibc before 2.35, huge pages already always on or
never, GLIBC_TUNABLES already choosing malloc.hugetlb, or ALEXNET_JAX_HUGE_PAGES=0.
"""
import os
import re
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
_THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def _glibc_version() -> tuple[int, int] | None:
  try:
    match = re.fullmatch(r'glibc (\d+)\.(\d+)', os.confstr('CS_GNU_LIBC_VERSION') or '')
  except (ValueError, OSError):  # not glibc (musl, macOS)
    return None
  return (int(match.group(1)), int(match.group(2))) if match else None


def wanted(environ=None) -> bool:
  """Whether this process should re-run itself with TUNABLE."""
  environ = os.environ if environ is None else environ
  if environ.get('ALEXNET_JAX_HUGE_PAGES', '1') == '0':
    return False
  if 'glibc.malloc.hugetlb' in environ.get('GLIBC_TUNABLES', ''):
    return False
  if not sys.platform.startswith('linux') or (_glibc_version() or (0, 0)) < (2, 35):
    return False
  try:
    with open(_THP_SETTING) as f:
      return '[madvise]' in f.read()
  except OSError:
    return False


def reexec_with_huge_pages() -> None:
  """Runs this command again with TUNABLE (and returns only where that is not wanted). Call it
  first thing in a command's __main__, before any work: the process is replaced."""
  if not wanted():
    return
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  env = dict(os.environ, GLIBC_TUNABLES=f'{tunables}:{TUNABLE}' if tunables else TUNABLE)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
