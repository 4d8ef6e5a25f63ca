"""alexnet_jax/model/lrn.py: the paper's local response normalisation (section 3.3), each
implementation's values and gradients against the formula and its derivative written out in
float64 (tests/helpers.py), and against tf.nn.local_response_normalization where TensorFlow is
installed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.model import lrn
from tests import helpers

N, K, ALPHA, BETA = helpers.LRN_N, helpers.LRN_K, helpers.LRN_ALPHA, helpers.LRN_BETA


def lrn_vjp_float64(a, g):
  """sum_c g[c] db[c]/da[i], with db[c]/da[i] = delta_ci D[c]^-beta
  - 2 alpha beta a[c] a[i] D[c]^(-beta-1) for i in c's window (the derivative
  of section 3.3's formula).

  Returns (gradient, size): size is the same sum over the absolute values of its terms, the
  scale a float32 sum of those terms is accurate to (where terms cancel, the result is small
  but its rounding error is not).
  """
  a = np.asarray(a, np.float64)
  g = np.asarray(g, np.float64)
  channels = a.shape[-1]
  d = np.empty_like(a)
  for c in range(channels):
    lo, hi = max(0, c - N // 2), min(channels - 1, c + N // 2)
    d[..., c] = K + ALPHA * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
  grad = g * d ** -BETA
  size = np.abs(grad)
  for i in range(channels):
    for c in range(max(0, i - N // 2), min(channels - 1, i + N // 2) + 1):
      term = 2 * ALPHA * BETA * a[..., c] * a[..., i] * d[..., c] ** (-BETA - 1) * g[..., c]
      grad[..., i] -= term
      size[..., i] += np.abs(term)
  return grad, size


def max_rel_error(x, ref):
  x = np.asarray(x, np.float64)
  ref = np.asarray(ref, np.float64)
  return np.max(np.abs(x - ref) / np.abs(ref))


def random_activations(seed, shape, scale):
  # Post-ReLU-like magnitudes large enough that the alpha term matters (alpha*sum ~ 0.1-10).
  rng = np.random.default_rng(seed)
  return (rng.standard_normal(shape) * scale).astype(np.float32)


def ours_and_vjp(x, g, groups=1, impl='fast'):
  y, vjp = jax.vjp(lambda v: lrn.local_response_norm(v, groups=groups, impl=impl),
                   jnp.asarray(x))
  return np.asarray(y), np.asarray(vjp(jnp.asarray(g))[0])


@pytest.mark.parametrize('impl', lrn.IMPLS)
@pytest.mark.parametrize('channels,scale', [(48, 30.0), (128, 30.0), (7, 100.0), (96, 5.0)])
def test_values_and_gradients_match_float64_formula(channels, scale, impl):
  x = random_activations(channels, (2, 3, 4, channels), scale)
  g = random_activations(channels + 1, x.shape, 1.0)
  y, grad = ours_and_vjp(x, g, impl=impl)
  assert max_rel_error(y, helpers.lrn_float64(x)) <= 1e-6
  ref_grad, size = lrn_vjp_float64(x, g)
  assert (np.abs(grad - ref_grad) / size).max() <= 1e-6


def test_edge_channels_use_truncated_window():
  # Channel 0 sums channels 0..2 only, the last channel its last 3: compare to the formula
  # evaluated by hand for those two channels.
  x = random_activations(3, (1, 1, 1, 48), 50.0)
  y = np.asarray(lrn.local_response_norm(jnp.asarray(x)))
  a = x.astype(np.float64)[0, 0, 0]
  first = a[0] / (K + ALPHA * np.sum(a[0:3] ** 2)) ** BETA
  last = a[47] / (K + ALPHA * np.sum(a[45:48] ** 2)) ** BETA
  assert abs(y[0, 0, 0, 0] - first) <= 1e-6 * abs(first)
  assert abs(y[0, 0, 0, 47] - last) <= 1e-6 * abs(last)


def test_window_never_crosses_group_boundary():
  x = random_activations(4, (2, 5, 5, 96), 40.0)
  grouped = np.asarray(lrn.local_response_norm(jnp.asarray(x), groups=2))
  halves = np.concatenate([helpers.lrn_float64(x[..., :48]), helpers.lrn_float64(x[..., 48:])],
                          axis=-1)
  assert max_rel_error(grouped, halves) <= 1e-6
  # A huge activation at the last channel of group 0 must not touch group 1's first channels,
  # while it does change its own group's neighbours.
  poked = x.copy()
  poked[..., 47] = 1e4
  out = np.asarray(lrn.local_response_norm(jnp.asarray(poked), groups=2))
  np.testing.assert_array_equal(out[..., 48:], grouped[..., 48:])
  assert np.all(np.abs(out[..., 46]) < np.abs(grouped[..., 46]))
  # Its gradient stays inside the group too.
  _, grad = ours_and_vjp(x, np.eye(96, dtype=np.float32)[47][None, None, None].repeat(
      2, 0).repeat(5, 1).repeat(5, 2), groups=2)
  assert np.all(grad[..., 48:] == 0) and np.all(grad[..., 45:48] != 0)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_fast_path_equals_reference_op(dtype):
  # The custom_vjp forward is the reference forward, op for op: identical values. Its
  # backward is the closed form, so gradients agree to float32 rounding of the summed terms.
  x = jnp.asarray(random_activations(7, (2, 5, 6, 96), 30.0), dtype)
  g = jnp.asarray(random_activations(8, x.shape, 1.0), dtype)
  y_fast, vjp_fast = jax.vjp(lambda v: lrn.local_response_norm(v, groups=2), x)
  y_ref, vjp_ref = jax.vjp(lambda v: lrn.local_response_norm(v, groups=2, impl='autodiff'), x)
  np.testing.assert_array_equal(np.asarray(y_fast, np.float32), np.asarray(y_ref, np.float32))
  grad_fast = np.asarray(vjp_fast(g)[0], np.float64)
  grad_ref = np.asarray(vjp_ref(g)[0], np.float64)
  assert grad_fast.dtype == grad_ref.dtype
  _, size = lrn_vjp_float64(np.asarray(x[..., :48], np.float64),
                            np.asarray(g[..., :48], np.float64))
  bound = 1e-6 if dtype == jnp.float32 else 2.0 ** -8  # bf16: one rounding of the result.
  assert np.max(np.abs(grad_fast - grad_ref)[..., :48] / size) <= bound
  # Under jit, inside a larger function, as the model uses it.
  jitted = jax.jit(jax.grad(lambda v: jnp.sum(lrn.local_response_norm(v) * g)))
  np.testing.assert_allclose(np.asarray(jitted(x), np.float64), np.asarray(
      jax.grad(lambda v: jnp.sum(lrn.local_response_norm(v, impl='autodiff') * g))(x),
      np.float64), rtol=1e-5 if dtype == jnp.float32 else 2e-2, atol=1e-7)


def test_bfloat16_input_is_computed_in_float32():
  x32 = random_activations(5, (2, 4, 4, 128), 30.0)
  x16 = jnp.asarray(x32, jnp.bfloat16)
  y = lrn.local_response_norm(x16)
  assert y.dtype == jnp.bfloat16
  # The exact result on the bf16 inputs, rounded once to bf16: at most 1 bf16 ulp away
  # (a bf16 window sum would be off by many).
  exact = helpers.lrn_float64(np.asarray(x16, np.float64))
  rel = np.abs(np.asarray(y, np.float64) - exact) / np.abs(exact)
  assert rel.max() <= 2.0 ** -8


@pytest.mark.parametrize('impl', lrn.IMPLS)
@pytest.mark.parametrize('channels', [48, 128])
def test_matches_tensorflow_values_and_gradients(channels, impl):
  # Only this comparison needs TensorFlow (absent on the accelerator machines); a module-level
  # importorskip would skip the float64 tests above with it.
  tf = pytest.importorskip('tensorflow')
  x = random_activations(10 + channels, (2, 6, 6, channels), 30.0)
  g = random_activations(20 + channels, x.shape, 1.0)
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    yt = tf.nn.local_response_normalization(xt, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
  gt = tape.gradient(yt, xt, output_gradients=tf.constant(g))
  y, grad = ours_and_vjp(x, g, impl=impl)
  assert max_rel_error(y, yt.numpy()) <= 1e-6
  _, size = lrn_vjp_float64(x, g)
  assert (np.abs(grad - gt.numpy()) / size).max() <= 1e-6


def test_only_the_tensorflow_comparison_can_skip():
  """Without TensorFlow (the accelerator machines) the float64 tests above must still run: no
  module-level importorskip, which would skip this whole file."""
  import ast  # pylint: disable=g-import-not-at-top
  with open(__file__) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)
             and getattr(n.func, 'attr', getattr(n.func, 'id', '')) == 'importorskip']
    assert isinstance(node, (ast.FunctionDef, ast.ClassDef)) or not calls, ast.unparse(node)
