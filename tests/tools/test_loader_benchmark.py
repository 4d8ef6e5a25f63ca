"""alexnet_jax/benchmarks/loader_timing.py (the loader benchmark's measurements) on the tiny config (a
few seconds), both augmentation paths: every figure present and positive, and consistent with
the others (the fraction is the end-to-end rate over the synthetic one, img/s per core is 1000 /
the host CPU ms per image, the cores needed are the rate times that); and the host CPU counter
against a known busy loop."""
import time

import jax
import jax.numpy as jnp
import optax
import pytest

from alexnet_jax import train
from alexnet_jax.benchmarks import loader_timing
from alexnet_jax.benchmarks import measure
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.model import alexnet
from tests.helpers import alexnet_config


@pytest.fixture
def fast_compile():
  """XLA's optimisations off for this test only (a jit cache key: other tests are unaffected)."""
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


@pytest.mark.usefixtures('fast_compile')
def test_loader_benchmark_tiny_both_paths():
  config = alexnet_config.get_config('tiny')
  emitted = []
  results = loader_timing.run_benchmark(config, [(0, 3)], augment_on=('host', 'device'),
                                        loader_batches=8, steps=1, windows=1, warmup=1,
                                        feed_rate=1000.0, emit=emitted.append)
  assert [e['kind'] for e in emitted] == ['loader', 'loader', 'setup', 'end_to_end',
                                          'end_to_end']
  assert [(r['augment_on'], r['workers'], r['threads']) for r in results] == [
      ('host', 0, 3), ('device', 0, 3)]
  for r in results:
    for key in ('loader_img_per_s', 'synthetic_img_per_s', 'end_to_end_img_per_s',
                'host_cpu_ms_per_image'):
      assert r[key] > 0, key
    assert r['img_per_s_per_core'] == pytest.approx(1000 / r['host_cpu_ms_per_image'])
    # no workers: this process is the whole tree, up to /proc's 10 ms ticks over 64 images
    assert r['main_process_cpu_ms_per_image'] == pytest.approx(
        r['host_cpu_ms_per_image'], abs=0.35)
    assert r['cores_to_feed'] == pytest.approx(r['host_cpu_ms_per_image'])  # 1000 img/s
    assert r['cores_to_feed_step'] == pytest.approx(
        r['synthetic_img_per_s'] * r['host_cpu_ms_per_image'] / 1000)
    # one window: the fraction (median of per-round time ratios) is the ratio of the rates
    assert r['fraction'] == pytest.approx(r['end_to_end_img_per_s'] / r['synthetic_img_per_s'])
    assert 0 <= r['data_wait_frac'] < 1
  table = loader_timing.table(results, 1000.0)
  assert table.count('\n') == 3 and '| host | 0 | 3 |' in table and '| device | 0 | 3 |' in table


def test_a_feeds_threads_are_the_loaders_read_threads():
  """(workers, threads): threads is config.input.prefetch, Grain's read threads per process."""
  config = alexnet_config.get_config('tiny')
  dataset = dataset_lib.build(config)
  for path in ('host', 'device'):
    # pylint: disable-next=protected-access
    iterator = loader_timing._train_iterator(config, dataset, 0, 5, path)
    assert iterator._read_options.num_threads == 5, path  # pylint: disable=protected-access
    pipeline.close_iterator(iterator)


def test_process_tree_cpu_counts_a_busy_loop():
  before, t0 = measure.process_tree_cpu_s(), time.process_time()
  while time.process_time() - t0 < 0.3:
    pass
  spent = measure.process_tree_cpu_s() - before
  assert 0.25 <= spent <= 0.3 + 0.1  # 10 ms clock ticks


def test_the_step_runner_is_ready_before_anything_is_timed(monkeypatch):
  """The state's initialisation runs asynchronously; unfinished, it ran beside the loader
  measurements that follow and doubled the CPU they counted (found 2026-11-30). The tiny net's
  initialisation, made to last (it ends with ~0.4 s of matmuls that every leaf depends on),
  so that a state not waited for is caught unfinished: the control shows it is."""
  create_train_state = train.create_train_state

  @jax.jit
  def after_slow_work(state):
    m = jnp.eye(256) * 0.5
    a = jax.lax.fori_loop(0, 500, lambda _, a: jnp.tanh(a @ m + 1), m)
    never = a[0, 0] > 2  # tanh < 1, which XLA does not know: every leaf waits for the loop
    return jax.tree.map(lambda x: jnp.where(never, jnp.zeros_like(x), x), state)

  def slow_create_train_state(*args, **kwargs):
    return after_slow_work(jax.block_until_ready(create_train_state(*args, **kwargs)))

  monkeypatch.setattr(train, 'create_train_state', slow_create_train_state)
  config = alexnet_config.get_config('tiny')
  dataset = dataset_lib.build(config)
  control = train.create_train_state(alexnet.from_config(config.model), optax.sgd(0.1),
                                     jax.random.PRNGKey(0), config.input.image_size)
  assert not all(leaf.is_ready() for leaf in jax.tree.leaves(control))  # not waited for
  jax.block_until_ready(control)
  runner = loader_timing.StepRunner(config, dataset, ('host',))
  assert all(leaf.is_ready() for leaf in jax.tree.leaves(runner.state))
