"""alexnet_jax/figure1/net.py: each regime's init against its definition (section 5's N(0,
0.01), fan-in normal), the parameter count by hand, and pairing (the same seed, the same
standard normal draws for both activations)."""
import math

import jax
import numpy as np
import pytest

from alexnet_jax.figure1 import net
from tests.figure1.helpers import SIZE


def test_paper_init_std_001_and_zero_biases_modern_fan_in():
  for activation in ('relu', 'tanh'):
    paper = net.init_params(0, 'paper', activation, 32)
    modern = net.init_params(0, 'modern', activation, 32)
    assert net.num_params(paper) == 89_578  # 2,432 + 25,632 + 51,264 + 10,250
    for layer in net.LAYERS:
      kernel = np.asarray(paper[layer]['kernel'])
      assert not np.any(np.asarray(paper[layer]['bias']))
      assert not np.any(np.asarray(modern[layer]['bias']))
      assert np.std(kernel) == pytest.approx(0.01, rel=0.05) and abs(kernel.mean()) < 0.001
      fan_in = int(np.prod(kernel.shape[:-1]))
      gain = 2.0 if activation == 'relu' and layer != 'dense' else 1.0
      assert np.std(np.asarray(modern[layer]['kernel'])) == pytest.approx(
          math.sqrt(gain / fan_in), rel=0.05)


def test_same_seed_same_init_for_both_activations():
  relu = net.init_params(5, 'paper', 'relu', SIZE)
  tanh = net.init_params(5, 'paper', 'tanh', SIZE)
  jax.tree.map(np.testing.assert_array_equal, relu, tanh)
  modern_relu = net.init_params(5, 'modern', 'relu', SIZE)
  modern_tanh = net.init_params(5, 'modern', 'tanh', SIZE)
  for layer in net.LAYERS:  # the same draws, He's sqrt(2) apart before a ReLU
    scale = 1.0 if layer == 'dense' else math.sqrt(2)
    np.testing.assert_allclose(modern_relu[layer]['kernel'], scale * modern_tanh[layer]['kernel'],
                               rtol=1e-6)
  other = net.init_params(6, 'paper', 'relu', SIZE)
  assert not np.array_equal(other['conv1']['kernel'], relu['conv1']['kernel'])
