"""alexnet_jax/tools/huge_pages.py: a command re-executes itself once with glibc's
malloc.hugetlb tunable where the kernel gives transparent huge pages on request, keeping its
PID, arguments and output, and never where the user chose otherwise."""
import subprocess
import sys

from alexnet_jax.tools import huge_pages
from tests import helpers

# Prints the PID before and after the call and the tunables the process ends up with.
SCRIPT = ('import os, sys; print("before", os.getpid(), flush=True); '
          'from alexnet_jax.tools import huge_pages; huge_pages.reexec_with_huge_pages(); '
          'print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])')


def run_script(**env):
  environ = {k: v for k, v in helpers.cpu_env().items()
             if k not in ('GLIBC_TUNABLES', 'ALEXNET_JAX_HUGE_PAGES')}
  return subprocess.run([sys.executable, '-c', SCRIPT, 'an argument'], cwd=helpers.ROOT,
                        capture_output=True, text=True, env={**environ, **env}, check=True)


def thp_on_request() -> bool:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[madvise]' in f.read()
  except OSError:
    return False


def test_reexec_keeps_pid_and_arguments_and_sets_the_tunable():
  lines = run_script().stdout.splitlines()
  expect_reexec = huge_pages.wanted({})
  if sys.platform.startswith('linux') and (huge_pages._glibc_version() or (0, 0)) >= (2, 35):
    assert expect_reexec == thp_on_request()  # CI's machines and this one: madvise, glibc 2.36
  pid = lines[0].split()[1]
  if expect_reexec:  # this machine: 'before' twice (the command ran again), then once 'after'
    assert lines == [f'before {pid}', f'before {pid}',
                     f"after {pid} {huge_pages.TUNABLE} ['an argument']"]
  else:
    assert lines == [f'before {pid}', f"after {pid} None ['an argument']"]


def test_user_choices_are_kept():
  assert not huge_pages.wanted({'ALEXNET_JAX_HUGE_PAGES': '0'})
  assert not huge_pages.wanted({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})
  lines = run_script(ALEXNET_JAX_HUGE_PAGES='0').stdout.splitlines()
  assert len(lines) == 2 and lines[1].endswith("None ['an argument']")
  # Other tunables are kept beside ours.
  lines = run_script(GLIBC_TUNABLES='glibc.malloc.trim_threshold=1000000').stdout.splitlines()
  tunables = 'glibc.malloc.trim_threshold=1000000'
  if huge_pages.wanted({}):
    tunables += ':' + huge_pages.TUNABLE
  assert lines[-1].split()[2] == tunables
