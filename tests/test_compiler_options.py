"""alexnet_jax/compiler_options.py: on CPU the train and eval steps compile with YNNPACK kept
to reductions (no convolution or dot in a YNNPACK fusion, where the defaults put them), and an
option this jaxlib does not know falls back to the defaults."""
import re

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import compiler_options
from alexnet_jax import evaluation
from alexnet_jax import train
from tests import helpers

MODEL, IMAGE, BATCH = helpers.SPLIT_MODEL, helpers.SPLIT_IMAGE, helpers.SPLIT_BATCH


def ynn_fused(hlo: str, op: str) -> int:
  """Instructions of kind `op` inside the computations that YNNPACK fusions call."""
  called = set(re.findall(r'calls=(%[\w.-]+).*"kind":"__ynn_fusion"', hlo))
  count, inside = 0, False
  for line in hlo.splitlines():
    if line.startswith('%') or line.startswith('ENTRY'):
      inside = line.split()[0] in called
    elif inside and f' {op}(' in line:
      count += 1
  return count


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the options are for XLA:CPU')
def test_cpu_steps_keep_convolutions_out_of_ynnpack():
  mesh = helpers.mesh_of(1, 1)
  assert compiler_options.for_mesh(mesh)
  with jax.set_mesh(mesh):
    state = jax.eval_shape(lambda: train.create_train_state(
        MODEL, helpers.sgd(), jax.random.PRNGKey(0), IMAGE, mesh))
    batch = {'image': jax.ShapeDtypeStruct((BATCH, IMAGE, IMAGE, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
    ours = train.jit_train_step(state, mesh).lower(state, batch).compile().as_text()
    defaults = jax.jit(train.train_step).lower(state, batch).compile().as_text()
    eval_hlo = evaluation.jit_eval_step(state, mesh).lower(
        state, {**batch, 'mask': jax.ShapeDtypeStruct((BATCH,), jnp.bool_)}).compile().as_text()
  assert ynn_fused(defaults, 'convolution') > 0  # what the option changes
  assert ynn_fused(ours, 'convolution') == ynn_fused(ours, 'dot') == 0
  assert ynn_fused(eval_hlo, 'convolution') == 0


def test_an_unknown_option_falls_back_to_the_defaults(monkeypatch):
  monkeypatch.setitem(compiler_options._BY_PLATFORM, jax.default_backend(),
                      {'xla_no_such_option_anywhere': True})
  compiler_options.for_platform.cache_clear()
  try:
    assert compiler_options.for_platform(jax.default_backend()) == {}
  finally:
    compiler_options.for_platform.cache_clear()
  assert compiler_options.for_platform('no_such_backend') == {}
