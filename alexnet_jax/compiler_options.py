"""XLA compiler options for the jitted train and eval steps, per backend, chosen by measurement.

On CPU, XLA hands dots, convolutions, elementwise ops and reductions to YNNPACK fusions by
default. YNNPACK's convolution gradients ran at a fraction of the speed of XLA's own (Eigen)
convolutions of the same shapes, so the steps keep YNNPACK for reductions only: the whole
training step and the forward measured faster that way than with the defaults, and every other
single value of the option measured slower (docs/performance.md has the figures).

The option is experimental in XLA: a jaxlib that does not know it compiles with the defaults.
"""
import functools

import jax
import numpy as np

_BY_PLATFORM = {
    'cpu': {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'},
}


@functools.cache
def for_platform(platform: str) -> dict:
  """The options for a backend ('cpu', 'gpu', 'tpu'), or {} where this jaxlib rejects them (or
  the backend is not the default one, where they could not be tried)."""
  options = _BY_PLATFORM.get(platform, {})
  if not options or platform != jax.default_backend():
    return {}
  try:
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(1)).compile()
  except Exception:  # pylint: disable=broad-except  # an unknown option or value: defaults
    return {}
  return dict(options)


def for_mesh(mesh: jax.sharding.Mesh) -> dict:
  """The options for the backend of a mesh's devices."""
  return for_platform(mesh.devices.flat[0].platform)
