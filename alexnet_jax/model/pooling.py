"""Max pooling over H and W of G x B x H x W x C activations (paper section 3.4), with a
backward pass that XLA:CPU runs fast.

The gradient of lax.reduce_window(max) is a select_and_scatter, which XLA:CPU expands into a
variadic reduce_window carrying argmax indices, iotas the size of the input and a scatter: a
large share of the CPU training step (docs/performance.md). 'fast' writes the same gradient as
window * window strided compares and zero-interleaving pads, elementwise work that fuses:

  dx[s*p + i, s*q + j] += g[p, q]  where (i, j) is the first position, in row-major window
                                   order, holding the window's maximum

"first" is select_and_scatter's rule (its `ge` select keeps the earlier element on a tie), so
both give the same gradient, ties included (ReLU zeros tie often; tested). The forward finds
each window's first maximum with a running maximum over the very elements it compares and keeps
that index (int8, output-sized) for the backward. Comparing with the forward's pooled output
instead relied on XLA computing the pooled input bit for bit alike twice, which its algebraic
simplifier does not guarantee: with batch norm before the pools, under a mesh, conv gradients
came out wrong that way (model.norm=batchnorm_all; tests/test_sharding.py; docs/performance.md
has by how much). A kept index always routes each window's gradient to exactly one element.
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_fast(x, window: int, stride: int, input_hw: tuple[int, int]):
  """input_hw: x's H and W, which the backward needs and its residuals do not carry."""
  return _max_pool_xla(x, window, stride)


def _window_elements(x, window: int, stride: int, ho: int, wo: int) -> list:
  """x[s*p + i, s*q + j] for every output (p, q): the (i, j) element of each window, in
  row-major (i, j) order."""
  return [jax.lax.slice(x, (0, 0, i, j, 0),
                        (x.shape[0], x.shape[1], i + (ho - 1) * stride + 1,
                         j + (wo - 1) * stride + 1, x.shape[4]),
                        (1, 1, stride, stride, 1))
          for i in range(window) for j in range(window)]


def _max_pool_fast_fwd(x, window, stride, input_hw):
  if window * window > 127:
    raise ValueError(f'pool window {window}: its int8 argmax holds at most 127 positions')
  y = _max_pool_xla(x, window, stride)
  ho, wo = y.shape[2:4]
  elements = _window_elements(x, window, stride, ho, wo)
  # The row-major index of the first element holding each window's maximum: a running maximum
  # over the elements, replaced only by a strictly larger one (ties keep the earlier).
  running, first = elements[0], jnp.zeros(y.shape, jnp.int8)
  for k in range(1, window * window):
    first = jnp.where(elements[k] > running, jnp.int8(k), first)
    running = jnp.maximum(running, elements[k])
  # A min-reduction with a constant partner ends the chain: XLA materialises a reduction's
  # output once, where an elementwise chain is recomputed inside every backward term that reads
  # it (docs/performance.md).
  first = jnp.min(jnp.stack([first, jnp.full_like(first, window * window)], -1), -1)
  return y, first


def _max_pool_fast_bwd(window, stride, input_hw, first, g):
  h, w = input_hw
  zero = jnp.zeros((), g.dtype)
  chosen_g = {(i, j): jnp.where(first == i * window + j, g, zero)
              for i in range(window) for j in range(window)}
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
    return _max_pool_fast(x_GxBxHxWxC, window, stride, tuple(x_GxBxHxWxC.shape[2:4]))
  if impl == 'xla':
    return _max_pool_xla(x_GxBxHxWxC, window, stride)
  raise ValueError(f'pool impl {impl!r}; choose one of {", ".join(CHOICES)}')
