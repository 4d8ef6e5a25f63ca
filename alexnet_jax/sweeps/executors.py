"""Where a sweep's runs execute: here, N at once, each pinned to its own devices; or on a SLURM
cluster as a job array through submitit, requeued with its checkpoint when preempted.

Here (`run_here`): N slots, each running one launch command at a time in its own process.
- On a GPU host, a slot is one GPU (CUDA_VISIBLE_DEVICES), or as many as a run's mesh takes
  (two for the paper's split, mesh.model=2).
- On a CPU, a slot is a set of cores: the process is pinned to them (sched_setaffinity) and
  XLA's CPU thread pool is sized to them (PJRT_NPROC; XLA sizes it from the schedulable cores
  anyway), so N runs do not fight over the cores. The pool size is part of what the floats are:
  a run on 1 core ends bit-identical to any other run on 1 core, not to one on 2.
With N=1 nothing is pinned (one run takes the whole machine, as a plain launch does).

On SLURM (`submit`): each run is one task of a job array, a `LaunchTask` running the same
launch command in a subprocess. On the preemption / time-out signal submitit uses (SIGUSR2, or
$SUBMITIT_PREEMPT_SIGNAL), submitit calls the task's `checkpoint()`: it sends SIGTERM to the run,
which saves a checkpoint and exits, and returns the same task for submitit to requeue; the
requeued task starts the same command, which resumes from that checkpoint.
"""
import ctypes
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import time

import submitit

from alexnet_jax.errors import UserError
from alexnet_jax.sweeps.plan import ROOT
from alexnet_jax.sweeps.plan import is_finished
from alexnet_jax.sweeps.plan import read_json

STOP_EXIT = {143: 'SIGTERM', 130: 'SIGINT'}  # launch.py: stopped by a signal, checkpoint saved


# --- devices: one slot per concurrent run ---


@dataclasses.dataclass(frozen=True)
class Slot:
  cpus: tuple[int, ...] = ()  # cores the run is pinned to; () = not pinned
  gpus: tuple[str, ...] | None = None  # CUDA_VISIBLE_DEVICES; None = as inherited

  def describe(self) -> str:
    if self.gpus is not None:
      return f'GPU {",".join(self.gpus)}'
    if self.cpus:
      return f'core{"s" if len(self.cpus) > 1 else ""} {",".join(map(str, self.cpus))}'
    return 'all devices'

  def env(self, environ) -> dict:
    env = dict(environ)
    if self.gpus is not None:
      env['CUDA_VISIBLE_DEVICES'] = ','.join(self.gpus)
    if self.cpus:
      # XLA:CPU's thread pool (its intra-op "tf_XLAEigen" threads) and OpenMP/BLAS threads.
      env['PJRT_NPROC'] = env['OMP_NUM_THREADS'] = str(len(self.cpus))
    return env


def cpu_slots(cores, n: int) -> list[Slot]:
  """n disjoint sets of consecutive cores, as even as the count allows."""
  cores = sorted(cores)
  if n > len(cores):
    raise UserError(f'--parallel={n} needs at least {n} cores; this process may use '
                    f'{len(cores)}')
  size, extra = divmod(len(cores), n)
  slots, start = [], 0
  for i in range(n):
    end = start + size + (i < extra)
    slots.append(Slot(cpus=tuple(cores[start:end])))
    start = end
  return slots


def gpu_slots(gpus, per_run: int, n: int | None = None) -> list[Slot]:
  """n slots of per_run GPUs each (n=None: as many as fit), consecutive: 8 GPUs with the
  paper's split (per_run=2) are 4 slots, (0,1) (2,3) (4,5) (6,7)."""
  per_run = max(1, per_run)
  fit = len(gpus) // per_run
  n = fit if n is None else n
  if n > fit:
    raise UserError(f'--parallel={n} runs of {per_run} GPU(s) each need {n * per_run} GPUs; '
                    f'{len(gpus)} visible')
  return [Slot(gpus=tuple(str(g) for g in gpus[i * per_run:(i + 1) * per_run]))
          for i in range(n)]


def visible_gpus(environ=None) -> list[str]:
  """The GPUs runs here may use: CUDA_VISIBLE_DEVICES if set, else those nvidia-smi lists;
  none when JAX_PLATFORMS names no GPU (e.g. 'cpu')."""
  environ = os.environ if environ is None else environ
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms and not any(p in platforms for p in ('cuda', 'gpu', 'rocm')):
    return []
  if 'CUDA_VISIBLE_DEVICES' in environ:
    return [d.strip() for d in environ['CUDA_VISIBLE_DEVICES'].split(',')
            if d.strip() and d.strip() != '-1']
  if not shutil.which('nvidia-smi'):
    return []
  try:
    out = subprocess.run(['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
                         capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.strip() for line in out.splitlines() if line.strip()]


def slots_for(parallel: int, gpus_per_run: int, environ=None) -> list[Slot]:
  if parallel < 1:
    raise UserError(f'--parallel={parallel} must be >= 1')
  if parallel == 1:
    return [Slot()]
  gpus = visible_gpus(environ)
  if gpus:
    return gpu_slots(gpus, gpus_per_run, parallel)
  return cpu_slots(os.sched_getaffinity(0), parallel)


def gpus_per_run(config) -> int:
  """The devices a run's mesh takes: model (2 for the split) x data (-1: all left = 1 here)."""
  return config.mesh.model * max(1, config.mesh.data)


# --- one run in a subprocess ---


def start(command: list[str], workdir: str, slot: Slot = Slot(),
          ignore_signals: tuple[int, ...] = (), die_with_parent: bool = False):
  """The launch command in a child process (cwd: the repository), its output appended to
  <workdir>/log.txt, pinned to the slot's devices."""
  def child_setup():  # in the child, before launch.py starts
    if slot.cpus:
      os.sched_setaffinity(0, slot.cpus)
    for signum in ignore_signals:
      signal.signal(signum, signal.SIG_IGN)
    if die_with_parent:  # Linux: SIGTERM (save and stop) when the parent dies
      try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
      except (OSError, AttributeError):
        pass

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'log.txt'), 'a') as log:
    log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} on {slot.describe()}: '
              f'{shlex.join(command[1:])}\n')
    log.flush()
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=slot.env(os.environ), preexec_fn=child_setup)


def read_summary(workdir: str) -> dict:
  return read_json(os.path.join(workdir, 'summary.json'))


def outcome(code: int, workdir: str) -> str:
  """What a finished launch command did, in words."""
  if code == 0:
    summary = read_summary(workdir)
    top1 = summary.get('eval', {}).get('top1')
    shown = f'val top1 {top1:.4f}' if top1 is not None else 'no evaluation'
    return f'{shown} in {summary["wall_time_s"]:.0f} s'
  if code in STOP_EXIT:
    return f'stopped by {STOP_EXIT[code]}, checkpoint saved (the same command resumes it)'
  return f'failed (exit {code}); see {os.path.join(workdir, "log.txt")}'


# --- here: N slots ---


class _StopRequests:
  """SIGTERM / SIGINT to the sweep: each running run gets SIGTERM (it saves a checkpoint and
  exits), no new run starts; a second signal kills the runs."""

  def __init__(self, running: dict):
    self.running = running
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    first = self.signum is None
    self.signum = self.signum or signum
    print(f'\nreceived {signal.Signals(signum).name}: ' + (
        'the running runs save a checkpoint and stop (send it again to kill them)' if first
        else 'killing the runs'), flush=True)
    for _, _, proc in list(self.running.values()):
      try:
        proc.send_signal(signal.SIGTERM if first else signal.SIGKILL)
      except ProcessLookupError:
        pass

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ''

  def __enter__(self) -> '_StopRequests':
    try:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    except ValueError:  # not the main thread
      pass
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def run_here(labelled_runs, base: str, slots: list[Slot], echo=print) -> tuple[list[str], str]:
  """Runs [(label, Run)] in order, one per slot at a time; one line per start and finish.
  Returns (the failed runs' lines, the signal that stopped the sweep or ''). After a failure no
  new run starts; the running ones finish."""
  queue = list(labelled_runs)
  running: dict[int, tuple] = {}  # slot index -> (label, run, process)
  failures: list[str] = []
  began = time.perf_counter()
  with _StopRequests(running) as stop:
    while running or (queue and not failures and not stop.signum):
      for i, slot in enumerate(slots):
        if i in running or not queue or failures or stop.signum:
          continue
        label, run = queue.pop(0)
        running[i] = (label, run, start(run.command(base), run.workdir, slot))
        echo(f'{label}: started on {slot.describe()} (log: {run.workdir}/log.txt)')
      time.sleep(0.2)
      for i, (label, run, proc) in list(running.items()):
        code = proc.poll()
        if code is None:
          continue
        del running[i]
        line = f'{label}: {outcome(code, run.workdir)}'
        echo(f'{line} (sweep {(time.perf_counter() - began) / 60:.1f} min so far)')
        if code != 0 and not stop.signum:
          failures.append(line)
  return failures, stop.name


# --- SLURM (or submitit's local executor): one task per run ---


def preemption_signal() -> int:
  """The signal submitit sends a task before a time-out or preemption (USR2 by default)."""
  return getattr(signal, 'SIG' + submitit.JobEnvironment.USR_SIG)


class LaunchTask(submitit.helpers.Checkpointable):
  """One run's launch command as a submitit task, requeued with its checkpoint."""

  def __init__(self, command: list[str], workdir: str, stop_timeout_s: float = 60.0):
    self.command = command
    self.workdir = workdir
    self.stop_timeout_s = stop_timeout_s
    self._proc = None

  def __getstate__(self) -> dict:
    return {**self.__dict__, '_proc': None}  # a process does not travel with the task

  def __call__(self) -> dict:
    if is_finished(self.workdir):  # requeued after it had finished
      return read_summary(self.workdir)
    # The run ignores the preemption signal (SLURM sends it to every process of the task):
    # this task turns it into the SIGTERM that makes the run save a checkpoint and stop.
    self._proc = start(self.command, self.workdir, ignore_signals=(preemption_signal(),),
                       die_with_parent=True)
    try:
      while self._proc.poll() is None:  # polled, not wait(): checkpoint() may run meanwhile
        time.sleep(0.5)
    finally:
      self._stop()  # the task ends early (an error, a cancel): the run saves and stops too
    code = self._proc.returncode
    if code != 0:
      raise RuntimeError(f'{shlex.join(self.command[1:3])}: {outcome(code, self.workdir)}')
    return read_summary(self.workdir)

  def checkpoint(self) -> submitit.helpers.DelayedSubmission:
    """Called by submitit on the preemption signal: stop the run (it saves a checkpoint) and
    requeue the same command, which resumes from it."""
    self._stop()
    return submitit.helpers.DelayedSubmission(
        LaunchTask(self.command, self.workdir, self.stop_timeout_s))

  def _stop(self) -> None:
    proc = self._proc
    if proc is None or proc.returncode is not None:
      return
    try:
      proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
      return
    # os.waitpid, not proc.wait(): this may run in a signal handler while __call__ is inside
    # proc.poll(), which holds the Popen's lock.
    deadline = time.time() + self.stop_timeout_s
    while time.time() < deadline:
      try:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
      except ChildProcessError:  # reaped by poll() already
        return
      if pid:
        proc.returncode = os.waitstatus_to_exitcode(status)
        return
      time.sleep(0.1)


def executor_parameters(slurm, gpus_per_task: int, name: str) -> dict:
  """submitit's AutoExecutor parameters from config.sweep.slurm: one task per run."""
  params = dict(name=name, timeout_min=int(slurm.time_min), nodes=1, tasks_per_node=1,
                gpus_per_node=int(gpus_per_task), cpus_per_task=int(slurm.cpus_per_task),
                stderr_to_stdout=True,
                slurm_array_parallelism=int(slurm.array_parallelism),
                slurm_signal_delay_s=int(slurm.signal_delay_s),
                slurm_additional_parameters={'requeue': True})
  if slurm.partition:
    params['slurm_partition'] = slurm.partition
  return params


def submit(labelled_runs, base: str, sweep_dir: str, slurm, gpus_per_task: int,
           cluster: str = 'slurm', echo=print) -> list:
  """Submits [(label, Run)] as one job array (one task per run) and returns its jobs at once;
  submitit's files go to <sweep_dir>/submitit, the job ids to <sweep_dir>/jobs.txt too."""
  sweep_dir = os.path.abspath(sweep_dir)
  try:
    executor = submitit.AutoExecutor(folder=os.path.join(sweep_dir, 'submitit', '%j'),
                                     cluster=cluster)
  except RuntimeError as e:  # e.g. no srun on this machine
    raise UserError(f'--submit={cluster}: {str(e).strip().splitlines()[0]}') from None
  executor.update_parameters(**executor_parameters(slurm, gpus_per_task,
                                                   os.path.basename(sweep_dir)))
  stop_timeout = max(10, int(slurm.signal_delay_s) - 15)  # time left to save, after the signal
  tasks = [LaunchTask(run.command(base), run.workdir, stop_timeout) for _, run in labelled_runs]
  # The tasks import alexnet_jax wherever they start.
  pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)
  with submitit.helpers.environment_variables(PYTHONPATH=pythonpath):
    jobs = executor.submit_array(tasks)
  with open(os.path.join(sweep_dir, 'jobs.txt'), 'a') as f:
    for job, (label, run) in zip(jobs, labelled_runs):
      echo(f'{label}: job {job.job_id}')
      f.write(f'{job.job_id} {run.variant} seed{run.seed} {run.workdir}\n')
  return jobs
