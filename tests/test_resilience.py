"""alexnet_jax/resilience.py and the checkpointing it drives, through launch.py with failures
provoked for real: kill -9 (also during a checkpoint write), SIGTERM / Ctrl-C, a second run on
the same workdir, harmless changes and a run from before model.norm on resume, a full disk, a
corrupt checkpoint (and, in-process, every kind of damage to one). The truth is an
uninterrupted run of the same config: every interrupted one must end with the same checkpoint
bit for bit, and each refusal is one error line. (Changed experiment settings, non-finite
steps, unreadable images and bad input: test_resilience_input.py, a file of its own so that the
two halves run on both test workers.)"""
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import optax
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import metric_logging
from alexnet_jax import train
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.errors import RunFailure
from tests import helpers

STEPS = 10
COMMON = (f'--config.train.num_steps={STEPS}',  # on configs/alexnet.py:tiny (helpers.TINY)
          '--config.train.checkpoint_every_steps=2', '--config.train.keep_checkpoints=20',
          '--config.train.eval_every_epochs=100', '--config.optimizer.name=sgd',
          '--config.optimizer.lr=0.01')


def command(workdir, *overrides):
  return helpers.launch_command(workdir, *COMMON, *overrides)


def run(workdir, *overrides):
  return helpers.launch(workdir, *COMMON, *overrides, check=False)


def start(workdir, *overrides):
  return subprocess.Popen(command(workdir, *overrides), cwd=helpers.ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=helpers.cpu_env())


def logged_steps(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)['step'] for line in f if '"train/loss"' in line]


def wait_until(condition, proc, timeout=300, poll=0.05):
  deadline = time.time() + timeout
  while not condition():
    if proc.poll() is not None:
      raise AssertionError(f'exited early ({proc.returncode}):\n{proc.stdout.read()}')
    if time.time() > deadline:
      proc.kill()
      raise AssertionError('timed out')
    time.sleep(poll)


def assert_same_state(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The uninterrupted run every interrupted one must reproduce bit for bit."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  proc = run(workdir)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return helpers.restore_state(workdir)


@pytest.fixture(scope='module')
def six_steps(tmp_path_factory):
  """A finished 6-step run of the same config (checkpoints at 2, 4 and 6), trained once for the
  tests that resume, change or damage such a run: each works on its own copy (copy_of)."""
  workdir = str(tmp_path_factory.mktemp('six_steps') / 'run')
  proc = run(workdir, '--config.train.num_steps=6')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert helpers.checkpoint_steps(workdir) == [2, 4, 6]
  return workdir


def copy_of(run_dir, workdir):
  """workdir: a copy of the finished run in run_dir (its checkpoints, metrics, lock file)."""
  shutil.copytree(run_dir, workdir)
  return workdir


def tensorboard_steps(workdir, tag='train/loss'):
  """The steps of every value of a scalar tag in the run's event files, read with TensorBoard's
  own event reader (no de-duplication: what a reader sees)."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  steps = []
  for root, _, files in os.walk(os.path.join(workdir, 'tensorboard')):
    for name in sorted(files):
      if 'tfevents' in name:
        for event in event_file_loader.EventFileLoader(os.path.join(root, name)).Load():
          steps += [event.step for v in event.summary.value if v.tag == tag]
  return steps


def test_kill_9_at_a_random_step_then_rerun_is_bit_identical(tmp_path, straight):
  workdir = str(tmp_path / 'killed')
  proc = start(workdir)
  # The first checkpoint is complete.
  wait_until(lambda: helpers.checkpoint_steps(workdir), proc, poll=0.002)
  # Frozen (still holding the workdir) while a second run on the same workdir is refused: the
  # steps are too fast (compilation cached) to leave that time otherwise.
  proc.send_signal(signal.SIGSTOP)
  second = run(workdir)
  assert second.returncode == 2
  assert 'is in use by a running training' in second.stderr
  assert len(second.stderr.strip().splitlines()) == 1
  # Kill at a random logged step after that checkpoint and before the last step.
  first = max(helpers.checkpoint_steps(workdir)[0], max(logged_steps(workdir), default=0))
  target = random.Random(os.getpid()).randint(first + 1, STEPS - 2)
  proc.send_signal(signal.SIGCONT)
  wait_until(lambda: max(logged_steps(workdir), default=0) >= target, proc, poll=0.002)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(logged_steps(workdir))
  saved = helpers.checkpoint_steps(workdir)
  print(f'killed after step {killed_at}, checkpoints {saved}')
  assert proc.returncode == -signal.SIGKILL
  assert saved and saved[0] < killed_at < STEPS, (saved, killed_at)
  # The kernel released the lock with the process: the same command resumes and finishes.
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f'resumed from {os.path.join(workdir, "checkpoints")} at step {max(saved)}' in (
      resumed.stdout)
  step, state = helpers.restore_state(workdir)
  assert step == straight[0] == STEPS
  assert_same_state(state, straight[1])
  # Every step once in metrics.jsonl and in TensorBoard, though steps after the last checkpoint
  # before the kill were trained (and logged) twice.
  assert logged_steps(workdir) == list(range(1, STEPS + 1))
  assert sorted(tensorboard_steps(workdir)) == list(range(1, STEPS + 1))


def test_resume_with_harmless_changes_is_bit_identical(tmp_path, straight, six_steps):
  """Class (a): other worker count, log frequency and path to the same data: resumed from the
  latest checkpoint (nothing moved aside), one note line, and the same bits as a straight run."""
  workdir = copy_of(six_steps, str(tmp_path / 'changed'))
  data = helpers.DATA + '/'
  resumed = run(workdir, '--config.input.workers=1', '--config.train.log_every_steps=3',
                f'--config.dataset.folder={data}')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  notes = [l for l in resumed.stdout.splitlines() if l.startswith('note: resuming at step 6')]
  assert len(notes) == 1 and 'input.workers 0 -> 1' in notes[0]
  assert 'train.log_every_steps 1 -> 3' in notes[0] and 'dataset.folder' in notes[0]
  assert 'cannot be read' not in resumed.stdout
  assert not os.path.exists(os.path.join(workdir, 'checkpoints.unreadable'))
  # 6 steps of 8 images: the 48th example of the first epoch's order, with the other workers.
  assert 'data: the saved position restored (epoch 1, example 48 of 1000' in resumed.stdout
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])
  # The same data under another path with 5 files gone: the run reads its own file index, so
  # the resume goes on, says so in one note, and skips the 5 (issue 23: not refused).
  other = str(tmp_path / 'other')
  shutil.copytree(data, other)
  for name in sorted(os.listdir(os.path.join(other, 'train', 'hat')))[:5]:
    os.remove(os.path.join(other, 'train', 'hat', name))
  fewer = run(workdir, f'--config.dataset.folder={other}', '--config.train.num_steps=12')
  assert fewer.returncode == 0, fewer.stdout + fewer.stderr
  assert len([l for l in fewer.stdout.splitlines() if '5 of its 1000 files are gone' in l]) == 1
  assert helpers.checkpoint_steps(workdir)[-1] == 12


def written_before_model_norm(workdir):
  """Rewrites a run's checkpoints as the code before model.norm wrote them: no model.norm in the
  stored configs (and config.json), no batch_stats entry in the state's tree (Orbax's
  _METADATA; the old TrainState had no such field)."""
  configs = [os.path.join(workdir, 'config.json')] + [
      os.path.join(workdir, 'checkpoints', str(s), 'config', 'metadata')
      for s in helpers.checkpoint_steps(workdir)]
  for path in configs:
    with open(path) as f:
      config = json.load(f)
    del config['model']['norm']
    with open(path, 'w') as f:
      json.dump(config, f)
  for step in helpers.checkpoint_steps(workdir):
    path = os.path.join(workdir, 'checkpoints', str(step), 'state', '_METADATA')
    with open(path) as f:
      metadata = json.load(f)
    del metadata['tree_metadata']["('batch_stats',)"]
    with open(path, 'w') as f:
      json.dump(metadata, f)


def test_run_written_before_model_norm_resumes_bit_identical(tmp_path, straight, six_steps):
  """A run stored before model.norm and batch norm's statistics existed: its missing key reads
  as what it ran (LRN), so a switch to batch norm is refused like any model switch, and the
  same command resumes it (no batch_stats in its state) to the uninterrupted run's bits; its
  checkpoint evaluates as well."""
  workdir = copy_of(six_steps, str(tmp_path / 'old'))
  written_before_model_norm(workdir)
  refused = run(workdir, '--config.model.norm=batchnorm')
  assert refused.returncode == 2
  lines = refused.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: config.model.norm changed since the checkpoint at step 6 ('lrn' -> 'batchnorm')")
  evaluated = helpers.run_tool('evaluate', f'--workdir={workdir}')
  assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
  assert 'centre eval at step 6' in evaluated.stdout
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'resumed from' in resumed.stdout and 'at step 6' in resumed.stdout
  assert 'model.norm' not in resumed.stdout  # read as the 'lrn' it ran: no change
  assert not os.path.exists(os.path.join(workdir, 'checkpoints.unreadable'))
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])


@pytest.mark.parametrize('signum,exit_status', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_saves_a_checkpoint_and_resume_continues(tmp_path, straight, signum,
                                                             exit_status):
  workdir = str(tmp_path / 'stopped')
  # Checkpoints only at the end: the one found later can only come from the signal.
  proc = start(workdir, '--config.train.checkpoint_every_steps=1000')
  wait_until(lambda: len(logged_steps(workdir)) >= 3, proc, poll=0.002)
  proc.send_signal(signum)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == exit_status, out
  stopped = helpers.checkpoint_steps(workdir)
  assert len(stopped) == 1 and 3 <= stopped[0] < STEPS, (stopped, out)
  assert f'stopped by {signal.Signals(signum).name} at step {stopped[0]}/{STEPS}' in out
  assert 'Traceback' not in out
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))  # not finished
  if signum == signal.SIGINT:
    return  # resuming is the same path as after SIGTERM, checked below once
  resumed = run(workdir, '--config.train.checkpoint_every_steps=1000')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'resumed from' in resumed.stdout and f'at step {stopped[0]}' in resumed.stdout
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])


def tmp_checkpoints(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return [d for d in os.listdir(directory) if 'tmp' in d] if os.path.isdir(directory) else []


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, straight):
  workdir = str(tmp_path / 'killed_saving')
  for attempt in range(5):  # a save takes ~0.1 s: catch one in flight
    proc = start(workdir, '--config.train.checkpoint_every_steps=1')
    deadline = time.time() + 300
    while not tmp_checkpoints(workdir) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.002)
    proc.kill()
    proc.wait()
    if tmp_checkpoints(workdir) and helpers.checkpoint_steps(workdir):
      break
  partial = tmp_checkpoints(workdir)
  assert partial, 'never caught a save in flight'
  print(f'killed while writing {partial}; complete: {helpers.checkpoint_steps(workdir)}')
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert not tmp_checkpoints(workdir)  # the partial write was cleaned up
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])


def with_file_size_limit(kib, cmd):
  # bash's `ulimit -f` (KiB) sets RLIMIT_FSIZE for the command; SIGXFSZ ignored, so write()
  # fails with EFBIG instead of killing the process.
  return ['bash', '-c', f"trap '' XFSZ; ulimit -f {kib}; exec \"$@\"", 'limit', *cmd]


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, straight, six_steps):
  # A per-process file size limit (RLIMIT_FSIZE) makes the kernel fail the checkpoint's
  # array writes (EFBIG) like a full disk would; small files (metrics, config) still fit.
  workdir = copy_of(six_steps, str(tmp_path / 'full'))
  full = subprocess.run(with_file_size_limit(20, command(workdir)), cwd=helpers.ROOT,
                        capture_output=True, text=True, env=helpers.cpu_env(), timeout=600)
  assert full.returncode == 3, full.stdout + full.stderr
  # Orbax logs its own traceback from its writer threads; ours is the one 'error:' line. (Found
  # anywhere in a line: once in CI, 2026-11-30, it did not start one, likely after output another
  # thread left unfinished.)
  errors = [l[l.index('error: '):] for l in full.stderr.splitlines() if 'error: ' in l]
  assert len(errors) == 1, full.stdout + full.stderr
  last = errors[0]
  assert last.startswith('error: could not write the checkpoint at step 8')
  assert 'File too large' in last and 'step 6 is intact' in last
  assert helpers.checkpoint_steps(workdir) == [2, 4, 6]
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'at step 6' in resumed.stdout
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])
  # A full disk for the run's own files (their writes fail with ENOSPC): metrics.jsonl at the
  # first step logged after the resume, summary.json at the end of a run that finished (both
  # through launch.py; config.json is written as summary.json is, and the statistics cache is
  # test_full_disk_while_caching_the_statistics_is_one_line_and_leaves_no_file's). One error
  # line each; the checkpoints, and the files as they were before, intact.
  before = {name: open(os.path.join(workdir, name)).read()
            for name in ('config.json', 'metrics.jsonl', 'summary.json')}
  for name, overrides in [('metrics.jsonl', (f'--config.train.num_steps={STEPS + 1}',)),
                          ('summary.json', ())]:
    cmd = [sys.executable, '-c', FULL_DISK_LAUNCH, *command(workdir, *overrides)[2:]]
    full = subprocess.run(cmd, cwd=helpers.ROOT, capture_output=True, text=True,
                          env=dict(helpers.cpu_env(), FULL_DISK_FILE=name), timeout=600)
    assert full.returncode == 3, (name, full.stdout + full.stderr)
    errors = full.stderr.strip().splitlines()
    assert len(errors) == 1, (name, full.stderr)
    assert errors[0].startswith(f'error: could not write {os.path.join(workdir, name)} (No '
                                'space left on device); the checkpoints written so far are '
                                'intact'), errors
    assert helpers.checkpoint_steps(workdir)[-1] == STEPS
    assert not [f for f in os.listdir(workdir) if '.tmp.' in f]
    if name == 'metrics.jsonl':  # failed after a step, before a checkpoint of it
      assert 'first step' in full.stdout and f'at step {STEPS}' in full.stdout
  for name, content in before.items():
    assert open(os.path.join(workdir, name)).read() == content, name
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])


def test_the_runs_files_on_a_full_disk_are_one_line_each_and_keep_their_content(tmp_path,
                                                                               monkeypatch):
  """metric_logging's writers on a full disk: write_file (config.json, summary.json) leaves the
  old file whole and no temporary file; metrics.jsonl's and the event file's writers fail at
  their write. Each is one RunFailure naming the file."""
  path = str(tmp_path / 'config.json')
  metric_logging.write_file(path, '{"old": 1}')
  real_open = open
  monkeypatch.setattr(metric_logging, 'open',
                      lambda *a, **k: helpers.FullFile(real_open(*a, **k)),
                      raising=False)
  with pytest.raises(RunFailure) as raised:
    metric_logging.write_file(path, '{"new": 2}')
  assert os.listdir(tmp_path) == ['config.json'] and open(path).read() == '{"old": 1}'
  metrics = metric_logging.JsonlWriter(str(tmp_path / 'metrics.jsonl'))
  failures = [raised.value]
  for write in (lambda: metrics.write_scalars(1, {'train/loss': 2.0}),
                lambda: metric_logging.TensorBoardWriter(str(tmp_path / 'tb'))):  # its 1st event
    with pytest.raises(RunFailure) as raised:
      write()
    failures.append(raised.value)
  events = glob.glob(str(tmp_path / 'tb' / 'events.out.tfevents.*'))
  with pytest.raises(RunFailure) as raised:  # classes.json, through write_file too
    dataset_lib.save_class_names(types.SimpleNamespace(class_names=['hat']), str(tmp_path))
  failures.append(raised.value)
  assert len(events) == 1 and len(failures) == 4
  for message, name in zip(map(str, failures), [path, str(tmp_path / 'metrics.jsonl'), *events,
                                                str(tmp_path / 'classes.json')]):
    assert message.startswith(f'could not write {name} (No space left on device); the '
                              'checkpoints written so far are intact') and '\n' not in message


# launch.py with a full disk for one file (FULL_DISK_FILE, its name, or the temporary file
# written in its place): each write to it fails with ENOSPC, as write(2) does on a full disk.
FULL_DISK_LAUNCH = r"""
import builtins, errno, os, sys
full, real_open = os.environ['FULL_DISK_FILE'], builtins.open

class FullFile:
  def __init__(self, file):
    self._file = file
  def write(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  def __getattr__(self, name):
    return getattr(self._file, name)
  def __enter__(self):
    return self
  def __exit__(self, *exc):
    self._file.close()

def open_(file, mode='r', *args, **kwargs):
  opened = real_open(file, mode, *args, **kwargs)
  if os.path.basename(str(file)).startswith(full) and set(mode) & set('wax'):
    return FullFile(opened)
  return opened

builtins.open = open_
sys.argv[0] = 'launch.py'
import launch
launch.cli.run(launch.main)
"""


def test_corrupt_latest_checkpoint_is_reported_and_the_one_before_is_used(tmp_path, straight,
                                                                          six_steps):
  workdir = copy_of(six_steps, str(tmp_path / 'corrupt'))
  assert helpers.checkpoint_steps(workdir) == [2, 4, 6]
  state_dir = os.path.join(workdir, 'checkpoints', '6', 'state')
  for root, _, files in os.walk(state_dir):  # truncate every data file to half
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'the checkpoint at step 6 cannot be read' in resumed.stdout
  assert 'at step 4' in resumed.stdout
  assert os.path.isdir(os.path.join(workdir, 'checkpoints.unreadable', '6'))  # kept, aside
  step, state = helpers.restore_state(workdir)
  assert step == STEPS
  assert_same_state(state, straight[1])


class FakeDataIterator:
  """The data iterator a checkpoint stores: only its position (Grain's handler takes any object
  with get_state/set_state)."""

  def __init__(self, position=0):
    self.state = {'global_next_index': position}

  def get_state(self):
    return json.dumps(self.state).encode()

  def set_state(self, state):
    self.state = state


def small_state(value):
  """A small TrainState whose 'w' is all `value` (which checkpoint was restored shows in it),
  with 16 KiB of noise that Orbax stores in a file of its own (small arrays it keeps inline)."""
  noise = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
  state = train.TrainState.create(apply_fn=None, params={'w': np.full((4, 6), value, np.float32),
                                                         'noise': noise},
                                  tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0))
  return state.replace(step=jax.numpy.asarray(value, jax.numpy.int32))  # an array, as the loop's


def saved_checkpoints(workdir, steps=(1, 2)):
  """<workdir>/checkpoints holding small_state(step) at each step; the Checkpoints, closed."""
  checkpoints = checkpointing.Checkpoints(workdir, keep=5)
  for step in steps:
    checkpoints.save(step, small_state(step), FakeDataIterator(step * 8), {'at': step},
                     {'model': {'width': 1}})
  checkpoints.close()
  return os.path.join(workdir, 'checkpoints')


def restore_latest(workdir):
  checkpoints = checkpointing.Checkpoints(workdir, keep=5)
  try:
    return checkpoints.restore_latest(lambda step, config: small_state(0), FakeDataIterator(),
                                      fallback_position=lambda step: 0)
  finally:
    checkpoints.close()


def state_files(directory):
  return sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                for name in names if os.sep + 'd' + os.sep in os.path.join(root, name))


def truncate_array_files(step_dir):
  for path in state_files(os.path.join(step_dir, 'state')):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def garble_array_files(step_dir):  # the first bytes: where the compressed stream starts
  for path in state_files(os.path.join(step_dir, 'state', 'ocdbt.process_0')):
    with open(path, 'r+b') as f:
      f.write(b'\xde\xad\xbe\xef' * 4)


def write_file(path, content):
  with open(path, 'wb') as f:
    f.write(content)


DAMAGE = {  # what a disk, a copy or a kill can do to a checkpoint's files -> what tells
    'array files cut short': (truncate_array_files, 'is not valid for value of size'),
    'array files that do not decode': (garble_array_files, 'ZSTD_decompressStream() failed'),
    'array files missing': (lambda d: [os.remove(p) for p in state_files(d)], 'NOT_FOUND'),
    'state metadata garbled': (lambda d: write_file(os.path.join(d, 'state', '_METADATA'),
                                                    b'{"tree_metadata": {'), 'JSONDecodeError'),
    'meta JSON garbled': (lambda d: write_file(os.path.join(d, 'meta', 'metadata'), b'{"at":'),
                          'JSONDecodeError'),
    'config JSON not text': (lambda d: write_file(os.path.join(d, 'config', 'metadata'),
                                                  b'\x00\xff{'), 'UnicodeDecodeError'),
    'meta JSON missing': (lambda d: os.remove(os.path.join(d, 'meta', 'metadata')),
                          'FileNotFoundError'),
}


@pytest.mark.parametrize('damage', DAMAGE, ids=list(DAMAGE))
def test_damaged_checkpoint_is_moved_aside_and_the_one_before_restored(tmp_path, capsys,
                                                                       damage):
  directory = saved_checkpoints(str(tmp_path))
  damage_files, reason = DAMAGE[damage]
  damage_files(os.path.join(directory, '2'))
  restored = restore_latest(str(tmp_path))
  assert restored.step == 1 and restored.meta == {'at': 1}
  np.testing.assert_array_equal(restored.state.params['w'], np.full((4, 6), 1.0))  # step 1's
  assert restored.data_note == '' and FakeDataIterator(8).state == {'global_next_index': 8}
  assert sorted(os.listdir(directory)) == ['1']
  assert os.listdir(tmp_path / 'checkpoints.unreadable') == ['2']  # kept, aside
  warnings = [l for l in capsys.readouterr().out.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1 and warnings[0].startswith(
      'warning: the checkpoint at step 2 cannot be read (')
  assert reason in warnings[0]


def orbax_wrapped(cause):
  """cause as Orbax re-raises what reading an array raised (serialization.py)."""
  try:
    try:
      raise cause
    except BaseException as e:  # pylint: disable=broad-except
      # pylint: disable-next=broad-exception-raised
      raise Exception('Encountered error while reading array index: (slice(0, 4, 1),). See '
                      'full TensorStore details: <bound method spec of TensorStore({})>.') from e
  except Exception as e:  # pylint: disable=broad-except
    return e


NOT_DAMAGE = {  # errors while restoring that say nothing about the files -> their words
    'EIO': (OSError(5, 'Input/output error'), 'OSError: [Errno 5] Input/output error'),
    'host out of memory': (MemoryError(), 'MemoryError'),
    'sharding': (ValueError('One of device_put args was given the sharding of NamedSharding(mesh='
                            "Mesh('data': 3), spec=PartitionSpec('data',)), which implies that the "
                            'global size of its dimension 0 should be divisible by 3, but it is '
                            'equal to 4'), 'should be divisible by 3'),
    'EIO seen by tensorstore': (
        ValueError('UNAVAILABLE: Error reading "w/0" in OCDBT database: Error reading local file '
                   '"/x/d/1a2b" [OS error 5: EIO Input/output error]'), 'OS error 5'),
    'device out of memory, wrapped as Orbax wraps': (  # RuntimeError: what XlaRuntimeError is
        orbax_wrapped(RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 1073741824 '
                                   'bytes')), 'RESOURCE_EXHAUSTED: Out of memory allocating'),
    'host out of memory, wrapped as Orbax wraps': (orbax_wrapped(MemoryError()), 'MemoryError'),
}


@pytest.mark.parametrize('kind', NOT_DAMAGE, ids=list(NOT_DAMAGE))
def test_restore_error_that_is_not_damage_is_one_line_and_moves_nothing(tmp_path, monkeypatch,
                                                                        kind):
  directory = saved_checkpoints(str(tmp_path))
  error, words = NOT_DAMAGE[kind]
  read = checkpointing._read_items  # pylint: disable=protected-access

  def failing(step_dir, **items):
    if 'state' in items:
      raise error
    return read(step_dir, **items)

  monkeypatch.setattr(checkpointing, '_read_items', failing)
  with pytest.raises(RunFailure) as raised:
    restore_latest(str(tmp_path))
  message = str(raised.value)
  assert '\n' not in message and message.startswith(
      f'could not read the checkpoint at step 2 in {directory} (')
  assert words in message and 'nothing was moved' in message
  assert sorted(os.listdir(directory)) == ['1', '2']
  assert not os.path.exists(tmp_path / 'checkpoints.unreadable')


@pytest.mark.parametrize('workdir', ['gs://bucket/runs/a', 's3://bucket/run'])
def test_workdir_that_is_not_a_local_path_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, workdir):
  """Refused, not written through a bucket (docs/reliability.md says why): one line, and no
  local directory named 'gs:' left where the run started."""
  monkeypatch.chdir(tmp_path)
  message = helpers.one_line_error(lambda: train.train_and_evaluate(helpers.tiny_config(), workdir),
                                   match='is not a local path')
  assert message.startswith(f'workdir {workdir!r} is not a local path')
  assert os.listdir(tmp_path) == []

