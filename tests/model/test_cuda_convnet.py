"""alexnet_jax/model/cuda_convnet.py, cuda-convnet's CIFAR-10 net (layers-conv-local-11pct.cfg at
3878e8f): every parameter's shape and the count by hand, each layer's output size by cuda-convnet's
own rules, the init per layer, the response norm on our LRN op against cuda-convnet's formula
written out in float64 loops, the pools against cuda-convnet's clipped windows, the locally
connected layers against a direct loop (one 3x3xC kernel per output position), and the config
switches the net refuses. The AlexNet path through model.from_config is the AlexNet as before."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alexnet_jax import model as model_lib
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import cuda_convnet
from alexnet_jax.model import lrn
from tests.helpers import alexnet_config


@pytest.fixture(scope='module')
def net_and_run():
  """The 11 % net's variables and one forward pass of 2 images with its intermediates."""
  net = cuda_convnet.CudaConvnetCifar10(norm='lrn')
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 24, 24, 3)) * 60.0
  variables = net.init(jax.random.PRNGKey(0), images[:1], train=False)
  logits, state = net.apply(variables, images, train=True, mutable=['intermediates'])
  inter = {k: np.asarray(v[0]) for k, v in state['intermediates'].items()}
  return variables['params'], np.asarray(images), np.asarray(logits), inter


def test_shapes_and_parameter_count_by_hand(net_and_run):
  params, _, logits, inter = net_and_run
  # Sizes by cuda-convnet's rules (layer.py at 3878e8f): a conv keeps 24 and 12 (1 + (2*2 + 24
  # - 5) / 1 = 24); a pool gives ceil((24 - 3) / 2) + 1 = 12, then ceil((12 - 3) / 2) + 1 = 6.
  assert [cuda_convnet.pooled_size(s) for s in (24, 12)] == [12, 6]
  assert inter['pool1'].shape == (2, 12, 12, 64) and inter['pool2'].shape == (2, 6, 6, 64)
  assert inter['local3_out'].shape == inter['local4_out'].shape == (2, 6, 6, 32)
  assert logits.shape == (2, 10) and logits.dtype == np.float32
  shapes = jax.tree.map(lambda a: a.shape, params)
  assert shapes == {
      'conv1': {'kernel': (5, 5, 3, 64), 'bias': (64,)},  # sharedBiases=1: one per map
      'conv2': {'kernel': (5, 5, 64, 64), 'bias': (64,)},
      # one 3*3*64 = 576-input kernel per output position (6 x 6) and map; a bias per output
      'local3': {'kernel': (6, 6, 576, 32), 'bias': (6, 6, 32)},
      'local4': {'kernel': (6, 6, 288, 32), 'bias': (6, 6, 32)},
      'fc10': {'kernel': (6 * 6 * 32, 10), 'bias': (10,)},
  }
  by_hand = ((5 * 5 * 3 * 64 + 64)  # conv1: 4,864
             + (5 * 5 * 64 * 64 + 64)  # conv2: 102,464
             + (36 * 3 * 3 * 64 * 32 + 36 * 32)  # local3: 664,704
             + (36 * 3 * 3 * 32 * 32 + 36 * 32)  # local4: 332,928
             + (1152 * 10 + 10))  # fc10: 11,530
  assert by_hand == 1_116_490
  assert sum(a.size for a in jax.tree.leaves(params)) == by_hand


def test_multiply_adds_by_hand(net_and_run):
  # The benchmark's FLOP count (benchmarks/measure.py): per image at 24 px, each conv at every
  # output position of its padded, same-size map, the pools halving 24 -> 12 -> 6.
  by_hand = (24 * 24 * 5 * 5 * 3 * 64  # conv1: 2,764,800
             + 12 * 12 * 5 * 5 * 64 * 64  # conv2: 14,745,600
             + 6 * 6 * 3 * 3 * 64 * 32  # local3: 663,552
             + 6 * 6 * 3 * 3 * 32 * 32  # local4: 331,776
             + 6 * 6 * 32 * 10)  # fc10: 11,520
  assert by_hand == 18_517_248
  assert cuda_convnet.macs_per_image(24, 10) == by_hand
  # Unshared and dense weights are used once per image each: their multiply-adds are their
  # kernels' sizes, read off the initialised net.
  params = net_and_run[0]
  unshared = sum(params[name]['kernel'].size for name in ('local3', 'local4', 'fc10'))
  assert unshared == 663_552 + 331_776 + 11_520
  assert cuda_convnet.macs_per_image(32, 7) == (32 * 32 * 75 * 64 + 16 * 16 * 1600 * 64
                                                + 8 * 8 * (576 + 288) * 32 + 8 * 8 * 32 * 7)


def test_init_is_the_files_initw_with_zero_biases(net_and_run):
  params = net_and_run[0]
  init_w = {'conv1': 1e-4, 'conv2': 1e-2, 'local3': 4e-2, 'local4': 4e-2, 'fc10': 1e-2}
  for name, std in init_w.items():
    kernel = np.asarray(params[name]['kernel'], np.float64)
    # >= 4,800 draws each: the sample std is within 5 % of the true one by far.
    assert abs(kernel.std() / std - 1) < 0.05 and abs(kernel.mean()) < 0.1 * std, name
    assert not np.any(params[name]['bias']), name


def cuda_convnet_response_norm(x, size, scale, power):
  """cuda-convnet's cross-map response norm, as its code computes it, in float64 loops:
  scale' = scale / size (layer.py line 1045 at 3878e8f); for map f the window is
  [f - size // 2, f - size // 2 + size) clipped to [0, N) (conv_util.cu lines 1054, 1070-1071);
  out = x * (1 + scale' * sum x^2) ** -pow (lines 1085-1087)."""
  x = np.asarray(x, np.float64)
  n_maps = x.shape[-1]
  out = np.empty_like(x)
  for f in range(n_maps):
    start = f - size // 2
    total = np.zeros(x.shape[:-1])
    for g in range(max(0, start), min(n_maps, start + size)):
      total += x[..., g] ** 2
    out[..., f] = x[..., f] * (1.0 + (scale / size) * total) ** -power
  return out


@pytest.mark.parametrize('impl', lrn.IMPLS)
def test_response_norm_is_cuda_convnets_formula(impl):
  x = np.random.default_rng(0).normal(0.0, 40.0, (2, 3, 3, 64)).astype(np.float32)
  size, scale, power = cuda_convnet.NORM_SIZE, cuda_convnet.NORM_SCALE, cuda_convnet.NORM_POW
  assert (size, scale, power) == (5, 0.001, 0.75)  # [rnorm1], [rnorm2] of the file
  params = lrn.from_cuda_convnet(size, scale, power)
  assert params == {'depth_radius': 2, 'bias': 1.0, 'alpha': 0.001 / 5, 'beta': 0.75}
  ours = np.asarray(lrn.local_response_norm(jnp.asarray(x), impl=impl, **params), np.float64)
  truth = cuda_convnet_response_norm(x, size, scale, power)
  np.testing.assert_allclose(ours, truth, rtol=2e-6, atol=1e-6)
  assert np.max(np.abs(truth / x - 1)) > 0.3  # the norm does something at this scale
  # The window of a size-9 norm (a2a6af8's) is centred too: f-4..f+4.
  np.testing.assert_allclose(
      np.asarray(lrn.local_response_norm(jnp.asarray(x), impl=impl,
                                         **lrn.from_cuda_convnet(9, scale, power))),
      cuda_convnet_response_norm(x, 9, scale, power), rtol=2e-6, atol=1e-6)
  with pytest.raises(ValueError, match='odd'):
    lrn.from_cuda_convnet(4, scale, power)


def test_pools_are_cuda_convnets_clipped_windows(net_and_run):
  """Max over the part of each 3x3 window (start 2p, 2q) inside the image (conv_util.cu's
  pooling; layer.py line 1018's ceil rule gives the windows), and the same gradient from the
  fast pool as from XLA's."""
  x = np.random.default_rng(1).normal(size=(2, 12, 12, 4)).astype(np.float32)
  truth = np.empty((2, 6, 6, 4), np.float32)
  for p in range(6):
    for q in range(6):
      truth[:, p, q] = x[:, 2 * p:2 * p + 3, 2 * q:2 * q + 3].max(axis=(1, 2))
  for impl in ('fast', 'xla'):
    np.testing.assert_array_equal(cuda_convnet.max_pool(jnp.asarray(x), impl), truth)
  grads = [jax.grad(lambda y, i=impl: jnp.sum(cuda_convnet.max_pool(y, i) ** 2))(jnp.asarray(x))
           for impl in ('fast', 'xla')]
  np.testing.assert_array_equal(grads[0], grads[1])
  assert np.all(np.isfinite(grads[0]))


def direct_local(x, kernel, bias):
  """A locally connected 3x3 layer, pad 1, by loops in float64: the output at (i, j), map f is
  bias[i, j, f] + sum over c, dy, dx of x[i + dy - 1, j + dx - 1, c] * K_ij[c, dy, dx, f], with
  K_ij = kernel[i, j] read as (C, 3, 3, F) (jax's patches put the channel first) and the
  positions outside the maps zero."""
  x, kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, bias))
  b, h, w, c = x.shape
  padded = np.zeros((b, h + 2, w + 2, c))
  padded[:, 1:-1, 1:-1] = x
  out = np.empty((b, h, w, kernel.shape[-1]))
  for i in range(h):
    for j in range(w):
      k = kernel[i, j].reshape(c, 3, 3, -1)  # its own kernel
      patch = padded[:, i:i + 3, j:j + 3, :]  # rows i-1..i+1, cols j-1..j+1
      out[:, i, j] = np.einsum('byxc,cyxf->bf', patch, k) + bias[i, j]
  return out


def test_locally_connected_layers_against_a_direct_loop(net_and_run):
  params, _, _, inter = net_and_run
  # Biases are 0 at init: give them values so that the loop checks them too.
  rng = np.random.default_rng(2)
  for name, before in (('local3', 'pool2'), ('local4', 'local3_out')):
    bias = rng.normal(size=params[name]['bias'].shape).astype(np.float32)
    layer = cuda_convnet.CudaConvnetCifar10()
    changed = jax.tree.map(lambda a: a, params)
    changed[name] = {'kernel': params[name]['kernel'], 'bias': jnp.asarray(bias)}
    _, state = layer.apply({'params': changed}, jnp.asarray(net_and_run[1]), train=False,
                           mutable=['intermediates'])
    out = np.asarray(state['intermediates'][name + '_out'][0])
    source = inter[before] if name == 'local3' else np.asarray(
        state['intermediates']['local3_out'][0])
    truth = np.maximum(direct_local(source, params[name]['kernel'], bias), 0.0)  # ReLU
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-5 * np.abs(truth).max())
    assert (truth > 0).mean() > 0.2  # not all clipped by the ReLU


def model_config(**overrides):
  config = alexnet_config.get_config().model
  config.update({'arch': 'cuda_convnet_cifar10', 'num_classes': 10, 'dropout': 0.0,
                 **overrides})
  return config


def test_from_config_and_what_it_refuses():
  net = model_lib.from_config(model_config(norm='none'))
  assert isinstance(net, cuda_convnet.CudaConvnetCifar10) and net.norm == 'none'
  for key, value in (('norm', 'batchnorm'), ('dropout', 0.5), ('activation', 'tanh'),
                     ('pool', 'disjoint'), ('lrn_order', 'caffe'), ('width', 0.5),
                     ('remove_convs', 'conv3'), ('init', 'he'), ('arch', 'vgg')):
    with pytest.raises(UserError, match=f'config.model.{key}='):
      model_lib.from_config(model_config(**{key: value}))


def test_the_alexnet_path_is_the_alexnet():
  """model.from_config on the default config is alexnet.from_config's net, field for field;
  a stored config without model.arch is the AlexNet's."""
  config = alexnet_config.get_config('tiny').model
  assert model_lib.from_config(config) == alexnet.from_config(config)
  stored = ml_collections.ConfigDict(config.to_dict())
  del stored['arch']
  assert model_lib.from_config(stored) == alexnet.from_config(config)
