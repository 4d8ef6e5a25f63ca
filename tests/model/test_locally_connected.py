"""alexnet_jax/model/locally_connected.py: values and gradients against loops in float64 (the
layer written out position by position, and its adjoint), and the parameters of flax's
nn.ConvLocal, so that a checkpoint of either loads into the other."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.model import locally_connected


def loop_forward_and_vjp(x, kernel, bias, g, k, p):
  """y[b, i, j, f] = bias[i, j, f] + sum over c, dy, dx of xpad[b, i + dy, j + dx, c] *
  kernel[i, j] read as (C, K, K, F); and the gradients of sum(y * g), all in float64."""
  x, kernel, bias, g = (np.asarray(a, np.float64) for a in (x, kernel, bias, g))
  b, h, w, c = x.shape
  oh, ow, _, f = kernel.shape
  padded = np.zeros((b, h + 2 * p, w + 2 * p, c))
  padded[:, p:p + h, p:p + w] = x
  y = np.empty((b, oh, ow, f))
  d_padded = np.zeros_like(padded)
  d_kernel = np.empty_like(kernel)
  for i in range(oh):
    for j in range(ow):
      kij = kernel[i, j].reshape(c, k, k, f)
      patch = padded[:, i:i + k, j:j + k, :]
      y[:, i, j] = np.einsum('byxc,cyxf->bf', patch, kij) + bias[i, j]
      d_kernel[i, j] = np.einsum('byxc,bf->cyxf', patch, g[:, i, j]).reshape(c * k * k, f)
      d_padded[:, i:i + k, j:j + k, :] += np.einsum('cyxf,bf->byxc', kij, g[:, i, j])
  return y, d_padded[:, p:p + h, p:p + w], d_kernel, g.sum(0)


@pytest.mark.parametrize('shape,k,p,features', [((3, 6, 6, 8), 3, 1, 5), ((2, 7, 5, 4), 3, 0, 3),
                                                ((2, 5, 6, 3), 5, 2, 4)])
def test_values_and_gradients_against_float64_loops(shape, k, p, features):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  layer = locally_connected.LocallyConnected(
      features, k, p, kernel_init=nn.initializers.normal(1.0),
      bias_init=nn.initializers.normal(1.0))
  params = layer.init(jax.random.PRNGKey(0), jnp.asarray(x))['params']
  y, vjp = jax.vjp(lambda v, x: layer.apply({'params': v}, x), params, jnp.asarray(x))
  g = rng.standard_normal(y.shape).astype(np.float32)
  d_params, d_x = vjp(jnp.asarray(g))
  truth = loop_forward_and_vjp(x, params['kernel'], params['bias'], g, k, p)
  for ours, ref in zip((y, d_x, d_params['kernel'], d_params['bias']), truth):
    ours = np.asarray(ours, np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_flax_conv_locals_parameters_and_outputs():
  """The same key gives nn.ConvLocal's weights, and either's parameters run in the other."""
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 6, 16))
  init = nn.initializers.normal(0.04)
  ours = locally_connected.LocallyConnected(8, 3, 1, kernel_init=init, bias_init=init)
  flax_layer = nn.ConvLocal(8, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init,
                            bias_init=init)
  params = ours.init(jax.random.PRNGKey(0), x)
  flax_params = flax_layer.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(flax_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(flax_params)):
    np.testing.assert_array_equal(a, b)
  y, y_flax = ours.apply(params, x), flax_layer.apply(params, x)
  np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5 * float(jnp.abs(y_flax).max()))
