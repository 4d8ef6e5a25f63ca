"""XLA compiler options for the jitted train and eval steps, per backend, chosen by measurement.

On CPU, XLA hands dots, convolutions, elementwise ops and reductions to YNNPACK fusions by
default. YNNPACK's convolution gradients run at 30-60 GFLOP/s here against 130-170 for
XLA's own (Eigen) convolutions of the same shapes (2-core EPYC VM, 2026-11-30, conv2-conv5 at
batch 32), so the steps keep YNNPACK for reductions only: the whole float32 training step at
batch 32 took 1604 ms against 2056 ms with the defaults (median of 4 interleaved pairs), the
forward at batch 64 1051 against 1135 ms. (The option's other single values measured slower:
dots 2150, individual dots 2079, elementwise 1891, convolutions 2654 ms.)

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
