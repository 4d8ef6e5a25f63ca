"""The small-net benchmark (tools/small_net_benchmark.py): its FLOP count by hand, its PyTorch
yardstick the same net and update as figure1's (equal logits and an equal SGD step from equal
weights; skipped without torch), the worker protocol of benchmarks/alternating.py (alternation,
stray output, a dying worker), and the command end to end on a tiny setting."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.benchmarks import alternating
from alexnet_jax.benchmarks import small_net_timing
from alexnet_jax.benchmarks.yardsticks import small_pytorch
from alexnet_jax.errors import RunFailure
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import train
from tests import helpers


def test_flops_of_the_figure1_net_by_hand():
  # 32 px: conv1 32*32 outputs x 32 x 5*5*3, conv2 16*16 x 32 x 5*5*32, conv3 8*8 x 64 x
  # 5*5*32, dense 4*4*64 x 10 multiply-adds.
  macs = 32 * 32 * 32 * 75 + 16 * 16 * 32 * 800 + 8 * 8 * 64 * 800 + 1024 * 10
  assert macs == 12_298_240
  assert small_net_timing.forward_flops_per_image(32, 10) == 2 * macs
  assert small_net_timing.train_flops_per_image(32, 10) == 6 * macs
  # 16 px: 16 -> 8 -> 4 -> 2, the dense layer 2*2*64 -> 10.
  assert small_net_timing.forward_flops_per_image(16, 10) == 2 * (
      16 * 16 * 32 * 75 + 8 * 8 * 32 * 800 + 4 * 4 * 64 * 800 + 256 * 10)


def _params_and_batch(activation, size=16, batch=6, seed=1):
  params = net.init_params(seed, 'modern', activation, size)
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  y[-1] = 9  # Loop counts the classes from the labels: 10
  return params, x, y


def test_torch_net_and_step_equal_ours():
  # tanh: negative activations, so that the pooling's padding must be -inf, not 0.
  torch = pytest.importorskip('torch')
  activation = 'tanh'
  params, x, y = _params_and_batch(activation)
  model = small_pytorch.build_model(activation, 10, x.shape[1])
  small_pytorch.load_params(model, params)
  nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  want = np.asarray(net.Net(activation).apply({'params': params}, x))
  with torch.no_grad():
    got = model(nchw).numpy()
  assert np.abs(want).max() > 0.1  # logits that could differ
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  # One SGD step with momentum from zero velocity, then a second: torch's
  # v <- mu v + g, w <- w - lr v against ours, v <- mu v - lr g, w <- w + v.
  optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
  for _ in range(2):
    loss = torch.nn.functional.cross_entropy(model(nchw), torch.from_numpy(y.astype(np.int64)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  loop = train.Loop(x, y, activation)
  ours, _, our_losses = loop.steps(params, jax.tree.map(np.zeros_like, params),
                                   np.tile(np.arange(len(y)), (2, 1)), 0.05, 0.9)
  assert loss.item() == pytest.approx(float(our_losses[-1]), rel=1e-5)
  expected = small_pytorch.build_model(activation, 10, x.shape[1])
  small_pytorch.load_params(expected, jax.tree.map(np.asarray, ours))
  for got_p, want_p in zip(model.parameters(), expected.parameters()):
    np.testing.assert_allclose(got_p.detach().numpy(), want_p.detach().numpy(), rtol=1e-4,
                               atol=1e-6)


def test_torch_timer_steps_and_its_full_pass():
  torch = pytest.importorskip('torch')
  x, y = small_net_timing.synthetic_set(40, 16, 10)
  timer = small_pytorch.TorchSmallNetTimer(x, y, batch_size=10, eval_every=2, lr=0.05)
  before = [p.detach().clone() for p in timer.model.parameters()]
  result = timer.window()
  assert result['steps_s'] > 0 and result['pass_s'] > 0
  assert all(not torch.equal(a, b) for a, b in zip(before, timer.model.parameters()))
  with torch.no_grad():  # the full pass: the whole set in eval mode, error and mean loss
    logits = timer.model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  assert result['error'] == np.mean(np.argmax(logits, -1) != y)
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  assert result['loss'] == pytest.approx(-log_p[np.arange(40), y].mean(), rel=1e-5)
  assert 'torch' in timer.info()['framework'] and timer.info()['threads'] >= 1


# --- the worker protocol, on tiny Python workers (no JAX in them) ---

_FAKE_WORKER = '''
import sys, time
from alexnet_jax.benchmarks import alternating
name = sys.argv[1]
print('a stray line on stdout', flush=True)
count = [0]
def window():
  count[0] += 1
  with open(sys.argv[2], 'a') as f:
    f.write(f'{name}{count[0]} ')
  return {'steps_s': 0.1 * count[0], 'pass_s': 0.0, 'loss': 1.0, 'error': 0.5}
alternating.serve({'framework': name}, window)
'''


def _fake(name, log, script=_FAKE_WORKER):
  return alternating.Worker(name, [sys.executable, '-c', script, name, str(log)],
                            cwd=helpers.ROOT)


def test_windows_alternate_and_stray_output_is_ignored(tmp_path):
  log = tmp_path / 'order.txt'
  out = alternating.alternate([_fake('a', log), _fake('b', log)], windows=3)
  assert log.read_text().split() == ['a1', 'b1', 'a2', 'b2', 'a3', 'b3']  # in turn
  assert [w['steps_s'] for w in out['a']] == pytest.approx([0.1, 0.2, 0.3])
  assert set(out) == {'a', 'b'}


def test_a_worker_that_dies_is_one_failure_with_its_last_words(tmp_path):
  dying = "import sys; print('worker broke: out of memory', file=sys.stderr); sys.exit(7)"
  with pytest.raises(RunFailure, match=r'exit status 7.*out of memory'):
    alternating.alternate([_fake('x', tmp_path / 'log', dying)], windows=1)


def test_environment_for_another_framework_drops_our_huge_pages(monkeypatch):
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
  assert alternating.environment(False)['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'
  assert alternating.environment(False)['ALEXNET_JAX_HUGE_PAGES'] == '0'
  assert 'hugetlb=1' in alternating.environment(True)['GLIBC_TUNABLES']


# --- the command ---


def test_command_prints_a_record_per_impl_and_the_table(tmp_path):
  impls = 'ours,torch_eager' if small_pytorch.available() else 'ours'
  out = tmp_path / 'lines.jsonl'
  proc = helpers.run_tool('small_net_benchmark', f'--impls={impls}', '--windows=2',
                          '--num_images=20', '--batch_size=10', '--image_size=16',
                          '--eval_every=2', '--pause_s=0', '--peak_tflops=0.1',
                          f'--json_out={out}')
  assert proc.returncode == 0, proc.stderr
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['impl'] for r in records] == impls.split(',')
  for r in records:
    assert r['img_s'] == pytest.approx(10 / (r['step_ms'] / 1e3))
    assert len(r['window_step_ms']) == 2 and np.isfinite(r['final_loss'])
    assert r['peak_gflops'] == 100 and r['mfu'] == pytest.approx(
        small_net_timing.train_flops_per_image(16, 10) * 10 / (r['step_ms'] / 1e3) / 1e11)
  assert records[0]['ratio_step'] == 1.0
  assert '| ours | jax' in proc.stdout and 'protocol img/s' in proc.stdout


def test_command_refuses_an_unknown_impl_in_one_line():
  proc = helpers.run_tool('small_net_benchmark', '--impls=ours,caffe')
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error: --impls') and len(
      proc.stderr.strip().splitlines()) == 1
