"""alexnet_jax/collectives.py, on the optimized HLO of the compiled train step: the paper's
split communicates only where the paper's two GPUs did (the gathers and gradient sums that
collectives.expected_model_collectives derives from the layer shapes, nothing at conv1, conv2,
conv4, conv5, LRN or pooling), and data parallelism only sums each gradient element once."""
import functools

import jax
import jax.numpy as jnp

from alexnet_jax import collectives
from alexnet_jax import sharding
from alexnet_jax import train
from tests import helpers

MODEL, IMAGE, BATCH = helpers.SPLIT_MODEL, helpers.SPLIT_IMAGE, helpers.SPLIT_BATCH


def compiled_collectives(data, model):
  """The collectives of the train step on a data x model mesh, compiled from shapes alone. The
  state's shapes carry their placement and the batch has the loader's 'valid' flags, so the
  program is test_sharding.py's on the same mesh, bit for bit: one compilation (one cache
  entry) for both files."""
  mesh = helpers.mesh_of(data, model)
  with jax.set_mesh(mesh):
    shapes = jax.eval_shape(
        lambda: train.create_train_state(MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh))
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                         sharding.tree_shardings(shapes, mesh))
    batch = {'image': jax.ShapeDtypeStruct((BATCH, IMAGE, IMAGE, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32),
             'valid': jax.ShapeDtypeStruct((BATCH,), jnp.bool_)}
    hlo = train.jit_train_step(state, mesh).lower(state, batch).compile()
  return [c for c in collectives.collectives(hlo.as_text()) if c.group_size > 1]


def test_split_communicates_only_where_the_papers_gpus_did():
  found = compiled_collectives(1, 2)
  expected = collectives.expected_model_collectives(MODEL, BATCH, IMAGE)
  # Non-scalar collectives: gathers of conv3's, fc6's, fc7's, fc8's inputs and the logits
  # forward; reduce-scatters of the same inputs' gradients backward (each device keeps the
  # sum of its own half: the paper's exchange, not an all-reduce of the whole gradient).
  # Nothing else (a stray all-gather of any activation or weight changes these lists).
  gathers = sorted(n for c in found if c.kind == 'all-gather' for n in c.elements() if n > 1)
  scatters = sorted(n for c in found if c.kind == 'reduce-scatter' for n in c.input_elements())
  assert gathers == expected['gather']
  assert scatters == expected['reduce_scatter']
  assert not [c for c in found if c.kind in ('collective-permute', 'all-to-all')]
  # The only all-reduces are scalars: the partial sums of the gradient norm (a metric).
  assert all(max(c.elements()) == 1 for c in found if c.kind == 'all-reduce')
  for c in found:
    for layer in ('conv1', 'conv2', 'conv4', 'conv5', 'lrn', 'pool'):
      assert f'/{layer}/' not in c.op_name, (layer, c)
  # Each backward collective sends what its forward gather did: the paper's exchange.
  sent = {(c.op_name.split('/')[-3], c.kind): c.bytes_sent_per_device() for c in found
          if '/shard_map/' in c.op_name}
  for layer in ('conv3', 'fc6', 'fc7', 'fc8'):
    assert sent[layer, 'reduce-scatter'] == sent[layer, 'all-gather'] > 0, sent


def test_data_parallel_only_reduces_gradients():
  found = compiled_collectives(4, 1)
  params = jax.eval_shape(functools.partial(MODEL.init, train=False),
                          {'params': jax.random.PRNGKey(0)}, jnp.zeros((1, IMAGE, IMAGE, 3)))
  assert not [c for c in found if c.kind != 'all-reduce']  # no activation is ever gathered
  # Every gradient element is summed over 'data' exactly once, and nothing else of size > 1
  # (the per-group kernels may be summed in slices, so compare totals).
  reduced = sum(n for c in found for n in c.elements() if n > 1)
  assert reduced == sum(x.size for x in jax.tree.leaves(params))


# An optimized HLO's collectives, as XLA prints them (one line each, abridged).
HLO = """
  %all_gather.13 = f32[2,4,1,1,16]{4,3,2,1,0} all-gather(%w), channel_id=1, replica_groups={{0,1}}, dimensions={0}, metadata={op_name="jit(train_step)/jvp(AlexNet)/fc6/shard_map/all_gather"}
  %reduce_scatter.29 = f32[4,256]{0,1} reduce-scatter(%c), channel_id=1, replica_groups={{0,1,2,3}}, dimensions={1}, to_apply=%region_28.38, metadata={op_name="jit(train_step)/transpose(jvp(AlexNet))/fc7/shard_map/reduce_scatter"}
  %all-reduce.3 = (f32[], bf16[1024]{0}) all-reduce(%a, %b), channel_id=2, replica_groups=[1,2]<=[2], to_apply=%add
"""


def test_bytes_sent_per_device_follow_the_ring_algorithms():
  """Per device, a ring all-gather sends (n-1)/n of its result, a ring reduce-scatter (n-1)/n
  of its input (n results), an all-reduce 2(n-1)/n of its result: hand-counted bytes."""
  gather, scatter, reduce = collectives.collectives(HLO)
  assert (gather.kind, gather.group_size, gather.elements()) == ('all-gather', 2, [128])
  assert gather.bytes_sent_per_device() == 128 * 4 / 2
  assert (scatter.kind, scatter.group_size, scatter.elements()) == ('reduce-scatter', 4, [1024])
  assert scatter.input_elements() == [4096]
  assert scatter.bytes_sent_per_device() == 4096 * 4 * 3 / 4
  assert (reduce.kind, reduce.group_size, reduce.elements()) == ('all-reduce', 2, [1, 1024])
  assert reduce.bytes_sent_per_device() == (4 + 1024 * 2) * 2 * 1 / 2
