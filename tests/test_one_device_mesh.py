"""A one-device ('data', 'model') mesh runs the net as no mesh (sharding._context_mesh): its
compiled train step holds no collective, which on one device would only copy (the gradients'
all-reduce alone copies every parameter's gradient each step); a 2-device mesh still has them."""
import re

import jax
import jax.numpy as jnp

from alexnet_jax import train
from tests import helpers

MODEL, IMAGE, BATCH = helpers.SPLIT_MODEL, helpers.SPLIT_IMAGE, helpers.SPLIT_BATCH
COLLECTIVE = re.compile(r' (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)'
                        r'(-start)?\(')


def compiled_step(mesh) -> str:
  with jax.set_mesh(mesh):
    state = jax.eval_shape(lambda: train.create_train_state(
        MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh))
    batch = {'image': jax.ShapeDtypeStruct((BATCH, IMAGE, IMAGE, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
    return train.jit_train_step(state, mesh).lower(state, batch).compile().as_text()


def test_a_one_device_mesh_compiles_no_collective():
  assert not COLLECTIVE.search(compiled_step(helpers.mesh_of(1, 1)))


def test_a_two_device_mesh_keeps_its_collectives():
  # The check above can fail: the paper's split over 2 devices exchanges activations. (Two
  # devices: conftest gives every test process 8 fake CPU devices.)
  assert COLLECTIVE.search(compiled_step(helpers.mesh_of(1, 2)))
