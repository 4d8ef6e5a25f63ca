"""alexnet_jax/tools/benchmark.py and measure.py: the model FLOP count against the paper's layer
table (4.3 GFLOP per image for a training step), counted from the flax model and, without JAX,
from the PyTorch yardstick's layers; and smoke runs of the command (every setting and yardstick
present, each in a worker process of its own, positive and consistent figures, ratios computed
from its own records as the other's time over ours, one error line for a bad flag, including
one that only a worker finds); speed itself is never asserted (figures come from the command,
as ratios in one run)."""
import json

import pytest

from alexnet_jax.benchmarks import measure
from alexnet_jax.benchmarks.yardsticks import pytorch
from alexnet_jax.model import alexnet
from tests import helpers


def test_model_flops_match_the_layer_table():
  # (output side, output maps, kernel k, input maps per kernel) for conv1-5; then the FCs.
  convs = [(55, 96, 11, 3), (27, 256, 5, 48), (13, 384, 3, 256), (13, 384, 3, 192),
           (13, 256, 3, 192)]
  macs = sum(side * side * maps * k * k * cin for side, maps, k, cin in convs)
  macs += 9216 * 4096 + 4096 * 4096 + 4096 * 1000
  expected = 3 * 2 * macs  # forward + backward (input and weight gradients)
  assert 4.2e9 < expected < 4.4e9  # 4.3 GFLOP per image for the training step
  assert measure.model_flops_per_image(alexnet.AlexNet(), 227) == expected
  assert pytorch.model_flops_per_image(227, 1000) == expected
  # 10 classes: only fc8's term changes.
  assert pytorch.model_flops_per_image(227, 10) == expected - 3 * 2 * 4096 * 990
  assert measure.model_flops_per_image(alexnet.AlexNet(num_classes=10), 227) == (
      pytorch.model_flops_per_image(227, 10))


def run_benchmark(*args, devices=2):
  proc = helpers.run_tool('benchmark', *args, env=helpers.cpu_env(devices), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
  return records, proc.stdout


def test_step_benchmark_runs_every_setting_and_prints_ratios():
  # The repository's own plain-JAX yardstick: a fresh clone prints the ratio. Each of the
  # three steps in its own worker process; the matmul peak measured in the run.
  records, out = run_benchmark(
      '--config=configs/alexnet.py:tiny', '--batch_sizes=4', '--image_size=67',
      '--num_classes=10', '--meshes=1x1,1x2', '--windows=2', '--steps=1', '--warmup=0',
      '--pause_s=0.05')
  ours = [r for r in records if r['impl'] == 'ours']
  assert sorted(r['mesh'] for r in ours) == ['1x1', '1x2']
  assert [r['impl'] for r in records] == ['plain_jax', 'ours', 'ours']  # yardsticks first
  assert len({r['pid'] for r in records}) == 3
  for r in records:
    assert r['img_s'] > 0 and len(r['window_ms']) == 2 and r['compile_s'] > 0
    assert r['final_loss'] == r['final_loss']  # finite, not NaN
    assert 0 < r['mfu'] < 1 and 'matmul measured here' in r['peak_source']
    assert r['device_memory_mb'] > 0 and r['host_rss_peak_mb'] > 0
    assert r['frameworks'] == ['jax'] and r['pid'] != r['parent_pid']
    assert r['arch'] == 'alexnet'
  ref = next(y for y in records if y['impl'] == 'plain_jax')
  for r in ours:
    assert r['ratio_vs'] == {'plain_jax': ref['step_ms'] / r['step_ms']}  # its time / ours
  assert '| ours |' in out and 'GFLOP/s' in out and 'plain_jax / ours' in out


def test_step_benchmark_times_the_net_the_config_names():
  # configs/cifar10.py names cuda-convnet's net: its step is timed at the config's 24 px and 10
  # classes, with its own FLOP count, and no AlexNet yardstick beside it.
  records, out = run_benchmark('--config=configs/cifar10.py', '--batch_sizes=4',
                               '--windows=1', '--steps=1', '--warmup=0', '--pause_s=0.05',
                               devices=1)
  [r] = records
  assert r['impl'] == 'ours' and r['arch'] == 'cuda_convnet_cifar10'
  assert (r['image_size'], r['num_classes']) == (24, 10)
  assert r['model_gflop_per_step'] == pytest.approx(4 * 3 * 2 * 18_517_248 / 1e9)
  assert 0 < r['mfu'] < 1 and r['final_loss'] == r['final_loss']
  assert "model.arch='cuda_convnet_cifar10'" in out and 'no yardstick' in out
  # Asked for by name, an AlexNet yardstick is refused in one line.
  proc = helpers.run_tool('benchmark', '--config=configs/cifar10.py', '--yardsticks=plain_jax',
                          timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().startswith('error:')
  assert "the yardsticks are the paper's AlexNet" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


def test_lrn_benchmark_compares_the_three_implementations():
  records, out = run_benchmark('--mode=lrn', '--batch_sizes=1', '--windows=1', '--steps=1',
                               devices=1)
  assert sorted({r['impl'] for r in records}) == ['autodiff', 'fast', 'reduce_window']
  assert {r['layer'] for r in records} == {'norm1', 'norm2'}
  assert all(r['ms'] > 0 for r in records) and 'vs autodiff' in out


@pytest.mark.parametrize('flag,message', [('--lrn_impls=magic', 'magic'),
                                          ('--meshes=2by1', "'2by1' is not"),
                                          ('--meshes=4x2', 'needs 8 devices'),
                                          ('--yardsticks=nowhere.py', "'nowhere.py' is neither")])
def test_bad_flag_value_is_one_line(flag, message):
  proc = helpers.run_tool('benchmark', '--yardsticks=', flag, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error:') and message in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
