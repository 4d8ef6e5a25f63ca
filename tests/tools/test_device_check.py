"""alexnet_jax/tools/device_check.py on CPU at a tiny size (the GPU run is the same code with
bigger numbers): one process times the step over the conv implementations (the yardsticks,
full-size nets, are test_benchmark.py's), picks the fastest conv implementation from its own
records, prepares a copy of the photos and runs the loader on both augmentation paths, and
writes the JSON and the Markdown table, with the rows it could not measure said so."""
import json
import os

import pytest

from tests import helpers


def test_device_check_writes_every_figure(tmp_path):
  out = tmp_path / 'check'
  proc = helpers.run_tool(
      'device_check', f'--out_dir={out}', '--config=tiny', '--batch_sizes=4,8',
      '--dtypes=float32', '--conv_impls=halves,im2col', '--lrn_impls=fast', '--num_classes=10',
      '--steps=1', '--windows=1', '--loader_batch=32', '--workers=0', '--threads=2',
      '--loader_windows=4',  # past the 2 batches read ahead: CPU ticks are 10 ms
      '--figure1_batch=4', '--figure1_image_size=8', '--figure1_scan=2',
      '--yardsticks=', timeout=600)  # the yardsticks are the full net: test_benchmark's
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads((out / 'device_check.json').read_text())
  assert report['machine']['platform'] == 'cpu' and report['machine']['host_cores'] > 0
  step = report['step']
  ours = {(r['batch'], r['conv_impl']): r for r in step if r['impl'] == 'ours'}
  assert set(ours) == {(b, c) for b in (4, 8) for c in ('halves', 'im2col')}
  assert not [r for r in step if r['impl'] != 'ours']
  for r in ours.values():
    assert r['img_s'] > 0 and r['step_ms'] > 0 and r['mfu'] > 0
  # 'auto' is the fastest conv implementation at the largest batch, by its own records.
  assert report['conv_impl_auto'] == max(('halves', 'im2col'),
                                         key=lambda c: ours[8, c]['img_s'])
  # The loader on both paths, fed both ways (worker processes with 2 threads each; threads in
  # the main process), on the prepared copy it made.
  assert {(r['augment_on'], r['workers'], r['threads']) for r in report['loader']} == {
      (path, 0, threads) for path in ('host', 'device') for threads in (2,)}
  for r in report['loader']:
    assert r['host_cpu_ms_per_image'] > 0 and 0 < r['fraction']
  assert os.path.isdir(out / 'prepared-256')
  table = (out / 'device_check.md').read_text()
  assert 'torch_compile: not measured (not asked for (--yardsticks))' in table
  assert 'plain_jax: not measured (not asked for (--yardsticks))' in table
  assert f'conv_impl for auto on cpu: **{report["conv_impl_auto"]}**' in table
  # The guard's cost: the fastest conv implementation at the largest batch, with and without.
  guard = report['nonfinite_guard']
  assert (guard['batch'], guard['conv_impl']) == (8, report['conv_impl_auto'])
  assert guard['with_over_without'] == guard['step_ms_with'] / guard['step_ms_without']
  assert f'The non-finite guard at batch 8 float32 ({report["conv_impl_auto"]})' in table
  assert 'ours / torch_compile' in table and 'not measured' in table
  assert report['targets']['vs_torch_compile'] == 'not measured'
  assert table.count('| host | 0 | 2 |') == 1 and table.count('| device | 0 | 2 |') == 1
  # pool_impl fast against xla at the fastest step's setting; the faster one by its records.
  pool = report['pool_impl']
  assert (pool['batch'], set(pool['step_ms'])) == (8, {'fast', 'xla'})
  assert pool['fastest'] == min(pool['step_ms'], key=pool['step_ms'].get)
  assert 'pool_impl at batch 8 float32' in table and f'**{pool["fastest"]}** is faster' in table
  # The Figure 1 net's SGD step with both layer implementations; auto's pick by its records.
  figure1 = {r['impl']: r for r in report['figure1_step']}
  assert set(figure1) == {'fast', 'xla'}
  for r in figure1.values():
    assert (r['batch'], r['image_size'], r['num_classes'], r['scan_steps']) == (4, 8, 10, 2)
    assert r['img_s'] == pytest.approx(4e3 / r['step_ms']) and r['mfu'] > 0
  assert report['figure1_impl_auto'] == max(figure1, key=lambda i: figure1[i]['img_s'])
  assert f'Figure 1 net impl for auto on cpu: **{report["figure1_impl_auto"]}**' in table
