"""The network in alexnet_jax/model/alexnet.py: its shapes, parameter count and init against
the paper's layer table (section 3.5, Figure 2), and each config switch (activation, LRN and
its order, the normalisation (model.norm), pooling, dropout and its placement, dtype,
num_classes, from_config) against the same layer recomputed independently: XLA's plain
convolution, a numpy max pool, the LRN and batch-norm formulas in float64, and the fully
connected layers in float64."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import grouped_conv
from tests.helpers import alexnet_config
from tests import helpers

PAPER_BIAS_ONE = {'conv2', 'conv4', 'conv5', 'fc6', 'fc7'}


def abstract_params(model, image_size=227):
  return jax.eval_shape(functools.partial(model.init, train=False),
                        {'params': jax.random.PRNGKey(0)},
                        jnp.zeros((1, image_size, image_size, 3)))['params']


def test_parameter_count_is_the_papers():
  expected = helpers.paper_param_count()  # from the layer table
  assert expected == 60_965_224
  params = abstract_params(alexnet.AlexNet())
  assert sum(x.size for x in jax.tree.leaves(params)) == expected
  # Layer by layer: each conv kernel is two halves of the paper's kernel bank.
  for name, kh, kw, cin, cout in helpers.PAPER_CONVS:
    assert params[name]['kernel'].shape == (2, kh, kw, cin, cout // 2)
    assert params[name]['bias'].shape == (2, cout // 2)
  for name, fin, fout in helpers.PAPER_FCS:
    assert params[name]['kernel'].shape == (fin, fout)


def test_layer_output_shapes_are_the_papers():
  model = alexnet.AlexNet()
  variables = {'params': abstract_params(model)}
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']),
      variables, jax.ShapeDtypeStruct((3, 227, 227, 3), jnp.float32))
  inter = {k: v[0].shape for k, v in state['intermediates'].items()}
  # (spatial size, channels) of conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5.
  expected = {'conv1_out': (55, 96), 'pool1': (27, 96), 'conv2_out': (27, 256),
              'pool2': (13, 256), 'conv3_out': (13, 384), 'conv4_out': (13, 384),
              'conv5_out': (13, 256), 'pool5': (6, 256)}
  for name, (size, channels) in expected.items():
    assert inter[name] == (2, 3, size, size, channels // 2), name
  assert inter['fc6_out'] == (3, 4096) and inter['fc7_out'] == (3, 4096)
  assert logits.shape == (3, 1000) and logits.dtype == jnp.float32


def test_paper_init():
  params = helpers.init_params(alexnet.AlexNet())
  for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'):
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.std() - 0.01) < 0.01 * 0.02, name  # N(0, 0.01), thousands of samples
    assert abs(kernel.mean()) < 0.01 * 0.05, name
    bias = np.asarray(params[name]['bias'])
    np.testing.assert_array_equal(bias, 1.0 if name in PAPER_BIAS_ONE else 0.0)
  # The two halves of a kernel bank are independent draws, not copies.
  assert not np.allclose(params['conv2']['kernel'][0], params['conv2']['kernel'][1])


def test_he_init_scales_by_fan_in():
  params = helpers.init_params(alexnet.AlexNet(init_scheme='he'))
  fan_in = {name: kh * kw * cin for name, kh, kw, cin, _ in helpers.PAPER_CONVS}
  fan_in.update({name: fin for name, fin, _ in helpers.PAPER_FCS})
  for name, fi in fan_in.items():
    std = np.asarray(params[name]['kernel']).std()
    assert abs(std / np.sqrt(2.0 / fi) - 1) < 0.05, name
    np.testing.assert_array_equal(params[name]['bias'], 0.0)


# ---- the switches, on a narrow net with small images (the arithmetic is the same) ----


def conv1_preactivation(params, x):
  """conv1 written as one ungrouped convolution over the concatenated kernel halves."""
  kernel = np.concatenate([params['conv1']['kernel'][0], params['conv1']['kernel'][1]], -1)
  bias = np.concatenate([params['conv1']['bias'][0], params['conv1']['bias'][1]])
  y = jax.lax.conv_general_dilated(x, jnp.asarray(kernel), (4, 4), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   precision='highest')
  return np.asarray(y + bias, np.float64)


def max_pool_np(x_BxHxWxC, window, stride):
  b, h, w, c = x_BxHxWxC.shape
  ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
  out = np.full((b, ho, wo, c), -np.inf)
  for i in range(ho):
    for j in range(wo):
      out[:, i, j] = x_BxHxWxC[:, i * stride:i * stride + window,
                               j * stride:j * stride + window].max(axis=(1, 2))
  return out


def groupwise(fn, x_BxHxWxC):
  c = x_BxHxWxC.shape[-1] // 2
  return np.concatenate([fn(x_BxHxWxC[..., :c]), fn(x_BxHxWxC[..., c:])], axis=-1)


@pytest.mark.parametrize('activation,fn', [('relu', lambda v: np.maximum(v, 0)),
                                           ('tanh', np.tanh)])
def test_activation_switch(activation, fn):
  params, x, _, inter = helpers.run_small(activation=activation)
  np.testing.assert_allclose(helpers.halves(inter['conv1_out']), fn(conv1_preactivation(params, x)),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('norm_switch,order,pool', [
    ('lrn', 'paper', 'overlap'), ('lrn', 'caffe', 'overlap'), ('none', 'paper', 'overlap'),
    ('lrn', 'paper', 'disjoint')])
def test_lrn_order_and_pool_switches(norm_switch, order, pool):
  _, _, _, inter = helpers.run_small(norm=norm_switch, lrn_order=order, pool=pool)
  window, stride = {'overlap': (3, 2), 'disjoint': (2, 2)}[pool]
  act = helpers.halves(inter['conv1_out'])
  norm = ((lambda v: groupwise(helpers.lrn_float64, v)) if norm_switch == 'lrn' else
          (lambda v: v))
  if order == 'paper':  # ReLU -> LRN -> pool (paper section 3.3)
    expected = max_pool_np(norm(act), window, stride)
  else:  # ReLU -> pool -> LRN (Caffe)
    expected = norm(max_pool_np(act, window, stride))
  np.testing.assert_allclose(helpers.halves(inter['pool1']), expected, rtol=1e-5, atol=1e-6)


def test_pool_switch_keeps_the_papers_sizes():
  model = alexnet.AlexNet(pool='disjoint')
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']),
      {'params': abstract_params(model)}, jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32))
  sizes = [state['intermediates'][k][0].shape[2] for k in ('pool1', 'pool2', 'pool5')]
  assert sizes == [27, 13, 6]


def test_dropout_switch():
  # With dropout, training outputs depend on the dropout key; evaluation never does.
  _, _, a, _ = helpers.run_small(dropout=0.5, train=True, rng=1)
  _, _, b, _ = helpers.run_small(dropout=0.5, train=True, rng=2)
  _, _, c, _ = helpers.run_small(dropout=0.5, train=False, rng=1)
  _, _, d, _ = helpers.run_small(dropout=0.5, train=False, rng=2)
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)
  # dropout=0: training is the deterministic network, equal to evaluation.
  _, _, e, _ = helpers.run_small(dropout=0.0, train=True, rng=1)
  np.testing.assert_allclose(e, c, rtol=1e-6, atol=1e-6)


def dropout_run(placement, train, rate=0.5):
  """(params, what each Dropout and Dense module returned, the sown intermediates)."""
  model = alexnet.AlexNet(**helpers.SMALL, dropout=rate, dropout_placement=placement)
  params = helpers.init_params(model, helpers.IMAGE, 0)
  x = jax.random.uniform(jax.random.PRNGKey(42), (4, helpers.IMAGE, helpers.IMAGE, 3), minval=-1,
                         maxval=1)
  apply = jax.jit(functools.partial(model.apply, train=train, capture_intermediates=True,
                                    mutable=['intermediates']))  # one program, not op by op
  _, state = apply({'params': params}, x, rngs={'dropout': jax.random.PRNGKey(3)})
  inter = state['intermediates']
  calls = {name: np.asarray(v['__call__'][0], np.float64) for name, v in inter.items()
           if isinstance(v, dict) and '__call__' in v}
  sown = {name: np.asarray(v[0], np.float64) for name, v in inter.items()
          if isinstance(v, tuple)}
  return params, calls, sown


def dense64(params, name, x):
  return x @ np.asarray(params[name]['kernel'], np.float64) + np.asarray(params[name]['bias'],
                                                                         np.float64)


def assert_inverted_dropout(dropped, kept, rate):
  """Each unit is 0 or kept / (1 - rate), and about `rate` of the nonzero ones are zeroed."""
  scaled = kept / (1 - rate)
  assert np.all(np.isclose(dropped, 0) | np.isclose(dropped, scaled, rtol=1e-5))
  live = kept != 0
  zeroed = np.mean(np.isclose(dropped[live], 0))
  assert abs(zeroed - rate) < 0.05, zeroed  # ~2000 live units: 4 sigma ~ 0.045


def test_dropout_placement_paper_zeroes_fc6_and_fc7_outputs():
  """Section 4.2: dropout on the outputs of fc6 and fc7 (after their ReLUs); fc7 and fc8 then
  compute from the dropped units, recomputed here in float64."""
  params, calls, sown = dropout_run('paper', train=True)
  assert set(k for k in calls if 'dropout' in k) == {'fc6_out_dropout', 'fc7_out_dropout'}
  assert_inverted_dropout(calls['fc6_out_dropout'], sown['fc6_out'], 0.5)
  assert_inverted_dropout(calls['fc7_out_dropout'], sown['fc7_out'], 0.5)
  np.testing.assert_allclose(sown['fc7_out'], np.maximum(
      dense64(params, 'fc7', calls['fc6_out_dropout']), 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(calls['fc8'], dense64(params, 'fc8', calls['fc7_out_dropout']),
                             rtol=1e-4, atol=1e-5)
  # Evaluation zeroes nothing: fc8 sees fc7's ReLU output itself.
  params, calls, sown = dropout_run('paper', train=False)
  np.testing.assert_array_equal(calls['fc7_out_dropout'], sown['fc7_out'])
  np.testing.assert_allclose(calls['fc8'], dense64(params, 'fc8', sown['fc7_out']), rtol=1e-4,
                             atol=1e-5)


def test_dropout_placement_torchvision_zeroes_fc6_and_fc7_inputs():
  """torchvision's placement: dropout on the inputs of fc6 (pool5, flattened) and fc7. fc6's
  mask, drawn in the flat layout, is scaled by 1/keep and multiplies the input inside fc6 (so
  that a split fc6 can apply it to its gathered input); fc6 and fc7 compute from the dropped
  inputs, recomputed here in float64."""
  params, calls, sown = dropout_run('torchvision', train=True, rate=0.3)
  assert set(k for k in calls if 'dropout' in k) == {'fc6_in_dropout', 'fc7_in_dropout'}
  pool5 = np.asarray(grouped_conv.merge_groups(jnp.asarray(sown['pool5'])).reshape(4, -1),
                     np.float64)
  scale = calls['fc6_in_dropout']  # dropout of ones: 0 or 1 / keep
  assert_inverted_dropout(scale, np.ones_like(scale), 0.3)
  np.testing.assert_allclose(sown['fc6_out'], np.maximum(dense64(params, 'fc6', pool5 * scale),
                                                         0), rtol=1e-4, atol=1e-5)
  assert_inverted_dropout(calls['fc7_in_dropout'], sown['fc6_out'], 0.3)
  np.testing.assert_allclose(sown['fc7_out'], np.maximum(
      dense64(params, 'fc7', calls['fc7_in_dropout']), 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(calls['fc8'], dense64(params, 'fc8', sown['fc7_out']), rtol=1e-4,
                             atol=1e-5)  # fc7's output is not dropped
  params, calls, sown = dropout_run('torchvision', train=False, rate=0.3)  # eval drops nothing
  assert 'fc6_in_dropout' not in calls  # no mask is drawn
  pool5 = np.asarray(grouped_conv.merge_groups(jnp.asarray(sown['pool5'])).reshape(4, -1),
                     np.float64)
  np.testing.assert_allclose(sown['fc6_out'], np.maximum(dense64(params, 'fc6', pool5), 0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(calls['fc7_in_dropout'], sown['fc6_out'])


def _dot_generals(jaxpr):
  """Every dot_general in a jaxpr, nested ones (jnp's own jitted functions) included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      yield eqn
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', value)
      if hasattr(inner, 'eqns'):
        yield from _dot_generals(inner)


def test_num_classes_and_bfloat16():
  """model.dtype=bfloat16 with the float32 net's params: params stay float32, conv3 and fc7
  compute in bf16, and the logits are within bf16's error of the float32 net's. fc8 takes
  fc7's output cast up and returns float32 equal to the float64 product of that same input to
  float32 rounding (1e-6), over 100x closer than the same layer computed in bf16 by hand; its
  matmul has float32 operands and asks for HIGHEST precision (float32 on TPUs and GPUs too)."""
  params, x, logits32, _ = helpers.run_small()
  model16 = alexnet.AlexNet(**helpers.SMALL, dtype=jnp.bfloat16)
  dtypes = lambda tree: jax.tree.map(lambda p: p.dtype, tree)
  assert dtypes(helpers.init_params(model16, helpers.IMAGE)) == dtypes(params)  # stay float32
  apply16 = functools.partial(model16.apply, train=False, capture_intermediates=True,
                              mutable=['intermediates'])
  logits16, state = jax.jit(apply16)({'params': params}, x)
  inter = state['intermediates']
  assert logits16.shape == (2, 7) and logits16.dtype == jnp.float32
  assert inter['conv3_out'][0].dtype == jnp.bfloat16
  scale = np.abs(np.asarray(logits32)).max()
  assert np.abs(np.asarray(logits16) - np.asarray(logits32)).max() < 0.05 * scale
  # fc8 in float32.
  fc7_out, fc8_out = inter['fc7']['__call__'][0], inter['fc8']['__call__'][0]
  assert fc7_out.dtype == jnp.bfloat16 and fc8_out.dtype == jnp.float32
  np.testing.assert_array_equal(logits16, fc8_out)  # the logits are fc8's output itself
  fc8_in = np.maximum(np.asarray(fc7_out, np.float64), 0)  # fc7's ReLU; eval drops nothing
  truth = dense64(params, 'fc8', fc8_in)
  by_hand_bf16 = np.asarray(
      jnp.asarray(fc8_in, jnp.bfloat16) @ jnp.asarray(params['fc8']['kernel'], jnp.bfloat16)
      + jnp.asarray(params['fc8']['bias'], jnp.bfloat16), np.float64)
  scale = np.abs(truth).max()
  error = np.abs(np.asarray(fc8_out, np.float64) - truth).max() / scale
  error_bf16 = np.abs(by_hand_bf16 - truth).max() / scale
  assert error < 1e-6 and error < error_bf16 / 100, (error, error_bf16)
  fc8_dots = [eqn for eqn in _dot_generals(jax.make_jaxpr(apply16)({'params': params}, x).jaxpr)
              if eqn.outvars[0].aval.shape == (2, helpers.SMALL['num_classes'])]
  assert len(fc8_dots) == 1
  assert [v.aval.dtype for v in fc8_dots[0].invars] == [jnp.float32] * 2
  assert fc8_dots[0].params['precision'] == (jax.lax.Precision.HIGHEST,) * 2


def test_from_config_maps_every_switch():
  m = alexnet.from_config(helpers.config_model(norm='none', lrn_order='caffe', pool='disjoint',
                                      dropout=0.0, activation='tanh', dtype='bfloat16',
                                      init='he', num_classes=3))
  assert (m.norm, m.lrn_order, m.pool, m.dropout, m.activation, m.dtype, m.init_scheme,
          m.num_classes) == ('none', 'caffe', 'disjoint', 0.0, 'tanh', jnp.bfloat16, 'he', 3)


@pytest.mark.parametrize('override,message', [
    (dict(activation='gelu'), "activation='gelu'"), (dict(pool='avg'), "pool='avg'"),
    (dict(dropout=1.0), 'dropout=1.0'), (dict(dtype='float16'), "dtype='float16'"),
    (dict(num_classes=1), 'num_classes=1')])
def test_bad_model_config_is_one_clear_error(override, message):
  with pytest.raises(UserError, match=message):
    alexnet.from_config(helpers.config_model(**override))


@pytest.mark.parametrize('removed', ['conv3', 'conv4', 'conv5', 'conv3,conv5'])
def test_depth_ablation_removes_middle_convs_and_the_rest_adapts(removed):
  """model.remove_convs (paper section 6): the named layers hold no parameters, the next layer
  takes their input, and the count is the layer table's with those layers out (hand-computed:
  without conv3, conv4 sees pool2's 128 maps per group; without conv5, fc6 sees 6x6x384)."""
  config = alexnet_config.get_config()
  config.model.remove_convs = removed
  model = alexnet.from_config(config.model)
  params = abstract_params(model)
  gone = removed.split(',')
  assert not set(gone) & set(params) and set(params) >= {'conv1', 'conv2', 'fc6', 'fc7', 'fc8'}
  convs = {name: (kh, kw, cin, cout) for name, kh, kw, cin, cout in helpers.PAPER_CONVS}
  count = helpers.paper_param_count()
  for name in gone:
    kh, kw, cin, cout = convs[name]
    count -= kh * kw * cin * cout + cout
  if 'conv3' in gone and 'conv4' not in gone:  # conv4's kernels: 128 input maps, not 192
    count -= 3 * 3 * (192 - 128) * 384
  if 'conv5' in gone:  # fc6 sees conv4's 384 maps (6 x 6 after pool5), not 256
    count += 6 * 6 * (384 - 256) * 4096
  assert sum(x.size for x in jax.tree.leaves(params)) == count
  logits = jax.eval_shape(lambda p, x: model.apply({'params': p}, x, train=False), params,
                          jax.ShapeDtypeStruct((2, 227, 227, 3), jnp.float32))
  assert logits.shape == (2, 1000)


def test_depth_ablation_rejects_other_layers():
  config = alexnet_config.get_config()
  config.model.remove_convs = 'conv1'
  with pytest.raises(UserError, match='conv1 cannot be removed; choose from conv3, conv4, conv5'):
    alexnet.from_config(config.model)


# ---- normalisation (model.norm): batch norm against its formula in float64 ----

BN_CHANNELS = {'bn1': 96, 'bn2': 256, 'bn3': 384, 'bn4': 384, 'bn5': 256}  # the paper's convs


def test_parameter_count_with_batch_norm():
  """Batch norm adds a scale and a bias per channel of each normalised layer (and holds a running
  mean and variance per channel, outside the params), by hand:
  batchnorm (layers 1 and 2): 2 x (96 + 256) = 704;
  batchnorm_all (all five convs): 2 x (96 + 256 + 384 + 384 + 256) = 2,752."""
  for norm, extra, layers in (('batchnorm', 704, ('bn1', 'bn2')),
                              ('batchnorm_all', 2_752, tuple(BN_CHANNELS))):
    model = alexnet.AlexNet(norm=norm)
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               {'params': jax.random.PRNGKey(0)}, jnp.zeros((1, 227, 227, 3)))
    assert sum(x.size for x in jax.tree.leaves(variables['params'])) == 60_965_224 + extra
    assert sum(x.size for x in jax.tree.leaves(variables['batch_stats'])) == extra
    assert set(variables['batch_stats']) == set(layers)
    for name in layers:  # G x C/G: one half per group, as the conv biases
      half = (2, BN_CHANNELS[name] // 2)
      assert variables['params'][name]['scale'].shape == variables['params'][name]['bias'].shape
      assert variables['params'][name]['scale'].shape == half, name
      assert variables['batch_stats'][name]['mean'].shape == half, name
      assert variables['batch_stats'][name]['var'].shape == half, name


def bn_run(norm, train, lrn_order='paper'):
  """A SMALL net with batch norm on 4 images, its scale, bias and running statistics set to
  random values (so each term of the formula shows). Returns (the variables it ran with, each
  module's output (capture_intermediates) and the sown activations in float64, the
  batch_stats it returned)."""
  model = alexnet.AlexNet(**helpers.SMALL, norm=norm, lrn_order=lrn_order, dropout=0.0)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.PRNGKey(0)}, jnp.zeros((1, helpers.IMAGE, helpers.IMAGE, 3)))
  rng = np.random.default_rng(1)
  params, stats = dict(variables['params']), {}
  for name, value in variables['batch_stats'].items():
    shape = value['mean'].shape
    params[name] = {'scale': rng.uniform(0.5, 1.5, shape).astype(np.float32),
                    'bias': rng.normal(0, 0.5, shape).astype(np.float32)}
    stats[name] = {'mean': rng.normal(0, 0.5, shape).astype(np.float32),
                   'var': rng.uniform(0.5, 2.0, shape).astype(np.float32)}
  variables = {'params': params, 'batch_stats': stats}
  x = jax.random.uniform(jax.random.PRNGKey(42), (4, helpers.IMAGE, helpers.IMAGE, 3),
                         minval=-1, maxval=1)
  _, state = jax.jit(functools.partial(
      model.apply, train=train, capture_intermediates=True,
      mutable=['intermediates', 'batch_stats']))(variables, x)
  inter = state['intermediates']
  outputs = {name: np.asarray(v['__call__'][0], np.float64) for name, v in inter.items()
             if isinstance(v, dict) and '__call__' in v}
  outputs.update({name: np.asarray(v[0], np.float64) for name, v in inter.items()
                  if isinstance(v, tuple)})
  return variables, outputs, jax.device_get(state['batch_stats'])


def bn_float64(x_GxBxHxWxC, scale, bias, mean=None, var=None):
  """Batch norm written out: per channel of each group, the mean and (biased) variance over
  batch and space (or the given running ones), (x - mean) / sqrt(var + eps) * scale + bias.
  Returns (y, the mean and variance used)."""
  x = np.asarray(x_GxBxHxWxC, np.float64)
  if mean is None:
    mean = x.mean(axis=(1, 2, 3))
    var = ((x - mean[:, None, None, None, :]) ** 2).mean(axis=(1, 2, 3))
  mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
  b = lambda v: np.asarray(v, np.float64)[:, None, None, None, :]
  y = (x - b(mean)) / np.sqrt(b(var) + alexnet.BN_EPSILON) * b(scale) + b(bias)
  return y, mean, var


@pytest.mark.parametrize('order', ['paper', 'caffe'])
def test_batchnorm_in_train_mode_is_the_formula_where_lrn_sits(order):
  """norm=batchnorm: ReLU -> BN -> pool (the paper's LRN place) or ReLU -> pool -> BN (Caffe's),
  with this batch's statistics, and the running averages moved by momentum 0.9:
  new = 0.9 old + 0.1 batch."""
  variables, out, new_stats = bn_run('batchnorm', train=True, lrn_order=order)
  assert set(new_stats) == {'bn1', 'bn2'} and 'bn3' not in out
  act = out['conv1_out']  # after the ReLU
  bn_in = act if order == 'paper' else max_pool_np(helpers.halves(act), 3, 2)
  if order == 'caffe':  # back to G x B x H x W x C/G
    bn_in = np.stack(np.split(bn_in, 2, axis=-1))
  p, old = variables['params']['bn1'], variables['batch_stats']['bn1']
  expected, mean, var = bn_float64(bn_in, p['scale'], p['bias'])
  np.testing.assert_allclose(out['bn1'], expected, rtol=1e-5, atol=1e-5)
  pool1 = (max_pool_np(helpers.halves(expected), 3, 2) if order == 'paper'
           else helpers.halves(expected))
  np.testing.assert_allclose(helpers.halves(out['pool1']), pool1, rtol=1e-5, atol=1e-5)
  momentum = 0.9
  np.testing.assert_allclose(new_stats['bn1']['mean'], momentum * old['mean'] +
                             (1 - momentum) * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_stats['bn1']['var'], momentum * old['var'] +
                             (1 - momentum) * var, rtol=1e-5, atol=1e-6)
  if order == 'paper':  # layer 2 alike: its batch norm sees conv2's ReLU output
    p2 = variables['params']['bn2']
    np.testing.assert_allclose(out['bn2'], bn_float64(out['conv2_out'], p2['scale'],
                                                      p2['bias'])[0], rtol=1e-5, atol=1e-5)


def test_batchnorm_in_eval_mode_uses_the_running_averages():
  variables, out, new_stats = bn_run('batchnorm', train=False)
  for name, source in (('bn1', 'conv1_out'), ('bn2', 'conv2_out')):
    p, stats = variables['params'][name], variables['batch_stats'][name]
    expected, _, _ = bn_float64(out[source], p['scale'], p['bias'], stats['mean'], stats['var'])
    np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-5)
    for key in ('mean', 'var'):  # evaluation leaves them alone
      np.testing.assert_array_equal(new_stats[name][key], stats[key])


@pytest.mark.parametrize('train', [True, False])
def test_batchnorm_all_is_conv_bn_relu_in_every_conv(train):
  """norm=batchnorm_all: conv -> BN -> ReLU in all five conv layers (the later practice), no
  normalisation before the pools."""
  variables, out, new_stats = bn_run('batchnorm_all', train=train)
  assert set(new_stats) == {'bn1', 'bn2', 'bn3', 'bn4', 'bn5'}
  for layer in range(1, 6):
    name = f'bn{layer}'
    p, stats = variables['params'][name], variables['batch_stats'][name]
    running = (None, None) if train else (stats['mean'], stats['var'])
    expected, _, _ = bn_float64(out[f'conv{layer}'], p['scale'], p['bias'], *running)
    np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[f'conv{layer}_out'], np.maximum(expected, 0), rtol=1e-5,
                               atol=1e-5)
  np.testing.assert_array_equal(helpers.halves(out['pool1']),
                                max_pool_np(helpers.halves(out['conv1_out']), 3, 2))


def test_batchnorm_statistics_leave_out_the_masked_examples():
  """Examples masked out (images that could not be decoded: blanks) take no part in batch
  norm's training statistics: the running averages and the other examples' logits are those of
  the batch without them. A mask with no True takes every example."""
  model = alexnet.AlexNet(**helpers.SMALL, norm='batchnorm_all', dropout=0.0)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.PRNGKey(0)}, jnp.zeros((1, helpers.IMAGE, helpers.IMAGE, 3)))
  x = jax.random.uniform(jax.random.PRNGKey(42), (4, helpers.IMAGE, helpers.IMAGE, 3),
                         minval=-1, maxval=1)
  x = x.at[2].set(0.0).at[3].set(5.0)  # a blank, and one far from the others
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  logits, stats = apply(variables, x, example_mask=jnp.array([True, True, False, False]))
  alone_logits, alone_stats = apply(variables, x[:2])
  np.testing.assert_allclose(logits[:2], alone_logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats, alone_stats)
  unmasked_logits, unmasked_stats = apply(variables, x)
  assert not np.allclose(unmasked_stats['batch_stats']['bn1']['mean'],
                         alone_stats['batch_stats']['bn1']['mean'], atol=1e-3)
  none_logits, none_stats = apply(variables, x, example_mask=jnp.zeros(4, bool))
  np.testing.assert_allclose(none_logits, unmasked_logits, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               none_stats, unmasked_stats)


def test_from_config_maps_norm():
  """model.norm is the one normalisation key (configs of the old model.lrn switch are read by
  config_changes.upgrade, tests/test_config_changes.py)."""
  assert alexnet.from_config(helpers.config_model()).norm == 'lrn'  # the paper's (3.3)
  for norm in alexnet.NORMS:
    assert alexnet.from_config(helpers.config_model(norm=norm)).norm == norm
  helpers.one_line_error(lambda: alexnet.from_config(helpers.config_model(norm='layernorm')),
                         "norm='layernorm'; choose one of lrn, batchnorm, batchnorm_all, none")
