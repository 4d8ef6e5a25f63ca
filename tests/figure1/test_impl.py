"""alexnet_jax/figure1/net.py's layer implementations (issue 25 point 4): 'fast' (conv_same and
max_pool, gradients written for XLA:CPU) and 'xla' (XLA's own gradients) are the same net: the
same params tree, the same loss, the same gradients within float32 rounding against a float64
reference, with either activation; 'auto' is 'fast' on the CPU only; the choice reaches a run
(Setup.impl) and is stored only when it is not the default."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.errors import UserError
from alexnet_jax.figure1 import config as figure1_config
from alexnet_jax.figure1 import net
from alexnet_jax.figure1 import train
from tests.figure1.helpers import SIZE
from tests.figure1.helpers import setup


def _loss_fn(impl, x, y, activation):
  def loss_fn(params):
    logits = net.Net(activation, 10, impl).apply({'params': params}, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
  return loss_fn


def _loss_and_grads(impl, params, x, y, activation):
  return jax.jit(jax.value_and_grad(_loss_fn(impl, x, y, activation)))(params)


@pytest.mark.parametrize('activation', ['relu', 'tanh'])
def test_fast_and_xla_give_the_same_loss_and_gradients(activation):
  rng = np.random.default_rng(7)
  x = rng.standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)
  y = np.arange(4, dtype=np.int32)
  params = net.init_params(1, 'modern', activation, SIZE)
  shapes = {impl: jax.eval_shape(net.Net(activation, 10, impl).init, jax.random.key(0), x)
            for impl in net.IMPLS}
  assert jax.tree.structure(shapes['fast']) == jax.tree.structure(shapes['xla'])
  assert jax.tree.leaves(shapes['fast']) == jax.tree.leaves(shapes['xla'])
  with jax.enable_x64(True):  # the reference: the 'xla' form in float64
    want_loss, want = _loss_and_grads('xla', jax.tree.map(lambda a: np.asarray(a, np.float64),
                                                          params), x.astype(np.float64), y,
                                      activation)
    want_loss, want = float(want_loss), jax.tree.map(np.asarray, want)
  for impl in net.IMPLS:
    loss, grads = _loss_and_grads(impl, params, x, y, activation)
    assert float(loss) == pytest.approx(want_loss, rel=1e-6), impl
    for layer in net.LAYERS:
      for name in ('kernel', 'bias'):
        got, ref = np.asarray(grads[layer][name], np.float64), want[layer][name]
        assert np.abs(ref).max() > 0, (layer, name)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=f'{impl} {layer} {name}')
  # The two are different programs: only 'fast' has the custom gradients, only 'xla' pools
  # back through XLA's select_and_scatter.
  forward, backward = ({impl: str(jax.make_jaxpr(f(_loss_fn(impl, x, y, activation)))(params))
                        for impl in net.IMPLS} for f in (lambda f: f, jax.grad))
  assert 'custom_vjp_call' in forward['fast'] and 'custom_vjp_call' not in forward['xla']
  assert 'select_and_scatter_add' in backward['xla']
  assert 'select_and_scatter_add' not in backward['fast']


@pytest.mark.parametrize('backend, impl', [('cpu', 'fast'), ('gpu', 'xla'), ('tpu', 'xla')])
def test_auto_is_fast_on_the_cpu_only(backend, impl):
  """'fast' was measured on the CPU only: elsewhere 'auto' runs XLA's own gradients."""
  assert net.auto_impl(backend) == impl
  assert figure1_config.get_config().impl == 'auto'
  assert figure1_config.get_config('cifar10').impl == 'auto'


def test_auto_resolves_on_this_backend_and_a_bad_impl_is_refused():
  assert net.resolve_impl('auto') == net.auto_impl(jax.default_backend())
  assert [net.resolve_impl(i) for i in net.IMPLS] == list(net.IMPLS)
  with pytest.raises(ValueError, match="'conv'"):
    net.resolve_impl('conv')
  with pytest.raises(UserError, match="impl 'conv'"):
    train.check_setup(setup(impl='conv'), 12)


def test_a_runs_impl_reaches_its_loop_and_is_stored_unless_auto(images, monkeypatch):
  assert 'impl' not in setup().record()  # runs stored before the switch still match
  assert setup(impl='xla').record()['impl'] == 'xla'
  seen = {}

  class Built(Exception):
    pass

  def loop(*args, **kwargs):
    seen.update(kwargs)
    raise Built

  monkeypatch.setattr(train, 'Loop', loop)
  with pytest.raises(Built):
    train.train_run(images.pixels, images.labels, 'paper', 'relu', 0.01, 0, setup(impl='xla'), 4)
  assert seen['impl'] == 'xla'
