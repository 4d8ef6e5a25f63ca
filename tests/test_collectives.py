"""alexnet_jax/collectives.py, on the optimized HLO of the compiled train step: the paper's
split communicates only where the paper's two GPUs did (the gathers and gradient sums that
collectives.expected_model_collectives derives from the layer shapes, nothing at conv1, conv2,
conv4, conv5, LRN or pooling), and data parallelism only sums each gradient element once."""
import functools

import jax
import jax.numpy as jnp

from alexnet_jax import collectives
from alexnet_jax import train
from tests import helpers

MODEL, IMAGE, BATCH = helpers.SPLIT_MODEL, helpers.SPLIT_IMAGE, helpers.SPLIT_BATCH


def compiled_collectives(data, model):
  mesh = helpers.mesh_of(data, model)
  with jax.set_mesh(mesh):
    state = jax.eval_shape(
        lambda: train.create_train_state(MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh))
    batch = {'image': jax.ShapeDtypeStruct((BATCH, IMAGE, IMAGE, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
    hlo = train.jit_train_step(state, mesh).lower(state, batch).compile()
  return [c for c in collectives.collectives(hlo.as_text()) if c.group_size > 1]


def test_split_communicates_only_where_the_papers_gpus_did():
  found = compiled_collectives(1, 2)
  expected = collectives.expected_model_collectives(MODEL, BATCH, IMAGE)
  # Non-scalar collectives: gathers of conv3's, fc6's, fc7's, fc8's inputs and the logits
  # forward; sums of the same inputs' gradients backward. Nothing else (a stray all-gather of
  # any activation or weight changes these lists).
  gathers = sorted(n for c in found if c.kind == 'all-gather' for n in c.elements() if n > 1)
  reduces = sorted(n for c in found if c.kind in ('all-reduce', 'reduce-scatter')
                   for n in c.elements() if n > 1)
  assert gathers == expected['gather']
  assert reduces == expected['reduce']
  assert not [c for c in found if c.kind in ('collective-permute', 'all-to-all')]
  # The only scalars exchanged are the partial sums of the gradient norm (a metric).
  assert all(c.kind == 'all-reduce' for c in found if max(c.elements()) == 1)
  for c in found:
    for layer in ('conv1', 'conv2', 'conv4', 'conv5', 'lrn', 'pool'):
      assert f'/{layer}/' not in c.op_name, (layer, c)


def test_data_parallel_only_reduces_gradients():
  found = compiled_collectives(4, 1)
  params = jax.eval_shape(functools.partial(MODEL.init, train=False),
                          {'params': jax.random.PRNGKey(0)}, jnp.zeros((1, IMAGE, IMAGE, 3)))
  assert not [c for c in found if c.kind != 'all-reduce']  # no activation is ever gathered
  # Every gradient element is summed over 'data' exactly once, and nothing else of size > 1
  # (the per-group kernels may be summed in slices, so compare totals).
  reduced = sum(n for c in found for n in c.elements() if n > 1)
  assert reduced == sum(x.size for x in jax.tree.leaves(params))
