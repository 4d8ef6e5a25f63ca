"""alexnet_jax/model/pooling.py: the grouped max pool's fast backward against a float64 loop
over the windows (select_and_scatter's tie rule written out) and against XLA's own gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.model import pooling


def max_pool_vjp_float64(x, g, window, stride):
  """Each window's gradient goes to its first maximum in row-major order (select_and_scatter's
  tie rule), summed where windows overlap; a plain loop in float64."""
  x = np.asarray(x, np.float64)
  g = np.asarray(g, np.float64)
  dx = np.zeros_like(x)
  size = np.zeros_like(x)  # sum of |terms|: the scale float32 rounding is relative to
  n_groups, batch, _, _, channels = x.shape
  for a in range(n_groups):
    for b in range(batch):
      for p in range(g.shape[2]):
        for q in range(g.shape[3]):
          for c in range(channels):
            patch = x[a, b, p * stride:p * stride + window, q * stride:q * stride + window, c]
            i, j = np.unravel_index(np.argmax(patch), patch.shape)  # first max, row-major
            dx[a, b, p * stride + i, q * stride + j, c] += g[a, b, p, q, c]
            size[a, b, p * stride + i, q * stride + j, c] += abs(g[a, b, p, q, c])
  return dx, size


def pool_and_vjp(x, g, window, stride, impl):
  y, vjp = jax.vjp(lambda v: pooling.grouped_max_pool(v, window, stride, impl), jnp.asarray(x))
  return np.asarray(y), np.asarray(vjp(jnp.asarray(g))[0])


def activations(seed, shape):
  # Post-ReLU: half the values are exactly 0, so windows of tied maxima are common; one block
  # of equal positive values adds ties away from zero.
  x = np.maximum(np.random.default_rng(seed).standard_normal(shape), 0).astype(np.float32)
  x[..., 2:6, 3:7, 0] = 0.5
  return x


@pytest.mark.parametrize('window,stride,hw', [(3, 2, 13), (3, 2, 27), (2, 2, 12), (3, 2, 14)])
def test_fast_gradient_matches_loop_and_xla(window, stride, hw):
  x = activations(hw, (2, 3, hw, hw, 4))
  out = (hw - window) // stride + 1
  g = np.random.default_rng(1).standard_normal((2, 3, out, out, 4)).astype(np.float32)
  y_fast, dx_fast = pool_and_vjp(x, g, window, stride, 'fast')
  y_xla, dx_xla = pool_and_vjp(x, g, window, stride, 'xla')
  np.testing.assert_array_equal(y_fast, y_xla)
  ref, size = max_pool_vjp_float64(x, g, window, stride)
  # The same input positions receive gradient ...
  np.testing.assert_array_equal(dx_fast != 0, ref != 0)
  np.testing.assert_array_equal(dx_xla != 0, ref != 0)
  # ... and the same sums, up to float32 rounding of the (at most 4) overlapping terms.
  assert np.all(np.abs(dx_fast - ref) <= 1e-6 * size)
  assert np.all(np.abs(dx_fast - dx_xla) <= 2e-6 * size)
  if window == stride:  # disjoint windows: one term per element, so bit for bit
    np.testing.assert_array_equal(dx_fast, dx_xla)


def test_fast_gradient_under_jit_and_unknown_impl():
  x = jnp.asarray(activations(0, (2, 2, 27, 27, 8)))
  loss = lambda impl: jax.jit(jax.grad(
      lambda v: jnp.sum(pooling.grouped_max_pool(v, 3, 2, impl) ** 2)))(x)
  np.testing.assert_allclose(loss('fast'), loss('xla'), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='pool impl'):
    pooling.grouped_max_pool(x, 3, 2, 'nope')


def test_fast_pool_refuses_a_window_its_int8_index_cannot_hold():
  with pytest.raises(ValueError, match='int8'):
    jax.vjp(lambda v: pooling.grouped_max_pool(v, 12, 12, 'fast'), jnp.zeros((1, 1, 12, 12, 1)))
