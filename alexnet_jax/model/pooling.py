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
  chosen_g = {}
  for i in range(window):
    for j in range(window):
      chosen = (elements[i, j] == y) & ~taken
      taken = taken | chosen
      chosen_g[i, j] = jnp.where(chosen, g, zero)
  return (_scatter_to_input(chosen_g, window, stride, h, w),)


def _scatter_to_input(chosen_g: dict, window: int, stride: int, h: int, w: int) -> jax.Array:
  """dx[s*p + i, s*q + j] = sum over (i, j) of chosen_g[i, j][p, q], built one residue class of
  the input grid at a time: the rows r = s*m + a receive the offsets i = a + s*t from output row
  p = m - t, so each class is a sum of output-sized arrays shifted by whole rows (pads of
  output size), and the s*s classes are interleaved into H x W in one pass. The terms are
  added in the same row-major (i, j) order as one full-size pad per offset would add them, with
  at most s*s times less memory written."""
  some = next(iter(chosen_g.values()))
  ho, wo = some.shape[2:4]
  rows, cols = -(-h // stride), -(-w // stride)  # class sizes (the last class may be shorter)
  zero = jnp.zeros((), some.dtype)
  classes = []
  for a in range(stride):
    row = []
    for b in range(stride):
      total = None
      for i in range(a, window, stride):
        for j in range(b, window, stride):
          t, u = (i - a) // stride, (j - b) // stride
          placed = jax.lax.pad(chosen_g[i, j], zero,
                               ((0, 0, 0), (0, 0, 0), (t, rows - ho - t, 0),
                                (u, cols - wo - u, 0), (0, 0, 0)))
          total = placed if total is None else total + placed
      if total is None:  # no window offset lands on this class (window < stride)
        total = jnp.zeros(some.shape[:2] + (rows, cols) + some.shape[4:], some.dtype)
      row.append(total)
    classes.append(jnp.stack(row, axis=4))  # G x B x rows x cols x s(b) x C
  grid = jnp.stack(classes, axis=3)  # G x B x rows x s(a) x cols x s(b) x C
  n, bsz, c = some.shape[0], some.shape[1], some.shape[4]
  grid = grid.reshape(n, bsz, rows * stride, cols * stride, c)
  return grid[:, :, :h, :w]


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
