"""alexnet_jax/benchmarks/isolated.py and worker.py: the fair method's harness at a tiny size (a
width-reduced net, 67 px, batch 2, one-step windows). It returns one record per implementation
and setting with the fields docs/performance.md names, each implementation in a process of its
own (pids apart from each other and from this one, torch never loaded beside ours nor JAX beside
torch), ratios as the other's step time over ours; a worker that fails or falls silent is one
error, never a hang. No speed is asserted."""
import os
import re
import statistics
import subprocess
import sys
import time

import pytest

from alexnet_jax.benchmarks import isolated
from alexnet_jax.benchmarks import worker
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from tests import helpers

SETTING = {'batch': 2, 'dtype': 'float32', 'lrn': True, 'image_size': 67, 'num_classes': 10}
# A given peak: the matmul that measures it is the command's to test (tests/tools/).
TIMING = {'warmup': 0, 'steps': 1, 'windows': 2, 'pause_s': 0.05, 'peak_tflops': 1.0,
          'timeout_s': 300, 'log': lambda *a, **k: None}


def ours_spec() -> dict:
  config = helpers.alexnet_config.get_config('tiny').to_dict()
  return isolated.ours_specs(config, lrn=True, meshes=[(1, 1)], lrn_impls=['fast'],
                             conv_impls=['auto'], pool_impls=['fast'],
                             nonfinite_guards=(True,))[0]


def test_docs_name_every_record_field():
  with open(os.path.join(helpers.ROOT, 'docs', 'performance.md')) as f:
    page = f.read()
  section = page[page.index('## How speed is compared'):]
  section = section[:section.index('\n## ', 1)]
  missing = [k for k in isolated.RECORD_FIELDS if f'`{k}`' not in section]
  assert not missing, missing


def test_ours_and_torch_each_in_a_process_of_their_own():
  pytest.importorskip('torch')
  specs = [ours_spec(), {'impl': 'torch_eager'}]
  records = isolated.time_setting(specs, SETTING, **TIMING)
  assert [r['impl'] for r in records] == ['ours', 'torch_eager']
  ours, torch = records
  for r in records:
    assert set(isolated.RECORD_FIELDS) <= set(r), set(isolated.RECORD_FIELDS) - set(r)
    assert r['batch'] == 2 and r['lrn'] is True and r['isolation'] == 'process'
    assert len(r['window_ms']) == 2 and r['step_ms'] > 0 and r['final_loss'] == r['final_loss']
    assert r['step_ms'] == pytest.approx(statistics.median(r['window_ms']), rel=1e-3, abs=0.1)
    assert r['img_s'] == pytest.approx(2e3 / r['step_ms'])
    assert r['parent_pid'] == os.getpid() and r['os_threads'] >= 1
    assert not os.path.exists(f'/proc/{r["pid"]}')  # the worker is gone
  assert len({ours['pid'], torch['pid'], os.getpid()}) == 3
  assert ours['frameworks'] == ['jax'] and torch['frameworks'] == ['torch']
  assert torch['torch'].split('+')[0].count('.') >= 1 and torch['torch_threads'] >= 1
  # The width-reduced net has fewer FLOPs than the yardstick's full one; both are counted.
  assert 0 < ours['model_gflop_per_step'] < torch['model_gflop_per_step']
  # The ratio is torch's time over ours, from the two records; the same peak divides both MFUs.
  assert ours['ratio_vs'] == {'torch_eager': torch['step_ms'] / ours['step_ms']}
  assert ours['peak_tflops_per_device'] == torch['peak_tflops_per_device'] == 1.0
  for r in records:
    want = r['model_gflop_per_step'] * 1e9 / (r['step_ms'] / 1e3) / (
        r['peak_tflops_per_device'] * 1e12)
    assert r['mfu'] == pytest.approx(want)


def test_the_torch_worker_loads_no_jax():
  # Without torch too (CI): the torch worker's module and the yardstick it runs import no JAX.
  code = ('import sys; import alexnet_jax.benchmarks.torch_worker; '
          'print(sorted(m for m in ("jax", "jaxlib", "flax", "torch") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], cwd=helpers.ROOT, capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == '[]'


def test_nothing_to_time_is_a_user_error():
  with pytest.raises(UserError, match='nothing to time'):
    isolated.run({}, ours=False, yardsticks=[], batch_sizes=[2], dtypes=['float32'],
                 lrn_values=[True], meshes=[(1, 1)], lrn_impls=['fast'], conv_impls=['auto'],
                 pool_impls=['fast'], image_size=67, num_classes=10, warmup=0, steps=1,
                 windows=1, pause_s=0)


def test_a_bad_implementation_is_one_error_from_its_worker():
  t0 = time.perf_counter()
  with pytest.raises(UserError, match="'no_such_net' is neither a file nor one of"):
    isolated.time_setting([{'impl': 'no_such_net'}], SETTING, **TIMING)
  assert time.perf_counter() - t0 < 60


def test_a_worker_that_dies_is_one_error_with_its_last_words():
  handle = worker.Worker('dying', [sys.executable, '-c', 'import sys; sys.exit("out of luck")'],
                         timeout_s=60)
  with pytest.raises(RunFailure, match=r'the dying worker \(pid \d+\) failed: exited \(1\) '
                     r"during 'setup' \(out of luck\); its log: "):
    handle.request('setup', spec={})


def test_a_silent_worker_is_a_timeout_not_a_hang():
  handle = worker.Worker('silent', [sys.executable, '-c', 'import time; time.sleep(60)'],
                         timeout_s=1)
  t0 = time.perf_counter()
  with pytest.raises(RunFailure, match=r"no answer to 'window' within 1 s"):
    handle.request('window', steps=1)
  assert time.perf_counter() - t0 < 10
  assert handle.proc.poll() is not None  # killed, not left behind


def test_settle_sees_a_spinning_tail_and_its_end():
  # A child that, once started, spins for 0.2 s and then sleeps: the pause sees its CPU and
  # when it stopped; a child that only sleeps shows none.
  spin = 'while time.time() - t < 0.2: pass\n'
  for spins in (True, False):
    code = ('import sys, time\nprint("ready", flush=True)\nt = time.time()\n' +
            (spin if spins else '') + 'time.sleep(30)')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
      assert proc.stdout.readline() == 'ready\n'
      tail = worker.settle(proc.pid, 0.6)
    finally:
      proc.kill()
      proc.wait()
    if spins:
      assert tail['after_cpu_ms'] > 50 and 30 < tail['busy_until_ms'] < 500, tail
    else:
      assert tail['after_cpu_ms'] < 10, tail


def test_yardsticks_start_in_the_yardstick_environment(monkeypatch):
  # Ours in the command's environment (with its malloc tunables), every yardstick in the one
  # the user gave (tools/benchmark.py passes huge_pages.users_environment).
  started = []

  class Stop(Exception):
    pass

  class FakeWorker:
    pid = 0

    def request(self, *args, **kwargs):
      return {}

    def close(self):
      pass

  def fake_start(impl, timeout_s, env=None):
    started.append((impl, env))
    if len(started) == 3:
      raise Stop
    return FakeWorker()

  monkeypatch.setattr(isolated, 'start_worker', fake_start)
  monkeypatch.setattr(worker, 'settle', lambda pid, pause_s: {})
  specs = [ours_spec(), {'impl': 'plain_jax'}, {'impl': 'torch_eager'}]
  with pytest.raises(Stop):
    isolated.time_setting(specs, SETTING, **TIMING, env={'A': 'ours'},
                          yardstick_env={'A': 'user'})
  assert started == [('ours', {'A': 'ours'}), ('plain_jax', {'A': 'user'}),
                     ('torch_eager', {'A': 'user'})]
