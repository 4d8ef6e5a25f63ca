"""Max pooling over H and W of G x B x H x W x C activations (paper section 3.4), with a
backward pass that XLA:CPU runs fast.

The gradient of lax.reduce_window(max) is a select_and_scatter, which XLA:CPU expands into a
variadic reduce_window carrying argmax indices, iotas the size of the input and a scatter: a
large share of the CPU training step (docs/performance.md). 'fast' writes the same gradient as
window * window strided compares and zero-interleaving pads, elementwise work that fuses:

  dx[s*p + i, s*q + j] += g[p, q]  where (i, j) is the first position, in row-major window
                                   order, holding the window's maximum

"first" is select_and_scatter's rule (its `ge` select keeps the earlier element on a tie), so
both give the same gradient, ties included (ReLU zeros tie often; tested). The maximum it
compares with is recomputed in the backward from the very elements it compares, not taken from
the forward's output: that relied on XLA computing the pooled input bit for bit alike twice,
which its algebraic simplifier does not guarantee. With batch norm before the pools, under a
mesh, conv gradients came out wrong that way (model.norm=batchnorm_all; tests/test_sharding.py;
docs/performance.md has by how much); with XLA's algsimp pass disabled, or with the maximum
recomputed here, they match the unsharded run, which matches finite differences.
"""
import functools

import jax
import jax.numpy as jnp

IMPLS = ('fast', 'xla')
# 'auto': 'fast' on CPU, where it was measured; elsewhere XLA's own reduce_window gradient
# (what a plain JAX AlexNet writes) until a measurement there says otherwise.
CHOICES = ('auto',) + IMPLS
_AUTO = {'cpu': 'fast'}


def auto_impl(backend: str) -> str:
  """What impl='auto' runs on a backend ('cpu', 'gpu', 'tpu', ...)."""
  return _AUTO.get(backend, 'xla')


def _max_pool_xla(x, window: int, stride: int):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, window, window, 1),
                               (1, 1, stride, stride, 1), 'VALID')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_fast(x, window: int, stride: int):
  return _max_pool_xla(x, window, stride)


def _max_pool_fast_fwd(x, window, stride):
  return _max_pool_xla(x, window, stride), x


def _max_pool_fast_bwd(window, stride, x, g):
  h, w = x.shape[2:4]
  ho, wo = g.shape[2:4]
  # x[s*p + i, s*q + j] for every output (p, q): the (i, j) element of each window.
  elements = {(i, j): jax.lax.slice(x, (0, 0, i, j, 0),
                                    (x.shape[0], x.shape[1], i + (ho - 1) * stride + 1,
                                     j + (wo - 1) * stride + 1, x.shape[4]),
                                    (1, 1, stride, stride, 1))
              for i in range(window) for j in range(window)}
  y = functools.reduce(jnp.maximum, elements.values())  # each window's maximum, from these
  taken = jnp.zeros(g.shape, jnp.bool_)
  zero = jnp.zeros((), g.dtype)
  dx = None
  for i in range(window):
    for j in range(window):
      element = elements[i, j]
      chosen = (element == y) & ~taken
      taken = taken | chosen
      # Back onto the input grid: row p goes to s*p + i (stride-1 zeros in between).
      placed = jax.lax.pad(jnp.where(chosen, g, zero), zero,
                           ((0, 0, 0), (0, 0, 0), (i, h - i - (ho - 1) * stride - 1, stride - 1),
                            (j, w - j - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))
      dx = placed if dx is None else dx + placed
  return (dx,)


_max_pool_fast.defvjp(_max_pool_fast_fwd, _max_pool_fast_bwd)


def grouped_max_pool(x_GxBxHxWxC: jax.Array, window: int, stride: int,
                     impl: str = 'fast') -> jax.Array:
  """Max pooling over H and W of each group, no padding (the group and batch axes stay as they
  are, so a group and batch split over devices stays local). impl: one of CHOICES ('auto' per
  backend)."""
  if impl == 'auto':
    impl = auto_impl(jax.default_backend())
  if impl == 'fast':
    return _max_pool_fast(x_GxBxHxWxC, window, stride)
  if impl == 'xla':
    return _max_pool_xla(x_GxBxHxWxC, window, stride)
  raise ValueError(f'pool impl {impl!r}; choose one of {", ".join(CHOICES)}')
