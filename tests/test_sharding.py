"""alexnet_jax/sharding.py: the paper's split (model axis) and data parallelism train the same
net as one unsharded device (the same losses, first gradients and params after 3 steps, to
float32 rounding; with batch norm also the same running statistics, so its statistics are the
global batch's; with the augmentation on the device, the same augmented images), each device
holds half of each split parameter and its momentum, and bad meshes are one-line errors. Each
batch has an unreadable example (valid False)."""
import contextlib
import functools

import jax
import ml_collections
import numpy as np
import pytest

from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.data import device_preprocessing
from alexnet_jax.data import preprocessing
from alexnet_jax.errors import UserError
from tests import helpers

MODEL, IMAGE, BATCH = helpers.SPLIT_MODEL, helpers.SPLIT_IMAGE, helpers.SPLIT_BATCH


def batches(n=3, num_classes=10):
  rng = np.random.default_rng(0)
  # One example in each batch is marked unreadable: no weight in the loss, no part in batch
  # norm's statistics, on every mesh alike.
  return [{'image': rng.standard_normal((BATCH, IMAGE, IMAGE, 3)).astype(np.float32) * 50,
           'label': rng.integers(0, num_classes, BATCH).astype(np.int32),
           'valid': np.arange(BATCH) != k % BATCH} for k in range(n)]


def with_weight_decay(state, weight_decay):
  """state with the optimizer's injected weight decay set (the same compiled step runs it)."""
  return state.replace(opt_state=optim.with_hyperparams(state.opt_state,
                                                        {'weight_decay': weight_decay}))


def first_step_gradients(state):
  """The gradients the first train step applied, read back from the paper's update
  (optim.paper_sgd, helpers.sgd) after a first step without weight decay: from v = 0 it leaves
  v = -lr g, so g = -v / lr (to float32 rounding, ~1e-7 of each element, far inside the
  tolerances). The step's own gradients, without compiling a second program for them. (With
  weight decay, wd w of a bias of 1 would bury gradients of 1e-8 in v's rounding.)"""
  lr = float(jax.device_get(state.opt_state.hyperparams['learning_rate']))
  velocity = jax.device_get(state.opt_state.inner_state[2].trace)
  return jax.tree.map(lambda v: -np.asarray(v, np.float64) / lr, velocity)


def model_for(norm):
  """The split test net with model.norm=norm, or with torchvision's dropout placement (its
  mask of fc6's flat input is drawn outside the split layer and applied inside) and 7 classes
  (fc8 does not split over 2 devices: kept whole on each)."""
  if norm == 'torchvision_dropout_seven_classes':
    return MODEL.clone(dropout_placement='torchvision', num_classes=7)
  return MODEL if norm == 'lrn' else MODEL.clone(norm=norm)


def run(mesh, norm='lrn'):
  """3 train steps (the first without weight decay: first_step_gradients); returns (losses,
  first-step grads, final params, final state), the first three as numpy."""
  model = model_for(norm)
  if mesh is None:
    state = train.create_train_state(model, helpers.sgd(), jax.random.PRNGKey(0), IMAGE)
    step = jax.jit(train.train_step)
    put = lambda b: b
  else:
    with jax.set_mesh(mesh):
      state = train.create_train_state(model, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh)
    step = train.jit_train_step(state, mesh)
    put = lambda b: sharding.global_batch(b, mesh)
  weight_decay = float(jax.device_get(state.opt_state.hyperparams['weight_decay']))
  state, losses, first_grads = with_weight_decay(state, 0.0), [], None
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    for batch in batches(num_classes=model.num_classes):
      state, metrics = step(state, put(batch))
      losses.append(float(metrics['loss']))
      if first_grads is None:  # then the paper's weight decay for steps 2 and 3
        first_grads = first_step_gradients(state)
        state = with_weight_decay(state, weight_decay)
  return np.array(losses), first_grads, jax.device_get(state.params), state


@functools.lru_cache(maxsize=None)
def unsharded(norm='lrn'):
  return run(None, norm)


# Each (variant, mesh) compiles its own init and step (and each variant its unsharded
# reference's): the cases are the layouts (model, data, both) and the placements that differ.
@pytest.mark.parametrize('data,model,variant', [(1, 2, 'lrn'), (4, 1, 'lrn'), (4, 2, 'lrn'),
                                                (2, 2, 'torchvision_dropout_seven_classes')])
def test_sharded_training_matches_unsharded(data, model, variant):
  ref_losses, ref_grads, ref_params, _ = unsharded(variant)
  losses, grads, params, state = run(helpers.mesh_of(data, model), variant)
  # Float32 tolerance: the sharded step sums the same terms in another order (per-shard
  # partial sums of the batch and of the FC/conv3 contractions, then an all-reduce), so
  # results agree to a few float32 ulps of the largest terms, not bit for bit.
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # And the params really were split: each device holds half of each conv kernel bank.
  if model == 2:
    kernel = state.params['conv2']['kernel']
    assert {s.data.shape[0] for s in kernel.addressable_shards} == {1}


@pytest.mark.parametrize('norm,data,model', [('batchnorm', 2, 2), ('batchnorm_all', 2, 2)])
def test_batch_norm_under_a_mesh_matches_unsharded(norm, data, model):
  """Batch norm on a mesh: under jit the mean over the batch axis, split over 'data', is the
  global batch's (XLA sums across the devices), so two data shards train the same params and
  the same running statistics as one device (per-shard statistics of 4 images each would
  not). With model=2 each device holds its group's half of scale, bias, mean and variance.
  (Both on data=2 x model=2, which shows both.)
  (This test found the max-pool backward relying on XLA computing its input alike twice:
  model/pooling.py.)"""
  ref_losses, _, ref_params, ref_state = unsharded(norm)
  losses, _, params, state = run(helpers.mesh_of(data, model), norm)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  stats, ref_stats = jax.device_get((state.batch_stats, ref_state.batch_stats))
  assert set(stats) == set(ref_stats) == (
      {'bn1', 'bn2'} if norm == 'batchnorm' else {f'bn{k}' for k in range(1, 6)})
  assert jax.tree.structure(stats) == jax.tree.structure(ref_stats)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
  # The 3 steps moved them from their initial 0 and 1.
  assert np.abs(ref_stats['bn1']['mean']).max() > 0.01
  assert np.abs(ref_stats['bn1']['var'] - 1).max() > 0.01
  if model == 2:
    for leaf in (state.params['bn1']['scale'], state.batch_stats['bn2']['var']):
      assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}
      assert leaf.sharding.spec == jax.sharding.PartitionSpec('model')


def test_device_augmentation_under_a_mesh_matches_one_device():
  """input.augment_on=device: uint8 patches and their positions split over 'data' (the split
  on 'model' too) crop, flip, light and train as on one device: the draws are per example, so
  the augmented images are bit-identical and the losses agree to float32 rounding."""
  rng = np.random.default_rng(1)
  resize = IMAGE + 9
  mean = rng.uniform(90, 150, (resize, resize, 3)).astype(np.float32)
  prep = preprocessing.PreprocessParams(
      resize_size=resize, image_size=IMAGE, mean=mean, std=np.array([60.0, 58.0, 57.0]),
      random_flip=True, lighting_std=0.1, eigval=np.array([55.0, 5.0, 1.0]),
      eigvec=np.eye(3), random_crop=True)
  aug = device_preprocessing.Augmentation.of(prep, seed=4)
  steps = [{'image': rng.integers(0, 256, (BATCH, resize, resize, 3), dtype=np.uint8),
            'label': rng.integers(0, 10, BATCH).astype(np.int32),
            'epoch': np.full(BATCH, k, np.int32),
            'index': rng.permutation(100)[:BATCH].astype(np.int32)} for k in range(2)]

  def losses_and_images(mesh):
    with jax.set_mesh(mesh):
      state = train.create_train_state(MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh)
      step = train.jit_train_step(state, mesh, aug)
      images = jax.jit(device_preprocessing.train_images)(
          aug, *(sharding.global_batch(steps[0], mesh)[k] for k in ('image', 'epoch', 'index')))
      losses = []
      for batch in steps:
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        losses.append(float(metrics['loss']))
    return np.array(losses), np.asarray(images)

  ref_losses, ref_images = losses_and_images(helpers.mesh_of(1, 1))
  losses, images = losses_and_images(helpers.mesh_of(4, 2))
  np.testing.assert_array_equal(images, ref_images)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert ref_losses[0] != ref_losses[1]  # trained on both batches


def test_each_parameter_shard_is_half_its_size():
  mesh = helpers.mesh_of(1, 2)
  with jax.set_mesh(mesh):
    state = train.create_train_state(MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh)
  for name, leaf in [('conv1', state.params['conv1']['kernel']),
                     ('conv3', state.params['conv3']['kernel']),
                     ('conv5', state.params['conv5']['bias']),
                     ('fc6', state.params['fc6']['kernel']),
                     ('fc8', state.params['fc8']['bias'])]:
    shards = leaf.addressable_shards
    assert len(shards) == 2 and shards[0].device != shards[1].device, name
    assert all(s.data.size * 2 == leaf.size for s in shards), name
    assert shards[0].index != shards[1].index, name  # two halves, not two copies
  # The momentum lives with its parameter.
  trace = state.opt_state.inner_state[2].trace
  assert trace['fc7']['kernel'].sharding.spec == jax.sharding.PartitionSpec(None, 'model')


def test_mesh_errors():
  """(The batches against the mesh: tests/test_config_validation.py, check_batches.)"""
  with pytest.raises(UserError, match='model=3'):
    sharding.create_mesh(ml_collections.ConfigDict({'data': -1, 'model': 3}), jax.devices())
  with pytest.raises(UserError, match='data=3'):
    sharding.create_mesh(ml_collections.ConfigDict({'data': 3, 'model': 2}), jax.devices())
