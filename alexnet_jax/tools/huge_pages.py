"""Transparent huge pages for the commands' malloc, by re-executing the command once, on CPU
hosts only.

XLA:CPU writes every step's activations and gradients into freshly allocated buffers, and
with 4 KiB pages each step faults them in anew: hundreds of thousands of page faults per
float32 training step on the 2-core VM, and a large share of the step spent in system time.
glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask for transparent huge pages (2 MiB),
where the kernel gives them only on request (`/sys/kernel/mm/transparent_hugepage/enabled` is
`madvise`): far fewer faults, and the step measured faster
(`python -m alexnet_jax.tools.benchmark` prints the step's speed; docs/performance.md has the
figures). Three more keep the memory a step freed for the next step instead of handing it back
to the kernel, which would fault it in (and zero it) again: one malloc arena
(`arena_max=1`: the XLA threads' own arenas shrank after every step), no mmap'd chunks
(`mmap_max=0`: each one is unmapped when freed) and no trimming of the heap's top
(`trim_threshold`). Steady-state steps then measured no page faults at all. It matters most beside other
processes that churn memory (a data loader's workers, another job), where each fault cost many
times more system time.

A tunable is read when a process starts, so a command that lacks it runs itself again, in the
same process (os.execve keeps the PID, signals and exit status), with it set.

The rule (skip_reason), decided without importing JAX (slow, and it must not start before the
process is replaced), in this order; the first that applies means no re-exec:

  1. the user's choice: ALEXNET_JAX_HUGE_PAGES=0, or GLIBC_TUNABLES already naming
     malloc.hugetlb;
  2. a launcher that started this process as one rank of several: SLURM (SLURM_JOB_ID,
     SLURM_PROCID), MPI (OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK) or jax.distributed's own
     variables (JAX_COORDINATOR_ADDRESS, JAX_COORDINATOR_PORT). Such launchers track,
     signal and wire up (PMI sockets, inherited descriptors) the process they started; a
     re-exec there was never tried, and the gain was measured on one CPU process only. (Ranks
     started by hand with launch.py's --config.distributed.* flags are plain processes, on
     CPU re-executed like any other);
  3. an accelerator host, where JAX would not run on the CPU (the gain is XLA:CPU's; GPU and
     TPU steps were not measured with it): JAX_PLATFORMS naming anything but cpu; or, where
     JAX_PLATFORMS is unset, the devices JAX itself probes for: NVIDIA (/dev/nvidia0,
     /dev/nvidiactl, /dev/dxg), AMD (/dev/kfd), TPU (/dev/accel*, a Google TPU PCI device in
     /sys/bus/pci/devices, or the TPU VM's variables TPU_ACCELERATOR_TYPE, TPU_WORKER_ID,
     TPU_WORKER_HOSTNAMES, TPU_NAME). JAX_PLATFORMS=cpu on such a host is a CPU run and gets
     the re-exec. An installed CUDA plugin or libtpu without a device is not an accelerator
     host: JAX falls back to the CPU there;
  4. where it cannot help: not Linux, glibc before 2.35, or huge pages not given on request
     (always on, or never).
"""
import glob
import os
import re
import sys

# The tunables this module adds, name -> value (the module docstring says why each).
TUNABLES = {'glibc.malloc.hugetlb': '1', 'glibc.malloc.arena_max': '1',
            'glibc.malloc.mmap_max': '0', 'glibc.malloc.trim_threshold': str(1 << 40)}
TUNABLE = ':'.join(f'{name}={value}' for name, value in TUNABLES.items())
# The re-executed process keeps the user's own GLIBC_TUNABLES here ('' where unset), so that a
# process it starts to stand for someone else's program (the benchmark's PyTorch yardstick) can
# be given the environment the user had, not ours.
USER_TUNABLES_VARIABLE = 'ALEXNET_JAX_USER_GLIBC_TUNABLES'
_THP_SETTING = 'sys/kernel/mm/transparent_hugepage/enabled'  # under the root, '/'

# The variables each launcher sets in the processes it starts (rule 2).
LAUNCHERS = {
    'SLURM': ('SLURM_JOB_ID', 'SLURM_PROCID'),
    'MPI': ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK'),
    'jax.distributed': ('JAX_COORDINATOR_ADDRESS', 'JAX_COORDINATOR_PORT'),
}
# Rule 3: device files (under the root) and variables that mean an accelerator JAX would use.
# The NVIDIA and AMD files are those jax._src.hardware_utils checks.
_DEVICE_FILES = {
    'gpu': ('dev/nvidia0', 'dev/nvidiactl', 'dev/dxg', 'dev/kfd'),
    'tpu': ('dev/accel[0-9]*',),
}
_TPU_VARIABLES = ('TPU_ACCELERATOR_TYPE', 'TPU_WORKER_ID', 'TPU_WORKER_HOSTNAMES', 'TPU_NAME')
# Google's PCI vendor id and its TPU chips' device ids (v3 to TPU7x), as JAX lists them; other
# Google devices (gVNIC, 0x0042) are not accelerators.
_GOOGLE_PCI_VENDOR = '0x1ae0'
_TPU_PCI_DEVICES = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')
_JAX_PLATFORM_KINDS = {'cuda': 'gpu', 'rocm': 'gpu', 'gpu': 'gpu', 'tpu': 'tpu'}


def _glibc_version() -> tuple[int, int] | None:
  try:
    match = re.fullmatch(r'glibc (\d+)\.(\d+)', os.confstr('CS_GNU_LIBC_VERSION') or '')
  except (ValueError, OSError):  # not glibc (musl, macOS)
    return None
  return (int(match.group(1)), int(match.group(2))) if match else None


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ''


def launcher(environ) -> str | None:
  """'SLURM', 'MPI' or 'jax.distributed' with the variable that shows it, or None."""
  for name, variables in LAUNCHERS.items():
    for variable in variables:
      if environ.get(variable):
        return f'{name} ({variable})'
  return None


def accelerator(environ, root: str = '/') -> str | None:
  """The accelerator JAX would run on here ('gpu ...', 'tpu ...', with what shows it), or None
  for the CPU. root: where the device files are looked for ('/'; a test's fake host)."""
  platforms = [p.strip() for p in environ.get('JAX_PLATFORMS', '').split(',') if p.strip()]
  if platforms:
    others = [p for p in platforms if p != 'cpu']
    if not others:
      return None
    return f'{_JAX_PLATFORM_KINDS.get(others[0], others[0])} (JAX_PLATFORMS={",".join(platforms)})'
  for kind, patterns in _DEVICE_FILES.items():
    for pattern in patterns:
      found = sorted(glob.glob(os.path.join(root, pattern)))
      if found:
        return f'{kind} ({os.path.join("/", os.path.relpath(found[0], root))})'
  for variable in _TPU_VARIABLES:
    if environ.get(variable):
      return f'tpu ({variable})'
  for vendor in sorted(glob.glob(os.path.join(root, 'sys/bus/pci/devices/*/vendor'))):
    if (_read(vendor) == _GOOGLE_PCI_VENDOR and
        _read(os.path.join(os.path.dirname(vendor), 'device')) in _TPU_PCI_DEVICES):
      return f'tpu (PCI {os.path.basename(os.path.dirname(vendor))})'
  return None


def skip_reason(environ=None, root: str = '/') -> str | None:
  """Why this process should not re-run itself with TUNABLE (the module docstring's rule), or
  None where it should. environ: os.environ by default; root: the filesystem the host's devices
  and kernel settings are read from ('/'), both so that a test can simulate each host."""
  environ = os.environ if environ is None else environ
  if environ.get('ALEXNET_JAX_HUGE_PAGES', '1') == '0':
    return 'user: ALEXNET_JAX_HUGE_PAGES=0'
  if 'glibc.malloc.hugetlb' in environ.get('GLIBC_TUNABLES', ''):
    return 'user: GLIBC_TUNABLES sets glibc.malloc.hugetlb'
  started_by = launcher(environ)
  if started_by:
    return f'launcher: {started_by}'
  device = accelerator(environ, root)
  if device:
    return f'accelerator: {device}'
  if not sys.platform.startswith('linux') or (_glibc_version() or (0, 0)) < (2, 35):
    return 'system: not Linux with glibc >= 2.35'
  if '[madvise]' not in _read(os.path.join(root, _THP_SETTING)):
    return 'system: transparent huge pages are not given on request (madvise)'
  return None


def wanted(environ=None, root: str = '/') -> bool:
  """Whether this process should re-run itself with TUNABLE."""
  return skip_reason(environ, root) is None


def with_ours(user_tunables: str) -> str:
  """The user's GLIBC_TUNABLES with ours after them, except those the user set (theirs win)."""
  named = {item.split('=')[0] for item in user_tunables.split(':') if item}
  ours = [f'{name}={value}' for name, value in TUNABLES.items() if name not in named]
  return ':'.join(([user_tunables] if user_tunables else []) + ours)


def users_environment(environ) -> dict:
  """environ as the user had it before the re-exec: their GLIBC_TUNABLES, or none."""
  env = dict(environ)
  if USER_TUNABLES_VARIABLE in env:
    user = env.pop(USER_TUNABLES_VARIABLE)
    if user:
      env['GLIBC_TUNABLES'] = user
    else:
      env.pop('GLIBC_TUNABLES', None)
  return env


def reexec_with_huge_pages() -> None:
  """Runs this command again with TUNABLE (and returns only where that is not wanted). Call it
  first thing in a command's __main__, before any work: the process is replaced."""
  if not wanted():
    return
  user = os.environ.get('GLIBC_TUNABLES', '')
  env = dict(os.environ, GLIBC_TUNABLES=with_ours(user), **{USER_TUNABLES_VARIABLE: user})
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
