"""alexnet_jax/tools/prepare_data.py, the command: imagenet2012 without its archives is one
'error:' line (exit status 2) naming the missing archive and the directory to put it in; a
prepared copy killed with SIGKILL halfway resumes where it stopped. Truths: the shards that the
killed run recorded as complete (their inode and mtime, untouched by the rerun), the number of
images the rerun re-encodes, and a copy of the same photos made in one go."""
import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
from array_record.python import array_record_module

from alexnet_jax.data import prepare
from tests import helpers


def test_prepare_data_cli_error_line(tmp_path):
  proc = helpers.run_tool('prepare_data', '--dataset=imagenet2012', f'--data_dir={tmp_path}',
                          timeout=120)
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'ILSVRC2012_img_train.tar' in errors[0]
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in errors[0]


def recorded_shards(out_dir) -> dict:
  """The shards progress.json records as complete ({} before it exists)."""
  try:
    with open(os.path.join(out_dir, prepare.PROGRESS)) as f:
      return json.load(f)['shards']
  except FileNotFoundError:
    return {}


def records(path) -> list[bytes]:
  reader = array_record_module.ArrayRecordReader(path)
  try:
    return reader.read_all()
  finally:
    reader.close()


def test_a_copy_killed_with_sigkill_resumes_where_it_stopped(tmp_path, monkeypatch):
  """The embedded validation photos (240) in shards of 10: killed (SIGKILL) once 3 shards are
  complete, then run again: the complete shards are kept as they are, only the other images are
  re-encoded, and the copy equals one made in one go."""
  out = str(tmp_path / 'copy')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.tools.prepare_data', '--dataset=folder',
       f'--folder={helpers.DATA}', '--splits=val', f'--out_dir={out}', '--workers=0',
       '--records_per_shard=10'],
      cwd=helpers.ROOT, env=helpers.cpu_env(), stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 120
    while len(recorded_shards(out)) < 3:
      assert proc.poll() is None, f'prepare_data exited ({proc.returncode}) before the kill'
      assert time.monotonic() < deadline, 'no shard complete after 120 s'
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(out, 'metadata.json'))  # an unfinished copy
  kept = recorded_shards(out)
  assert 3 <= len(kept) < 24
  stamps = {name: (os.stat(os.path.join(out, name)).st_ino,
                   os.stat(os.path.join(out, name)).st_mtime_ns) for name in kept}

  encoded = []
  reencode = prepare.reencode
  monkeypatch.setattr(prepare, 'reencode', lambda *a: encoded.append(1) or reencode(*a))
  config = ml_collections.ConfigDict({'name': 'folder', 'folder': helpers.DATA, 'data_dir': '',
                                      'manual_dir': ''})
  lines = []
  meta = prepare.prepare_resized(config, out, splits=['val'], records_per_shard=10,
                                 log=lambda *a, **k: lines.append(' '.join(map(str, a))))
  assert any(f'val: kept {len(kept)} of its 24 shards' in line for line in lines), lines
  assert len(encoded) == 240 - 10 * len(kept)  # it did not start again from zero
  assert {name: (os.stat(os.path.join(out, name)).st_ino,
                 os.stat(os.path.join(out, name)).st_mtime_ns) for name in kept} == stamps
  assert sorted(os.listdir(out)) == sorted(meta['splits']['val']['files'] + ['metadata.json'])

  monkeypatch.setattr(prepare, 'reencode', reencode)
  one_go = str(tmp_path / 'one_go')
  assert prepare.prepare_resized(config, one_go, splits=['val'], records_per_shard=10,
                                 log=lambda *a, **k: None) == meta
  for name in meta['splits']['val']['files']:
    assert records(os.path.join(out, name)) == records(os.path.join(one_go, name)), name
