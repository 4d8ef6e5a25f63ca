"""The small-net benchmark's method, without flags (tools/small_net_benchmark.py is the command):
the Figure 1 protocol's work timed as the protocol does it, ours against the same net written
plainly in PyTorch, each in a worker process of its own (worker.py's pipe, the step benchmark's
method: docs/performance.md, "How speed is compared").

A window is `segments` segments of the protocol: eval_every SGD steps on batches of a set held
in memory (figure1.train.Loop.steps; the PyTorch worker the same in PyTorch), then the
full-pass training error over the whole set (Loop.training_error). The steps and the full pass
are timed apart: step ms, img/s and MFU are the SGD step's; the protocol's img/s counts both,
the training images per second a Figure 1 run gets.

The workers: small_net_jax_worker.py (ours, and `before`: another revision's figure1/ beside
this benchmark's code) and small_net_torch_worker.py. Each compiles and warms up while the
others wait; then rounds, one window per worker in turn (the order rotated each round), a
watched pause after each (worker.settle). MFU is over the float32 matmul peak a JAX worker
measures in the same run. This module imports neither JAX nor torch.

The images are synthetic (synthetic_set): standardised normal pixels, the 'modern' regime's
input, and balanced labels, so that the command needs no data; the speed does not depend on
the pixels' values.
"""
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Callable

import numpy as np

import alexnet_jax
from alexnet_jax.benchmarks import worker as worker_lib
from alexnet_jax.errors import UserError

IMPLS = ('ours', 'torch_eager', 'torch_compile')
CONV_FEATURES = (32, 32, 64)  # figure1.net.CONV_FEATURES (tested equal)
KERNEL = 5
TIMEOUT_S = 1800.0
# The package's parent folder: the workers import alexnet_jax from where this process did.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_jax.__file__)))


def synthetic_set(num_images: int, image_size: int, num_classes: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(N x S x S x 3 float32 standard normal pixels, N int32 labels, each class as often)."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_images, image_size, image_size, 3), np.float32)
  y = rng.permutation(np.arange(num_images) % num_classes).astype(np.int32)
  return x, y


def forward_flops_per_image(image_size: int, num_classes: int) -> float:
  """2 x the multiply-adds of the net's layers for one image: each 'SAME' 5x5 conv at its input
  size (S, then S/2, S/4 after each 3/2 pool, rounded up) and the dense layer."""
  macs, size, channels = 0, image_size, 3
  for features in CONV_FEATURES:
    macs += size * size * features * KERNEL * KERNEL * channels
    size, channels = -(-size // 2), features
  return 2.0 * (macs + size * size * channels * num_classes)


def train_flops_per_image(image_size: int, num_classes: int) -> float:
  """The SGD step's: the forward, and the backward's input and weight gradients (twice it)."""
  return 3 * forward_flops_per_image(image_size, num_classes)


def before_tree(source: str, directory: str) -> str:
  """A copy of this alexnet_jax package in directory, its figure1/ replaced by another one: a
  git revision's (git archive of this checkout), or a directory's (a figure1 package, e.g. a
  modified copy, to time a variant). The `before` worker times that Loop with this benchmark's
  code; it needs figure1.train.Loop."""
  root = _PACKAGE_PARENT
  figure1 = os.path.join(directory, 'alexnet_jax', 'figure1')
  if os.path.isdir(source):
    if not os.path.isfile(os.path.join(source, 'train.py')):
      raise UserError(f'--before: the directory {source} is no figure1 package (no train.py)')
    files = None
  else:
    if not os.path.isdir(os.path.join(root, '.git')):
      raise UserError(f'--before={source}: neither a directory nor, without the git checkout '
                      f'the package is in ({root} is none), a revision')
    archive = subprocess.run(['git', '-C', root, 'archive', source, 'alexnet_jax/figure1'],
                             capture_output=True, check=False)
    if archive.returncode:
      raise UserError(f'--before={source}: {archive.stderr.decode().strip()}')
    files = archive.stdout
  shutil.copytree(os.path.join(root, 'alexnet_jax'), os.path.join(directory, 'alexnet_jax'),
                  ignore=shutil.ignore_patterns('__pycache__'))
  shutil.rmtree(figure1)
  if files is None:
    shutil.copytree(source, figure1, ignore=shutil.ignore_patterns('__pycache__'))
  else:
    with tarfile.open(fileobj=io.BytesIO(files)) as tar:
      tar.extractall(directory, filter='data')
  return directory


def start_worker(name: str, module: str, tree: str = _PACKAGE_PARENT,
                 timeout_s: float = TIMEOUT_S) -> worker_lib.Worker:
  """A fresh interpreter serving `module` (small_net_jax_worker or small_net_torch_worker),
  importing alexnet_jax from `tree` (python -P: not from the working directory)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (tree, env.get('PYTHONPATH')) if p)
  return worker_lib.Worker(name, [sys.executable, '-P', '-m',
                                  f'alexnet_jax.benchmarks.{module}'],
                           timeout_s=timeout_s, env=env)


def _module(impl: str) -> str:
  return 'small_net_torch_worker' if impl.startswith('torch') else 'small_net_jax_worker'


def run(impls: list[str], settings: dict, *, before: str = '', windows: int, pause_s: float,
        peak_tflops: float = 0.0, timeout_s: float = TIMEOUT_S, net_impl: str = 'auto',
        log: Callable = print) -> list[dict]:
  """Every implementation's windows by the method above; one record each (record()), with the
  ratios to ours (add_ratios). settings: activation, batch_size, image_size, num_images,
  num_classes, eval_every, segments, warmup. net_impl: the layers of `ours` (figure1.net.CHOICES;
  'auto' per backend); `before` runs its revision's default. A JAX record's net_impl says
  which layers ran."""
  workers, infos = [], []
  with tempfile.TemporaryDirectory(prefix='small-net-before-') as directory:
    names = list(impls) + (['before'] if before else [])
    try:
      for name in names:
        if name == 'before':
          workers.append(start_worker(name, _module('ours'), before_tree(before, directory),
                                      timeout_s))
        else:
          workers.append(start_worker(name, _module(name), timeout_s=timeout_s))
        log(f'{name}: compiling (pid {workers[-1].pid})', flush=True)
        spec = dict(settings, impl=name)
        if name == 'ours' and net_impl != 'auto':
          spec['net_impl'] = net_impl
        infos.append(workers[-1].request('setup', spec=spec))
        worker_lib.settle(workers[-1].pid, pause_s)
      timed = [[] for _ in workers]
      for round_index in range(windows):
        shift = round_index % len(workers)
        for i in list(range(len(workers)))[shift:] + list(range(len(workers)))[:shift]:
          reply = workers[i].request('window')
          timed[i].append({**reply, **worker_lib.settle(workers[i].pid, pause_s)})
        log(f'round {round_index + 1}/{windows}: ' + ', '.join(
            f'{n} {1e3 * t[-1]["steps_s"] / (settings["eval_every"] * settings["segments"]):.1f}'
            ' ms' for n, t in zip(names, timed)), flush=True)
      peak_worker = next((w for w in workers if w.name in ('ours', 'before')), None)
      if peak_worker is None:
        workers.append(start_worker('matmul_peak', 'small_net_jax_worker', timeout_s=timeout_s))
        workers[-1].request('setup', spec={'impl': 'matmul_peak'})
        peak_worker = workers[-1]
      peak = peak_worker.request('peak', peak_tflops=peak_tflops)
    finally:
      for w in workers:
        w.close()
  records = [record(name, info, windows_of, peak, settings)
             for name, info, windows_of in zip(names, infos, timed)]
  add_ratios(records, 'ours' if 'ours' in names else names[0])
  return records


def record(name: str, info: dict, windows: list[dict], peak: dict, settings: dict) -> dict:
  """One implementation's medians over its windows: step ms, img/s and MFU of the SGD step,
  full-pass ms, and the protocol's img/s and MFU (steps and full passes together)."""
  batch, k, segments = settings['batch_size'], settings['eval_every'], settings['segments']
  steps = k * segments
  step_s = statistics.median(w['steps_s'] / steps for w in windows)
  pass_s = statistics.median(w['pass_s'] / segments for w in windows)
  protocol_s = statistics.median((w['steps_s'] + w['pass_s']) / steps for w in windows)
  size, classes = settings['image_size'], settings['num_classes']
  train_flops = train_flops_per_image(size, classes) * batch
  pass_flops = forward_flops_per_image(size, classes) * settings['num_images']
  peak_flops = peak['peak_flops']
  return {'impl': name, **settings, 'step_ms': 1e3 * step_s, 'img_s': batch / step_s,
          'mfu': train_flops / step_s / peak_flops, 'full_pass_ms': 1e3 * pass_s,
          'protocol_img_s': batch / protocol_s,
          'protocol_mfu': (train_flops + pass_flops / k) / protocol_s / peak_flops,
          'window_step_ms': [round(1e3 * w['steps_s'] / steps, 2) for w in windows],
          'window_pass_ms': [round(1e3 * w['pass_s'] / segments, 1) for w in windows],
          'pause_cpu_ms_max': max(w['after_cpu_ms'] for w in windows),
          'final_loss': windows[-1]['loss'], 'peak_gflops': peak_flops / 1e9,
          'peak_source': peak['peak_source'], **info}


def add_ratios(records: list[dict], against: str) -> None:
  """Each record's time over ours' (`against`'s): above 1.0, ours is faster. The SGD step's
  and the protocol's."""
  base = next(r for r in records if r['impl'] == against)
  for r in records:
    r['ratio_step'] = r['step_ms'] / base['step_ms']
    r['ratio_protocol'] = base['protocol_img_s'] / r['protocol_img_s']


def table(records: list[dict]) -> list[str]:
  r0 = records[0]
  against = next(r['impl'] for r in records if r['ratio_step'] == 1.0)
  lines = [f'{time.strftime("%Y-%m-%d")} | {os.cpu_count()} host cores | batch '
           f'{r0["batch_size"]}, {r0["image_size"]} px, {r0["activation"]}, full pass over '
           f'{r0["num_images"]} images every {r0["eval_every"]} steps | MFU over '
           f'{r0["peak_gflops"]:.0f} GFLOP/s: {r0["peak_source"]} | each implementation in '
           'its own process', '',
           '| impl | framework | step ms | img/s | MFU | full pass ms | protocol img/s | '
           f'protocol MFU | step: it / {against} | protocol: it / {against} |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in records:
    lines.append(f'| {r["impl"]} | {r["framework"]} | {r["step_ms"]:.1f} | {r["img_s"]:.0f} | '
                 f'{100 * r["mfu"]:.1f} % | {r["full_pass_ms"]:.0f} | '
                 f'{r["protocol_img_s"]:.0f} | {100 * r["protocol_mfu"]:.1f} % | '
                 f'{r["ratio_step"]:.2f} | {r["ratio_protocol"]:.2f} |')
  return lines
