"""alexnet_jax/tools/huge_pages.py: a command re-executes itself once with glibc's
malloc.hugetlb tunable where the kernel gives transparent huge pages on request, keeping its
PID, arguments and output, and never where the user chose otherwise, under a launcher (SLURM,
MPI, jax.distributed) or on a GPU or TPU host: the hosts are simulated (their environment and
a fake root with their device files), one row each. The last table: which platform gets which
CPU-measured default (the re-exec, the YNNPACK options, conv_impl='auto')."""
import os
import subprocess
import sys

import pytest

from alexnet_jax import compiler_options
from alexnet_jax.model import grouped_conv
from alexnet_jax.model import lrn
from alexnet_jax.model import pooling
from alexnet_jax.tools import huge_pages
from tests.helpers import alexnet_config
from tests import helpers

# Prints the PID before and after the call and the tunables the process ends up with.
SCRIPT = ('import os, sys; print("before", os.getpid(), flush=True); '
          'from alexnet_jax.tools import huge_pages; huge_pages.reexec_with_huge_pages(); '
          'print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])')
# Whether this machine can re-execute at all (Linux, glibc >= 2.35); the rows below that expect
# a re-exec expect this machine's reason otherwise.
SYSTEM_OK = (sys.platform.startswith('linux') and
             (huge_pages._glibc_version() or (0, 0)) >= (2, 35))


def script_env(**env):
  environ = {k: v for k, v in helpers.cpu_env().items()
             if k not in ('GLIBC_TUNABLES', 'ALEXNET_JAX_HUGE_PAGES')}
  return {**environ, **env}


def run_script(**env):
  return subprocess.run([sys.executable, '-c', SCRIPT, 'an argument'], cwd=helpers.ROOT,
                        capture_output=True, text=True, env=script_env(**env), check=True)


def thp_on_request() -> bool:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[madvise]' in f.read()
  except OSError:
    return False


def test_reexec_keeps_pid_and_arguments_and_sets_the_tunable():
  lines = run_script().stdout.splitlines()
  expect_reexec = huge_pages.wanted(script_env())  # JAX_PLATFORMS=cpu: a CPU run anywhere
  if SYSTEM_OK and not huge_pages.launcher(script_env()):
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
  # Other tunables are kept beside ours, and one the user set wins over ours.
  lines = run_script(GLIBC_TUNABLES='glibc.malloc.trim_threshold=1000000').stdout.splitlines()
  tunables = 'glibc.malloc.trim_threshold=1000000'
  if huge_pages.wanted(script_env()):
    tunables += (':glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1'
                 ':glibc.malloc.mmap_max=0')
  assert lines[-1].split()[2] == tunables


def test_the_users_environment_is_what_they_gave_before_the_reexec():
  # What the benchmark gives its yardsticks (PyTorch at its defaults): not our tunables.
  ours = {'GLIBC_TUNABLES': huge_pages.TUNABLE, huge_pages.USER_TUNABLES_VARIABLE: '',
          'OTHER': '1'}
  assert huge_pages.users_environment(ours) == {'OTHER': '1'}
  theirs = {'GLIBC_TUNABLES': huge_pages.with_ours('glibc.malloc.tcache_count=0'),
            huge_pages.USER_TUNABLES_VARIABLE: 'glibc.malloc.tcache_count=0'}
  assert huge_pages.users_environment(theirs) == {
      'GLIBC_TUNABLES': 'glibc.malloc.tcache_count=0'}
  # Never re-executed: the environment as it is.
  assert huge_pages.users_environment({'GLIBC_TUNABLES': 'x=1'}) == {'GLIBC_TUNABLES': 'x=1'}


# --- which hosts get the re-exec: (environment, files under a fake root, the reason or None) ---

MADVISE = {'sys/kernel/mm/transparent_hugepage/enabled': 'always [madvise] never'}
PCI = 'sys/bus/pci/devices/0000:00:05.0/'
HOSTS = {
    'cpu': ({}, {}, None),
    'cpu, JAX_PLATFORMS=cpu': ({'JAX_PLATFORMS': 'cpu'}, {}, None),
    'gpu host, JAX_PLATFORMS=cpu': ({'JAX_PLATFORMS': 'cpu'}, {'dev/nvidia0': ''}, None),
    'GCE cpu VM (Google gVNIC, not a TPU)': ({}, {PCI + 'vendor': '0x1ae0',
                                                  PCI + 'device': '0x0042'}, None),
    'nvidia gpu': ({}, {'dev/nvidia0': '', 'dev/nvidiactl': ''},
                   'accelerator: gpu (/dev/nvidia0)'),
    'nvidia gpu in a container': ({}, {'dev/nvidiactl': ''}, 'accelerator: gpu (/dev/nvidiactl)'),
    'amd gpu': ({}, {'dev/kfd': ''}, 'accelerator: gpu (/dev/kfd)'),
    'JAX_PLATFORMS=cuda': ({'JAX_PLATFORMS': 'cuda'}, {}, 'accelerator: gpu (JAX_PLATFORMS=cuda)'),
    'JAX_PLATFORMS=cuda,cpu': ({'JAX_PLATFORMS': 'cuda,cpu'}, {},
                               'accelerator: gpu (JAX_PLATFORMS=cuda,cpu)'),
    'tpu v4 (/dev/accel*)': ({}, {'dev/accel0': '', 'dev/accel1': ''},
                             'accelerator: tpu (/dev/accel0)'),
    'tpu v5e (PCI only)': ({}, {PCI + 'vendor': '0x1ae0', PCI + 'device': '0x0063'},
                           'accelerator: tpu (PCI 0000:00:05.0)'),
    'tpu VM variables': ({'TPU_ACCELERATOR_TYPE': 'v5litepod-8'}, {},
                         'accelerator: tpu (TPU_ACCELERATOR_TYPE)'),
    'JAX_PLATFORMS=tpu': ({'JAX_PLATFORMS': 'tpu'}, {}, 'accelerator: tpu (JAX_PLATFORMS=tpu)'),
    'SLURM job': ({'SLURM_JOB_ID': '42'}, {}, 'launcher: SLURM (SLURM_JOB_ID)'),
    'SLURM task': ({'SLURM_PROCID': '0'}, {}, 'launcher: SLURM (SLURM_PROCID)'),
    'Open MPI': ({'OMPI_COMM_WORLD_RANK': '0'}, {}, 'launcher: MPI (OMPI_COMM_WORLD_RANK)'),
    'MPICH / Intel MPI': ({'PMI_RANK': '1'}, {}, 'launcher: MPI (PMI_RANK)'),
    'PMIx': ({'PMIX_RANK': '0'}, {}, 'launcher: MPI (PMIX_RANK)'),
    'jax.distributed': ({'JAX_COORDINATOR_ADDRESS': 'host0:1234'}, {},
                        'launcher: jax.distributed (JAX_COORDINATOR_ADDRESS)'),
    'SLURM on a gpu host': ({'SLURM_JOB_ID': '42'}, {'dev/nvidia0': ''},
                            'launcher: SLURM (SLURM_JOB_ID)'),
    'user: off': ({'ALEXNET_JAX_HUGE_PAGES': '0'}, {}, 'user: ALEXNET_JAX_HUGE_PAGES=0'),
    'huge pages always on': ({}, {'sys/kernel/mm/transparent_hugepage/enabled':
                                  '[always] madvise never'},
                             'system: transparent huge pages are not given on request (madvise)'),
}


def fake_host(root, files: dict) -> str:
  for path, text in {**MADVISE, **files}.items():
    os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
    with open(os.path.join(root, path), 'w') as f:
      f.write(text + '\n')
  return str(root)


@pytest.mark.parametrize('host', list(HOSTS))
def test_which_hosts_reexecute(host, tmp_path):
  environ, files, reason = HOSTS[host]
  if reason is None and not SYSTEM_OK:
    reason = 'system: not Linux with glibc >= 2.35'
  root = fake_host(tmp_path, files)
  assert huge_pages.skip_reason(environ, root) == reason
  assert huge_pages.wanted(environ, root) == (reason is None)


@pytest.mark.parametrize('env', [{'JAX_PLATFORMS': 'tpu'}, {'SLURM_JOB_ID': '42'}])
def test_accelerator_and_launcher_processes_run_once(env):
  """The command itself, on this machine: told it is a TPU run or a SLURM task, it does not
  run again (one 'before' line) and its environment is left as it was."""
  lines = run_script(**env).stdout.splitlines()
  pid = lines[0].split()[1]
  assert lines == [f'before {pid}', f"after {pid} None ['an argument']"]


# --- which platform gets which CPU-measured default ---


@pytest.mark.parametrize('platform,reexec,ynnpack_options,conv_impl,lrn_impl,pool_impl', [
    ('cpu', True, True, 'halves', 'fast', 'fast'),
    ('gpu', False, False, 'feature_group', 'reduce_window', 'xla'),
    ('tpu', False, False, 'feature_group', 'reduce_window', 'xla'),
])
def test_cpu_measured_defaults_apply_on_cpu_only(platform, reexec, ynnpack_options, conv_impl,
                                                 lrn_impl, pool_impl, tmp_path):
  """Each was measured on the 2-core CPU only: the huge-pages re-exec, compiler_options'
  YNNPACK setting, and for 'auto' halves convs, the custom-gradient LRN and pooling. A GPU or
  TPU gets none of them: no re-exec, XLA's own compiler options, and the plain XLA forms."""
  root = fake_host(tmp_path, {})
  environ = {'JAX_PLATFORMS': {'gpu': 'cuda'}.get(platform, platform)}
  assert huge_pages.wanted(environ, root) == (reexec and SYSTEM_OK)
  assert bool(compiler_options._BY_PLATFORM.get(platform)) == ynnpack_options
  assert grouped_conv.auto_conv_impl(platform) == conv_impl
  assert lrn.auto_impl(platform) == lrn_impl and pooling.auto_impl(platform) == pool_impl
  config = alexnet_config.get_config()
  assert (config.model.conv_impl, config.model.lrn_impl, config.model.pool_impl) == (
      'auto', 'auto', 'auto')
