"""The small-net benchmark (tools/small_net_benchmark.py, benchmarks/small_net.py): its FLOP
count by hand, its PyTorch yardstick the same net and update as figure1's (equal logits and two
equal SGD steps from equal weights, its full pass by hand; skipped without torch), the `before`
tree (this package with another revision's figure1/), and the command end to end on a tiny
setting, each implementation in its own process."""
import json
import os
import subprocess

import jax
import numpy as np
import pytest

from alexnet_jax.benchmarks import small_net
from alexnet_jax.benchmarks.yardsticks import small_pytorch
from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import train
from tests import helpers


def test_flops_of_the_figure1_net_by_hand():
  # 32 px: conv1 32*32 outputs x 32 x 5*5*3, conv2 16*16 x 32 x 5*5*32, conv3 8*8 x 64 x
  # 5*5*32, dense 4*4*64 x 10 multiply-adds.
  macs = 32 * 32 * 32 * 75 + 16 * 16 * 32 * 800 + 8 * 8 * 64 * 800 + 1024 * 10
  assert macs == 12_298_240
  assert small_net.CONV_FEATURES == net.CONV_FEATURES == small_pytorch.CONV_FEATURES
  assert small_net.forward_flops_per_image(32, 10) == 2 * macs
  assert small_net.train_flops_per_image(32, 10) == 6 * macs
  # 16 px: 16 -> 8 -> 4 -> 2, the dense layer 2*2*64 -> 10.
  assert small_net.forward_flops_per_image(16, 10) == 2 * (
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
  x, y = small_net.synthetic_set(40, 16, 10)
  timer = small_pytorch.TorchSmallNetTimer(x, y, batch_size=10, eval_every=2, lr=0.05)
  before = [p.detach().clone() for p in timer.model.parameters()]
  result = timer.window()
  assert result['steps_s'] > 0 and result['pass_s'] > 0
  assert all(not torch.equal(a, b) for a, b in zip(before, timer.model.parameters()))
  with torch.no_grad():  # the full pass: the whole set in eval mode, error and mean loss
    logits = timer.model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  assert result['training_error'] == np.mean(np.argmax(logits, -1) != y)
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  assert result['loss'] == pytest.approx(-log_p[np.arange(40), y].mean(), rel=1e-5)
  assert 'torch' in timer.info()['framework'] and timer.info()['torch_threads'] >= 1


# --- the before tree ---


def test_before_tree_is_this_package_with_another_figure1(tmp_path):
  tree = small_net.before_tree('HEAD', str(tmp_path))
  for rel in ('alexnet_jax/figure1/train.py', 'alexnet_jax/figure1/net.py'):
    at_head = subprocess.run(['git', 'show', f'HEAD:{rel}'], cwd=helpers.ROOT,
                             capture_output=True, text=True, check=True).stdout
    with open(os.path.join(tree, rel)) as f:
      assert f.read() == at_head
  with open(os.path.join(tree, 'alexnet_jax/benchmarks/small_net.py')) as f:
    assert f.read() == open(small_net.__file__).read()  # this tree's benchmark code
  with pytest.raises(UserError, match='no-such-revision'):
    small_net.before_tree('no-such-revision', str(tmp_path / 'other'))
  variant = os.path.join(tree, 'alexnet_jax', 'figure1')  # a directory: copied as figure1/
  with open(os.path.join(variant, 'VARIANT'), 'w') as f:
    f.write('x')
  assert os.path.isfile(os.path.join(small_net.before_tree(variant, str(tmp_path / 'v')),
                                     'alexnet_jax', 'figure1', 'VARIANT'))
  worker = small_net.start_worker('before', 'small_net_jax_worker', tree, timeout_s=120)
  try:  # the worker imports the tree's figure1/, not the working directory's
    info = worker.request('setup', spec={'impl': 'matmul_peak'})
  finally:
    worker.close()
  assert info['figure1'] == os.path.join(tree, 'alexnet_jax', 'figure1')


# --- the command ---


def test_command_prints_a_record_per_impl_and_the_table(tmp_path):
  impls = 'ours,torch_eager' if small_pytorch.available() else 'ours'
  out = tmp_path / 'lines.jsonl'
  proc = helpers.run_tool('small_net_benchmark', f'--impls={impls}', '--windows=2',
                          '--num_images=20', '--batch_size=10', '--image_size=16',
                          '--eval_every=2', '--pause_s=0', '--peak_tflops=0.1',
                          '--net_impl=xla', f'--json_out={out}')
  assert proc.returncode == 0, proc.stderr
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['impl'] for r in records] == impls.split(',')
  for r in records:
    assert r['img_s'] == pytest.approx(10 / (r['step_ms'] / 1e3))
    assert r['peak_gflops'] == 100 and r['mfu'] == pytest.approx(
        small_net.train_flops_per_image(16, 10) * 10 / (r['step_ms'] / 1e3) / 1e11)
    assert len(r['window_step_ms']) == 2 and np.isfinite(r['final_loss'])
    assert r['ratio_step'] == pytest.approx(r['step_ms'] / records[0]['step_ms'])
  # Each in its own process, holding its own framework alone.
  assert len({r['pid'] for r in records}) == len(records)
  assert records[0]['frameworks'] == ['jax'] and records[0]['net_impl'] == 'xla'
  assert all(r['frameworks'] == ['torch'] for r in records[1:])
  assert '| ours | jax' in proc.stdout and 'protocol img/s' in proc.stdout


def test_net_impl_flag_offers_the_nets_choices():
  from alexnet_jax.figure1 import net
  from alexnet_jax.tools import small_net_benchmark
  assert small_net_benchmark.NET_IMPLS == net.CHOICES


def test_command_refuses_an_unknown_impl_in_one_line():
  proc = helpers.run_tool('small_net_benchmark', '--impls=ours,caffe')
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error: --impls') and len(
      proc.stderr.strip().splitlines()) == 1
