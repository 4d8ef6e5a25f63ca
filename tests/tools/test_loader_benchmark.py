"""alexnet_jax/tools/loader_benchmark.py, a smoke test on the tiny config (a few seconds): every
figure present and positive, and consistent with the others (the fraction is the end-to-end rate
over the synthetic one, per core is per worker process)."""
import jax
import pytest

from alexnet_jax.tools import loader_benchmark
from configs import alexnet as alexnet_config


@pytest.fixture
def fast_compile():
  """XLA's optimisations off for this test only (a jit cache key: other tests are unaffected)."""
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


@pytest.mark.usefixtures('fast_compile')
def test_loader_benchmark_tiny():
  config = alexnet_config.get_config('tiny')
  emitted = []
  results = loader_benchmark.run_benchmark(config, [0], loader_batches=2, steps=1, windows=1,
                                           warmup=1, emit=emitted.append)
  assert [e['kind'] for e in emitted] == ['loader', 'setup', 'end_to_end']
  (r,) = results
  assert r['workers'] == 0
  for key in ('loader_img_per_s', 'synthetic_img_per_s', 'end_to_end_img_per_s'):
    assert r[key] > 0
  assert r['loader_img_per_s_per_core'] == r['loader_img_per_s']
  # one window: the fraction (median of per-round time ratios) is the ratio of the rates
  assert r['fraction'] == pytest.approx(r['end_to_end_img_per_s'] / r['synthetic_img_per_s'])
  assert 0 <= r['data_wait_frac'] < 1
  table = loader_benchmark._table(results)  # pylint: disable=protected-access
  assert table.count('\n') == 2 and '| 0 |' in table
