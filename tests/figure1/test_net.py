"""alexnet_jax/figure1/net.py: each regime's init against its definition (section 5's N(0,
0.01), fan-in normal), the parameter count by hand, pairing (the same seed, the same standard
normal draws for both activations), and the layers' own gradients against XLA's: conv_same's
values and gradients against XLA's convolution in float64 (within 1e-5 of the largest value),
max_pool and its gradient against reduce_window's, ties included."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.figure1 import net
from tests.figure1.helpers import SIZE


def test_paper_init_std_001_and_zero_biases_modern_fan_in():
  for activation in ('relu', 'tanh'):
    paper = net.init_params(0, 'paper', activation, 32)
    modern = net.init_params(0, 'modern', activation, 32)
    assert net.num_params(paper) == 89_578  # 2,432 + 25,632 + 51,264 + 10,250
    for layer in net.LAYERS:
      kernel = np.asarray(paper[layer]['kernel'])
      assert not np.any(np.asarray(paper[layer]['bias']))
      assert not np.any(np.asarray(modern[layer]['bias']))
      assert np.std(kernel) == pytest.approx(0.01, rel=0.05) and abs(kernel.mean()) < 0.001
      fan_in = int(np.prod(kernel.shape[:-1]))
      gain = 2.0 if activation == 'relu' and layer != 'dense' else 1.0
      assert np.std(np.asarray(modern[layer]['kernel'])) == pytest.approx(
          math.sqrt(gain / fan_in), rel=0.05)


def test_same_seed_same_init_for_both_activations():
  relu = net.init_params(5, 'paper', 'relu', SIZE)
  tanh = net.init_params(5, 'paper', 'tanh', SIZE)
  jax.tree.map(np.testing.assert_array_equal, relu, tanh)
  modern_relu = net.init_params(5, 'modern', 'relu', SIZE)
  modern_tanh = net.init_params(5, 'modern', 'tanh', SIZE)
  for layer in net.LAYERS:  # the same draws, He's sqrt(2) apart before a ReLU
    scale = 1.0 if layer == 'dense' else math.sqrt(2)
    np.testing.assert_allclose(modern_relu[layer]['kernel'], scale * modern_tanh[layer]['kernel'],
                               rtol=1e-6)
  other = net.init_params(6, 'paper', 'relu', SIZE)
  assert not np.array_equal(other['conv1']['kernel'], relu['conv1']['kernel'])


# --- the layers' own gradients (net.py: conv_same, max_pool) ---


def _conv64(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('size, cin, cout', [(10, 3, 4), (6, 5, 7)])
def test_conv_same_values_and_gradients_equal_xlas_in_float64(size, cin, cout):
  rng = np.random.default_rng(size)
  x = rng.standard_normal((2, size, size, cin)).astype(np.float32)
  kernel = rng.standard_normal((5, 5, cin, cout)).astype(np.float32)
  dy = rng.standard_normal((2, size, size, cout)).astype(np.float32)
  with jax.enable_x64(True):  # the reference: XLA's convolution and its own gradients
    want, vjp = jax.vjp(_conv64, x.astype(np.float64), kernel.astype(np.float64))
    want_dx, want_dk = vjp(dy.astype(np.float64))
  got, vjp = jax.vjp(net.conv_same, x, kernel)
  got_dx, got_dk = vjp(dy)
  for g, w in ((got, want), (got_dx, want_dx), (got_dk, want_dk)):
    assert g.dtype == np.float32 and g.shape == w.shape
    np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=0,
                               atol=1e-5 * np.abs(w).max())


def _reduce_window_pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), 'SAME')


@pytest.mark.parametrize('size', [8, 7])
def test_max_pool_and_its_gradient_equal_reduce_windows_ties_included(size):
  # ReLU zeros and values rounded to halves: many windows hold their maximum twice or more,
  # so the gradient's rule for ties (the first element in row-major order) is tested.
  rng = np.random.default_rng(size)
  x = np.maximum(np.round(2 * rng.standard_normal((3, size, size, 4))) / 2, 0).astype(np.float32)
  g = rng.standard_normal((3, -(-size // 2), -(-size // 2), 4)).astype(np.float32)
  want, vjp = jax.vjp(_reduce_window_pool, x)
  got, our_vjp = jax.vjp(net.max_pool, x)
  np.testing.assert_array_equal(got, want)
  ties = [np.sum(x[0, 2 * p:2 * p + 3, 2 * q:2 * q + 3, 0] == want[0, p, q, 0]) > 1
          for p in range(size // 2) for q in range(size // 2)]
  assert sum(ties) >= 3
  np.testing.assert_allclose(our_vjp(g)[0], vjp(g)[0], rtol=1e-6, atol=1e-6)
