"""The step benchmark's fair method: every implementation in a process of its own, one at a time.

Timed in one process, one framework's work disturbs the other's: with PyTorch's steps
interleaved in our process our step ran far slower than alone (docs/performance.md, "How speed
is compared", has the figures and what the cause was found to be). So, for each setting
(batch, dtype, LRN on/off):

  1. One worker process per implementation: ours (one per mesh and implementation switch asked
     for) and each yardstick. Each is a fresh interpreter started with subprocess
     (jax_worker.py or torch_worker.py; never forked from a process that holds a framework):
     torch is never imported in a JAX worker, JAX never in a torch worker, and this parent
     times nothing itself (it never starts JAX's backend, nor imports torch).
  2. One at a time, each worker builds and compiles its step and runs its warm-up, the others
     blocked on their pipe.
  3. Rounds: in each, every worker times one window of `steps` steps, one worker after
     another, so that a burst of load on the shared machine hits all alike; the order rotates
     by one each round, so no implementation always follows the same one. While one worker
     runs, the others sit in a blocking read. After each window the parent waits `pause_s`,
     watching the worker's CPU time (worker.settle): a thread pool spins on after its work
     (OpenMP's, PyTorch's), and the pause keeps that tail out of the next worker's window;
     each record says how much CPU that tail took and when it ended, so that a pause too
     short shows.
  4. A step time is the median of its windows. Ratios are taken within the run: the other's
     step time over ours (above 1.0, ours is faster). MFU is model FLOPs per step over step
     time over the peak that a float32 matmul reaches on this machine, measured in the same
     run by a JAX worker after the setting's rounds (measure.device_peak).

'ours_beside_torch_eager' (jax_worker.py) puts our step and PyTorch's eager step in one
process, as the benchmark did before this method: timed beside the isolated ones, it measures
what the other framework in the process does to each. Running the command with one
implementation alone (`--yardsticks=` for ours; `--noours --yardsticks=torch_eager`) against
the same in a full run is the check that the alternation favours neither side.
"""
import importlib.util
import os
import statistics
import sys
import time
from typing import Any, Callable

import alexnet_jax
from alexnet_jax.benchmarks import worker as worker_lib
from alexnet_jax.errors import UserError

TORCH_IMPLS = ('torch_eager', 'torch_compile')
JAX_YARDSTICKS = ('plain_jax', 'ours_beside_torch_eager')
YARDSTICKS = ('plain_jax',) + TORCH_IMPLS + ('ours_beside_torch_eager',)
# Every record's fields (docs/performance.md, "How speed is compared", names each): the
# setting, the step's figures, the worker (pid, frameworks loaded, its threads), what the
# kernel did for it per step, and the pause's tail after its windows.
RECORD_FIELDS = (
    'impl', 'batch', 'dtype', 'lrn', 'mesh', 'isolation', 'step_ms', 'window_ms', 'img_s',
    'mfu', 'model_gflop_per_step', 'peak_tflops_per_device', 'peak_source', 'compile_s',
    'final_loss', 'pid', 'parent_pid', 'frameworks', 'os_threads', 'cores',
    'minor_faults_per_step', 'sys_ms_per_step', 'user_ms_per_step', 'pause_cpu_ms_max',
    'pause_busy_until_ms_max', 'host_rss_peak_mb')
# What a worker may take to answer: torch.compile or XLA compiling the full step on a small,
# busy CPU takes minutes; a window of a few steps, seconds to a minute.
DEFAULT_TIMEOUT_S = 1800.0
# The package's parent folder, put on the workers' PYTHONPATH: they import alexnet_jax from
# wherever this process did, whatever their working directory.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_jax.__file__)))


def worker_module(impl: str) -> str:
  """The module that runs impl: torch_worker for PyTorch's, jax_worker for the rest."""
  return 'torch_worker' if impl in TORCH_IMPLS else 'jax_worker'


def start_worker(impl: str, timeout_s: float, env: dict | None = None) -> worker_lib.Worker:
  """A fresh interpreter serving impl's worker module (nothing forked, nothing inherited but
  the environment)."""
  env = dict(os.environ if env is None else env)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get('PYTHONPATH')) if p)
  argv = [sys.executable, '-m', f'alexnet_jax.benchmarks.{worker_module(impl)}']
  return worker_lib.Worker(impl, argv, timeout_s=timeout_s, env=env)


def ours_specs(config: dict, *, lrn: bool, meshes, lrn_impls, conv_impls, pool_impls,
               nonfinite_guards) -> list[dict]:
  """One spec of ours per (mesh, LRN impl, conv impl, pool impl, guard) asked for."""
  specs = []
  for mesh in meshes:
    for lrn_impl in (lrn_impls if lrn else lrn_impls[:1]):
      for conv_impl in conv_impls:
        for pool_impl in pool_impls:
          for guard in nonfinite_guards:
            specs.append({'impl': 'ours', 'config': config, 'mesh': list(mesh),
                          'lrn_impl': lrn_impl, 'conv_impl': conv_impl, 'pool_impl': pool_impl,
                          'nonfinite_guard': guard})
  return specs


def check_yardsticks(yardsticks: list[str]) -> None:
  """A yardstick that cannot run is one line before any worker starts."""
  for name in yardsticks:
    if name in TORCH_IMPLS + ('ours_beside_torch_eager',):
      if not _torch_installed():
        raise UserError(f'--yardsticks={name} needs PyTorch: pip install -r '
                        'requirements-torch.txt')
    elif name not in YARDSTICKS and not os.path.isfile(name):
      raise UserError(f'--yardsticks: {name!r} is neither a file nor one of '
                      f'{", ".join(YARDSTICKS)}')


def _torch_installed() -> bool:
  # Found without importing it: this process must not load torch.
  return importlib.util.find_spec('torch') is not None


def _name(spec: dict) -> str:
  """A record's impl: 'ours', or the yardstick's name (a file's base name)."""
  return os.path.basename(spec['impl'])


def _summary(windows: list[dict], steps: int) -> dict[str, Any]:
  times = [w['step_s'] for w in windows]
  per_step = lambda key: statistics.median(w[key] for w in windows) / steps
  return {'step_ms': 1e3 * statistics.median(times),
          'window_ms': [round(1e3 * t, 1) for t in times],
          'minor_faults_per_step': per_step('minor_faults'),
          'sys_ms_per_step': 1e3 * per_step('sys_s'),
          'user_ms_per_step': 1e3 * per_step('user_s'),
          'pause_cpu_ms_max': max(w['after_cpu_ms'] for w in windows),
          'pause_busy_until_ms_max': max(w['busy_until_ms'] for w in windows),
          **{f'{k}_per_step': per_step(k) for k in worker_lib.VMSTAT_COUNTERS
             if all(k in w for w in windows)}}


def time_setting(specs: list[dict], setting: dict, *, warmup: int, steps: int, windows: int,
                 pause_s: float, peak_tflops: float, timeout_s: float,
                 env: dict | None = None, yardstick_env: dict | None = None,
                 log: Callable = print) -> list[dict]:
  """specs' steps at one setting, each in its worker, by the method above; one record each.
  env: the workers' environment (this process's by default); yardstick_env, where given, that
  of the yardsticks' workers (the user's, without what our commands add for our own step)."""
  workers, setups = [], []
  try:
    for spec in specs:
      ours_inside = spec['impl'] in ('ours', 'ours_beside_torch_eager')
      workers.append(start_worker(spec['impl'], timeout_s,
                                  env if ours_inside or yardstick_env is None else yardstick_env))
      log(f'  {_name(spec)}: compiling (pid {workers[-1].pid})', flush=True)
      setups.append(workers[-1].request('setup', spec={**spec, **setting, 'warmup': warmup}))
      worker_lib.settle(workers[-1].pid, pause_s)
    timed = [[] for _ in workers]
    for round_index in range(windows):
      order = list(range(len(workers)))
      order = order[round_index % len(order):] + order[:round_index % len(order)]
      for i in order:
        reply = workers[i].request('window', steps=steps, pause_s=pause_s)
        timed[i].append({**reply, **worker_lib.settle(workers[i].pid, pause_s)})
      log(f'  round {round_index + 1}/{windows}: ' + ', '.join(
          f'{_name(s)} {1e3 * t[-1]["step_s"]:.0f} ms' for s, t in zip(specs, timed)),
          flush=True)
    finals = [w.request('finish') for w in workers]
    peak_worker = next((w for w in workers if worker_module(w.name) == 'jax_worker'), None)
    if peak_worker is None:
      workers.append(start_worker('matmul_peak', timeout_s, env))
      workers[-1].request('setup', spec={'impl': 'matmul_peak'})
      peak_worker = workers[-1]
    peak = peak_worker.request('peak', dtype=setting['dtype'], peak_tflops=peak_tflops)
  finally:
    for w in workers:
      w.close()
  records = []
  for spec, setup, final, windows_of in zip(specs, setups, finals, timed):
    summary = _summary(windows_of, steps)
    step_s = summary['step_ms'] / 1e3
    devices = spec['mesh'][0] * spec['mesh'][1] if 'mesh' in spec else 1
    # A CPU's measured peak already counts every core, which its (fake) devices share.
    total_peak = peak['peak_flops'] * (1 if setup['platform'] == 'cpu' else devices)
    record = {
        'impl': _name(spec), **setting, 'isolation': 'process',
        'mesh': 'x'.join(map(str, spec.get('mesh', (1, 1)))), 'devices': devices,
        **{k: spec.get(k) for k in ('lrn_impl', 'conv_impl', 'pool_impl', 'nonfinite_guard')},
        **summary, 'img_s': setting['batch'] / step_s,
        'compile_s': round(setup['compile_s'], 2),
        'model_gflop_per_step': setup['model_flops'] / 1e9,
        'mfu': setup['model_flops'] / step_s / total_peak,
        'peak_tflops_per_device': peak['peak_flops'] / 1e12, 'peak_source': peak['peak_source'],
        **{k: v for k, v in setup.items() if k not in ('compile_s', 'model_flops')},
        **final, 'parent_pid': os.getpid(),
    }
    if 'beside_step_s' in windows_of[0]:
      record['beside_step_ms'] = 1e3 * statistics.median(w['beside_step_s'] for w in windows_of)
    records.append(record)
  for record in records:
    if record['impl'] == 'ours':
      record['ratio_vs'] = {other['impl']: other['step_ms'] / record['step_ms']
                            for other in records if other['impl'] != 'ours'}
  return records


def run(config: dict, *, ours: bool, batch_sizes: list[int], dtypes: list[str],
        lrn_values: list[bool], meshes, lrn_impls, conv_impls, pool_impls,
        nonfinite_guards=(True,), yardsticks: list[str], image_size: int, num_classes: int,
        warmup: int, steps: int, windows: int, pause_s: float, peak_tflops: float = 0.0,
        timeout_s: float = DEFAULT_TIMEOUT_S, env: dict | None = None,
        yardstick_env: dict | None = None, emit=print, log: Callable = print) -> list[dict]:
  """Every setting (batch x dtype x LRN) by time_setting: ours (if asked) and the yardsticks;
  records emitted setting by setting, yardsticks first."""
  check_yardsticks(yardsticks)
  if not ours and not yardsticks:
    raise UserError('nothing to time: --noours and no --yardsticks')
  records = []
  for batch in batch_sizes:
    for dtype in dtypes:
      for lrn in lrn_values:
        setting = {'batch': batch, 'dtype': dtype, 'lrn': lrn, 'image_size': image_size,
                   'num_classes': num_classes}
        ours_all = ours_specs(config, lrn=lrn, meshes=meshes, lrn_impls=lrn_impls,
                              conv_impls=conv_impls, pool_impls=pool_impls,
                              nonfinite_guards=nonfinite_guards)
        # ours_beside_torch_eager runs the first of ours' specs (beside torch's eager step).
        specs = (ours_all if ours else []) + [
            {**ours_all[0], 'impl': name} if name == 'ours_beside_torch_eager' else
            {'impl': name} for name in yardsticks]
        log(f'batch {batch}, {dtype}, LRN {"on" if lrn else "off"}: '
            f'{len(specs)} workers', flush=True)
        group = time_setting(specs, setting, warmup=warmup, steps=steps, windows=windows,
                             pause_s=pause_s, peak_tflops=peak_tflops, timeout_s=timeout_s,
                             env=env, yardstick_env=yardstick_env, log=log)
        group = ([r for r in group if r['impl'] != 'ours'] +
                 [r for r in group if r['impl'] == 'ours'])
        for record in group:
          emit(record)
        records.extend(group)
  return records


def versions_line(records: list[dict]) -> str:
  """The frameworks, versions and thread counts the records' workers reported."""
  parts = []
  jax_record = next((r for r in records if 'jax' in r), None)
  if jax_record:
    parts.append(f'jax {jax_record["jax"]} (jaxlib {jax_record["jaxlib"]}; XLA:CPU sizes its '
                 f'thread pool to the {jax_record["cores"]} cores this process may use)')
  torch_record = next((r for r in records if 'torch' in r), None)
  if torch_record:
    parts.append(f'torch {torch_record["torch"]} ({torch_record["torch_threads"]} threads, '
                 f'{torch_record["torch_interop_threads"]} inter-op, '
                 f'{torch_record["torch_device"]})')
  return '; '.join(parts)


def print_table(records: list[dict]) -> None:
  """The records as a markdown table: each implementation's step, and its ratios to ours."""
  if not records:
    return
  r0 = records[0]
  names = list(dict.fromkeys(n for r in records for n in r.get('ratio_vs', {})))
  print(f'\n{time.strftime("%Y-%m-%d")} | {r0["platform"]}, {os.cpu_count()} host cores | '
        f'{versions_line(records)} | peak {1e3 * r0["peak_tflops_per_device"]:.0f} GFLOP/s: '
        f'{r0["peak_source"]} | each implementation in its own process')
  header = ('| impl | batch | dtype | LRN | mesh | conv impl | guard | step ms | img/s | MFU | '
            'compile s | pid | threads | faults / step | sys ms / step | pause CPU ms |' +
            ''.join(f' {n} / ours |' for n in names))
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  for r in records:
    ratios = ''.join(f' {r["ratio_vs"][n]:.2f}x |' if n in r.get('ratio_vs', {}) else ' |'
                     for n in names)
    threads = r.get('torch_threads', r.get('cores', ''))
    print(f'| {r["impl"]} | {r["batch"]} | {r["dtype"]} | {"on" if r["lrn"] else "off"} | '
          f'{r["mesh"]} | {r["conv_impl"] or "-"} | '
          f'{"-" if r["nonfinite_guard"] is None else ("on" if r["nonfinite_guard"] else "off")}'
          f' | {r["step_ms"]:.0f} | {r["img_s"]:.1f} | {100 * r["mfu"]:.1f}% | '
          f'{r["compile_s"]:.1f} | {r["pid"]} | {threads} | {r["minor_faults_per_step"]:.0f} | '
          f'{r["sys_ms_per_step"]:.0f} | {r["pause_cpu_ms_max"]:.1f} |{ratios}')
  beside = [r for r in records if 'beside_step_ms' in r]
  for r in beside:
    print(f'\nours_beside_torch_eager (LRN {"on" if r["lrn"] else "off"}): in one process, '
          f'ours {r["step_ms"]:.0f} ms and torch eager {r["beside_step_ms"]:.0f} ms per step.')
