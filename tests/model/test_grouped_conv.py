"""The paper's two-GPU split in alexnet_jax/model/grouped_conv.py: a grouped layer sees only
its own half of the previous layer (against XLA's grouped convolution, feature_group_count=2),
and every implementation choice (conv_impl, pool_impl, lrn_impl) is the same net as the default
(the same loss and gradients from the same params, to float32 rounding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from tests import helpers


def test_grouped_convs_see_only_their_own_half():
  params, _, _, inter = helpers.run_small()
  # conv2 recomputed as XLA's grouped convolution (feature_group_count=2) of pool1.
  kernel = np.concatenate([params['conv2']['kernel'][0], params['conv2']['kernel'][1]], -1)
  bias = np.concatenate([params['conv2']['bias'][0], params['conv2']['bias'][1]])
  y = jax.lax.conv_general_dilated(jnp.asarray(helpers.halves(inter['pool1']), jnp.float32),
                                   jnp.asarray(kernel), (1, 1), [(2, 2), (2, 2)],
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   feature_group_count=2, precision='highest')
  np.testing.assert_allclose(helpers.halves(inter['conv2_out']),
                             np.maximum(np.asarray(y) + bias, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('switch', [dict(conv_impl='feature_group'), dict(conv_impl='im2col'),
                                    dict(conv_impl='halves'), dict(pool_impl='xla'),
                                    dict(lrn_impl='autodiff'), dict(lrn_impl='reduce_window')])
def test_implementation_choices_give_the_same_net(switch):
  # Speed switches only: the same params give the same loss and gradients, within float32
  # rounding of sums taken in another order.
  x = jax.random.uniform(jax.random.PRNGKey(42), (2, helpers.IMAGE, helpers.IMAGE, 3), minval=-1,
                         maxval=1)
  base = alexnet.AlexNet(**{**helpers.SMALL, 'dropout': 0.0})
  params = helpers.init_params(base, helpers.IMAGE)

  def loss_and_grads(model):
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.sum(model.apply({'params': p}, x, train=True) ** 2)))(params)

  loss, grads = loss_and_grads(base)
  loss_other, grads_other = loss_and_grads(base.clone(**switch))
  np.testing.assert_allclose(loss_other, loss, rtol=1e-5)
  for g, h in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_other)):
    np.testing.assert_allclose(h, g, rtol=1e-4, atol=1e-5 * float(np.abs(g).max()))
  m = alexnet.from_config(helpers.config_model(**switch))
  assert all(getattr(m, k) == v for k, v in switch.items())


def test_bad_implementation_choice_is_one_clear_error():
  with pytest.raises(UserError, match="conv_impl='cudnn'"):
    alexnet.from_config(helpers.config_model(conv_impl='cudnn'))
