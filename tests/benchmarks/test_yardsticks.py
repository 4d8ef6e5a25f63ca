"""alexnet_jax/benchmarks/yardsticks/: the benchmark's plain-JAX and PyTorch yardsticks are the
paper's network (parameter count from its layer table, shapes, init, LRN against the formula in
float64, a step that learns) and one and the same network (equal logits from equal weights); the
PyTorch tests skip where torch is not installed (requirements-torch.txt)."""
import functools
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.benchmarks.yardsticks import plain_jax
from alexnet_jax.benchmarks.yardsticks import pytorch as torch_yardstick
from tests import helpers


def _large_input(shape=(2, 5, 5, 16)) -> np.ndarray:
  # Values ~50: alpha * sum a^2 ~ 5 dominates k = 2, so a wrong alpha cannot hide.
  return 50.0 * np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_paper_param_count():
  assert helpers.paper_param_count() == 60_965_224
  assert plain_jax.param_count(1000) == 60_965_224
  assert plain_jax.param_count(10) == helpers.paper_param_count(10)


def test_plain_jax_shapes_at_227():
  # eval_shape traces init and forward without computing: fc6 must take conv5's 6x6x256.
  params = jax.eval_shape(plain_jax.init_params, jax.random.PRNGKey(0))
  assert params['fc6']['kernel'].shape == (9216, 4096) == (plain_jax.feature_size(), 4096)
  assert params['conv2']['kernel'].shape == (5, 5, 48, 256)  # 2 groups: half the inputs
  logits = jax.eval_shape(functools.partial(plain_jax.forward, lrn=True, train=False), params,
                          jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32))
  assert logits.shape == (1, 1000) and logits.dtype == jnp.float32


def test_plain_jax_init_is_the_papers():
  init = jax.jit(plain_jax.init_params, static_argnums=1, static_argnames='image_size')
  params = init(jax.random.PRNGKey(0), 10, image_size=67)
  for name, p in params.items():
    want = 1.0 if name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    np.testing.assert_array_equal(p['bias'], want, err_msg=name)
  assert abs(float(jnp.std(params['conv3']['kernel'])) - 0.01) < 1e-3


def test_plain_jax_lrn_matches_formula():
  x = _large_input()
  got = np.asarray(plain_jax.local_response_norm(jnp.asarray(x)), np.float64)
  np.testing.assert_allclose(got, helpers.lrn_float64(x), rtol=1e-5)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_plain_jax_step_learns_one_batch(dtype):
  step, carry, batches = plain_jax.build_step(4, dtype, image_size=67, num_classes=10)
  images, labels = batches[0]
  assert images.shape == (4, 67, 67, 3) and images.dtype == plain_jax.DTYPES[dtype]
  assert len(batches) == 2 and int(labels.min()) >= 0 and int(labels.max()) < 10
  assert carry[0]['conv1']['kernel'].dtype == jnp.float32  # params stay float32
  compiled = step.lower(*carry, *batches[0]).compile()
  losses = []
  for _ in range(3):
    out = compiled(*carry, *batches[0])
    carry = out[:-1]
    losses.append(float(out[-1]))
  assert np.all(np.isfinite(losses)), losses
  # The paper's lr and unit biases overshoot on a 4-image batch (the 2nd loss can rise, as
  # the fc7 activations ~1 make fc8's first update large); two updates still lower it.
  assert losses[2] < losses[0], losses


def test_torch_yardstick_imports_without_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
  spec = importlib.util.spec_from_file_location('yardstick_without_torch',
                                                torch_yardstick.__file__)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert not module.available()
  assert module.feature_size(227) == plain_jax.feature_size(227) == 9216  # fc6's input
  assert module.feature_size(99) == plain_jax.feature_size(99) == 2 * 2 * 256


def test_torch_param_count():
  pytest.importorskip('torch')
  assert torch_yardstick.param_count(1000) == helpers.paper_param_count() == 60_965_224
  assert torch_yardstick.param_count(10) == helpers.paper_param_count(10)


def test_torch_lrn_matches_formula():
  torch = pytest.importorskip('torch')
  x = _large_input()  # NHWC; torch normalises over dim 1 of NCHW
  got = torch_yardstick.local_response_norm()(torch.from_numpy(x).permute(0, 3, 1, 2))
  got = got.permute(0, 2, 3, 1).double().numpy()
  np.testing.assert_allclose(got, helpers.lrn_float64(x), rtol=1e-5)


def test_torch_step_timer_runs_eagerly():
  pytest.importorskip('torch')
  timer = torch_yardstick.TorchStepTimer(4, image_size=67, num_classes=10)
  assert timer.compile_s > 0
  timer.window(2)
  result = timer.result()
  assert result['step_s'] > 0 and result['window_s'] == timer.times
  assert np.isfinite(result['final_loss']) and result['compiled'] is None


@pytest.mark.slow
def test_torch_step_timer_compiled():
  pytest.importorskip('torch')
  timer = torch_yardstick.TorchStepTimer(4, 'bfloat16', compile=True, image_size=67,
                                         num_classes=10)
  timer.window(2)
  assert np.isfinite(timer.result()['final_loss'])


def _torch_model_with_jax_weights(params, num_classes, image_size):
  """The PyTorch network carrying plain_jax's weights, layer by layer."""
  import torch  # pylint: disable=g-import-not-at-top
  model = torch_yardstick.build_model(num_classes, lrn=True, image_size=image_size)
  convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
  denses = [m for m in model if isinstance(m, torch.nn.Linear)]
  assert len(convs) == 5 and len(denses) == 3
  as_torch = lambda a: torch.from_numpy(np.array(a, np.float32))
  with torch.no_grad():
    for i, conv in enumerate(convs):
      p = params[f'conv{i + 1}']
      # HWIO -> OIHW; with groups, both put group g's outputs in O's g-th block.
      conv.weight.copy_(as_torch(p['kernel']).permute(3, 2, 0, 1))
      conv.bias.copy_(as_torch(p['bias']))
    for i, dense in enumerate(denses):
      p = params[f'fc{i + 6}']
      kernel = as_torch(p['kernel'])  # (in, out)
      if i == 0:
        # plain_jax flattens NHWC as (H, W, C), torch NCHW as (C, H, W): reorder fc6's rows.
        channels = plain_jax.CONVS[-1][1]
        side = int(round((kernel.shape[0] // channels) ** 0.5))
        kernel = kernel.reshape(side, side, channels, -1).permute(2, 0, 1, 3)
        kernel = kernel.reshape(channels * side * side, -1)
      dense.weight.copy_(kernel.T)
      dense.bias.copy_(as_torch(p['bias']))
  return model.eval()


# 67 px ends conv5's pooling at 1x1; 99 px at 2x2, where the flatten order matters.
@pytest.mark.parametrize('image_size', [67, 99])
def test_torch_and_plain_jax_are_the_same_network(image_size):
  torch = pytest.importorskip('torch')
  num_classes = 10
  key_params, key_bias, key_images = jax.random.split(jax.random.PRNGKey(1), 3)
  params = plain_jax.init_params(key_params, num_classes, image_size=image_size)
  # Random biases (the paper's are 0 or 1) and weights 6-30x the paper's, so that LRN acts:
  # alpha * sum a^2 is then ~0.6 against k = 2 at both LRNs (with N(0, 0.01) weights, ~0).
  bias_keys = jax.random.split(key_bias, len(params))
  params = {name: {'kernel': (30.0 if name == 'conv1' else 6.0) * p['kernel'],
                   'bias': 0.1 * jax.random.normal(k, p['bias'].shape)}
            for (name, p), k in zip(sorted(params.items()), bias_keys)}
  images = 10.0 * jax.random.normal(key_images, (2, image_size, image_size, 3))
  forward = jax.jit(plain_jax.forward, static_argnames=('lrn', 'train'))
  want = np.asarray(forward(params, images, lrn=True, train=False))
  without_lrn = np.asarray(forward(params, images, lrn=False, train=False))
  assert np.abs(want - without_lrn).max() > 0.5 * np.abs(want).max()  # LRN shapes the logits

  model = _torch_model_with_jax_weights(params, num_classes, image_size)
  with torch.no_grad():
    got = model(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()).numpy()
  assert got.shape == want.shape == (2, num_classes)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
