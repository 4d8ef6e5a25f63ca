"""The train loop end to end through launch.py: real images, metrics, checkpoints, exact resume."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax.model import alexnet
from alexnet_jax import evaluation
from alexnet_jax import optim
from alexnet_jax import train
from configs import alexnet as alexnet_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(workdir, *overrides, config='configs/alexnet.py:tiny', check=True):
  cmd = [sys.executable, 'launch.py', f'--config={config}', f'--workdir={workdir}', *overrides]
  # One CPU device (conftest gives this process 8 for the sharding tests).
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS='')
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f'{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
  return proc


def final_params(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  state = ocp.StandardCheckpointer().restore(os.path.join(directory, str(step), 'state'))
  return step, state['params'], state['opt_state']


def train_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return {r['step']: r for r in records if 'train/loss' in r}


def test_resume_is_bit_identical(tmp_path):
  k = 3
  # SGD with the paper's update and a step decay inside the second half, dropout on.
  common = ['--config.optimizer.name=sgd', '--config.optimizer.schedule=step',
            '--config.optimizer.step_epochs=0.04', '--config.optimizer.lr=0.01',
            '--config.train.eval_every_epochs=100']
  straight, stopped = str(tmp_path / 'straight'), str(tmp_path / 'stopped')
  launch(straight, *common, f'--config.train.num_steps={2 * k}')
  launch(stopped, *common, f'--config.train.num_steps={k}')
  out = launch(stopped, *common, f'--config.train.num_steps={2 * k}').stdout
  assert 'resumed from' in out and f'at step {k}' in out

  step_a, params_a, opt_a = final_params(straight)
  step_b, params_b, opt_b = final_params(stopped)
  assert step_a == step_b == 2 * k
  for a, b in zip(jax.tree.leaves((params_a, opt_a)), jax.tree.leaves((params_b, opt_b))):
    np.testing.assert_array_equal(a, b)
  # The data order continued too: the same per-step losses after the restart.
  ra, rb = train_records(straight), train_records(stopped)
  for step in range(k + 1, 2 * k + 1):
    assert ra[step]['train/loss'] == rb[step]['train/loss']
  # And training moved the params (a resume that restored nothing would also "match").
  _, params_k, _ = final_params(str(tmp_path / 'stopped'))
  fresh = train.create_train_state(
      alexnet.from_config(alexnet_config.get_config('tiny').model),
      optim.create_optimizer(alexnet_config.get_config('tiny').optimizer, 1, 1),
      jax.random.PRNGKey(0), 67).params
  assert not np.array_equal(params_k['fc8']['kernel'], fresh['fc8']['kernel'])


def test_demo_pipeline_end_to_end_writes_metrics_and_summary(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = launch(workdir, '--config.train.num_steps=4', '--config.train.log_every_steps=2')
  assert 'step 4/4' in proc.stdout and 'ETA' in proc.stdout and 'img/s' in proc.stdout
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['final_step'] == 4
  assert summary['eval']['count'] == 240  # every val image of the embedded data, once
  assert 0.0 <= summary['eval']['top1'] <= summary['eval']['top5'] <= 1.0
  records = train_records(workdir)
  assert sorted(records) == [2, 4]
  assert all(np.isfinite(r['train/loss']) for r in records.values())
  assert os.listdir(os.path.join(workdir, 'tensorboard'))


def test_ten_crop_eval_step_averages_softmax_over_crops():
  model = alexnet.AlexNet(width=0.125, num_classes=5)
  # Jitted: op-by-op (eager) init and eval compiled ~400 small programs (20 s of this test).
  params = jax.jit(lambda key: model.init({'params': key}, jnp.zeros((1, 67, 67, 3)),
                                          train=False)['params'])(jax.random.PRNGKey(0))
  state = train.TrainState.create(apply_fn=model.apply, params=params,
                                  tx=optim.paper_sgd(0.01), rng=jax.random.PRNGKey(1))
  images = jax.random.normal(jax.random.PRNGKey(2), (3, 10, 67, 67, 3))
  labels = jnp.array([0, 3, 4])
  mask = jnp.array([True, True, False])
  sums = jax.jit(evaluation.eval_step)(state, {'image': images, 'label': labels, 'mask': mask})
  # Independent: each crop through the net alone, softmax in float64, averaged.
  one_crop = jax.jit(lambda image: model.apply({'params': params}, image[None], train=False)[0])
  probs = np.stack([np.mean([_softmax64(one_crop(images[b, c])) for c in range(10)], axis=0)
                    for b in range(3)])
  ranks = np.argsort(-probs, axis=1)
  assert float(sums['count']) == 2
  assert float(sums['top1']) == sum(ranks[b, 0] == labels[b] for b in range(2))
  assert float(sums['top5']) == 2  # 5 classes: top-5 always holds
  np.testing.assert_allclose(float(sums['loss']),
                             -sum(np.log(probs[b, labels[b]]) for b in range(2)), rtol=1e-5)


def _softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max())
  return z / z.sum()
