"""Failures that come from what a run is given, through launch.py: a changed experiment setting
on resume (refused, one line, nothing moved), a new lr on resume (in force from the resume step
on, bit for bit against the checkpoint restored and stepped by hand), a checkpoint of another
model, a net that diverges (stopped with its last good checkpoint, or its steps skipped and
counted), unreadable images (skipped and counted, odd modes converted), and bad flags (one line,
exit 2, before anything compiles). The kills, signals, full disks and damaged checkpoints of
alexnet_jax/resilience.py: test_resilience.py, whose launch helpers these tests share."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import helpers
from tests.test_resilience import STEPS
from tests.test_resilience import copy_of
from tests.test_resilience import run


@pytest.fixture(scope='module')
def four_steps(tmp_path_factory):
  """A finished 4-step run of test_resilience's config (checkpoints at 2 and 4), trained once
  for the tests that resume it with a changed setting: each on its own copy (copy_of)."""
  workdir = str(tmp_path_factory.mktemp('four_steps') / 'run')
  proc = run(workdir, '--config.train.num_steps=4')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert helpers.checkpoint_steps(workdir) == [2, 4]
  return workdir


def test_changed_experiment_setting_is_refused_and_moves_nothing(tmp_path, four_steps):
  """Class (c): one error line naming the key, exit 2, nothing moved; allow_changed lets a
  shape-keeping switch through; a checkpoint without a stored config resumes as before."""
  workdir = copy_of(four_steps, str(tmp_path / 'refused'))
  before = helpers.checkpoint_steps(workdir)
  proc = run(workdir, '--config.model.dropout=0.2')
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      'error: config.model.dropout changed since the checkpoint at step 4 (0.5 -> 0.2)')
  assert helpers.checkpoint_steps(workdir) == before
  assert not os.path.exists(os.path.join(workdir, 'checkpoints.unreadable'))
  allowed = run(workdir, '--config.model.dropout=0.2', '--config.train.allow_changed=model.dropout',
                '--config.train.num_steps=5')
  assert allowed.returncode == 0, allowed.stdout + allowed.stderr
  assert 'model.dropout 0.5 -> 0.2 at step 4 (allowed by train.allow_changed' in allowed.stdout
  # A checkpoint written before configs were stored, by the old (DataLoader) iterator: read as
  # before, with a note, and the data continue at the same position of today's order.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '5', 'config'))
  with open(os.path.join(workdir, 'checkpoints', '5', 'data', 'process_0-of-1.json'), 'w') as f:
    json.dump({'version': 2, 'last_seen_indices': {'0': 39}, 'last_worker_index': -1,
               'worker_count': 0, 'sampler': 'IndexSampler(...)'}, f)
  old = run(workdir, '--config.train.num_steps=6')
  assert old.returncode == 0, old.stdout + old.stderr
  assert 'stores no config' in old.stdout and 'at step 5' in old.stdout
  assert 'could not be restored' in old.stdout and 'continuing at position 40' in old.stdout


# The truth for the lr test, run as its own process like launch.py (one CPU device): the
# checkpoint restored by hand, the new lr set through optax's own inject_hyperparams state, the
# data iterator set to the saved position, and the step jitted as the train loop jits it.
LR_REFERENCE = r"""
import json, os, sys
import jax, jax.numpy as jnp, ml_collections, orbax.checkpoint as ocp
from alexnet_jax import optim, sharding, train
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import pipeline
from alexnet_jax.model import alexnet
from tests.helpers import alexnet_config
checkpoint, steps, new_lrs = sys.argv[1], int(sys.argv[2]), [float(a) for a in sys.argv[3:]]
config = alexnet_config.get_config('tiny')
config.update_from_flattened_dict({'optimizer.name': 'sgd', 'optimizer.lr': 0.01})
model = alexnet.from_config(config.model)
tx = optim.create_optimizer(config.optimizer, 125, 4)
mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': 1, 'model': 1}))
runs = []
for new_lr in new_lrs:  # each from the checkpoint afresh
  with jax.set_mesh(mesh):
    like = train.create_train_state(model, tx, jax.random.PRNGKey(0), 67, mesh)
    saved = ocp.StandardCheckpointer().restore(
        os.path.join(checkpoint, 'state'), jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
    opt_state = saved.opt_state
    opt_state.hyperparams['learning_rate'] = jnp.asarray(new_lr, jnp.float32)
    state = like.replace(step=saved.step, params=saved.params, opt_state=opt_state, rng=saved.rng)
    loader = iter(pipeline.create_train_loader(config, dataset_lib.build(config), seed=0))
    with open(os.path.join(checkpoint, 'data', 'process_0-of-1.json')) as f:
      loader.set_state(json.load(f))
    step = train.jit_train_step(state, mesh)
    losses = []
    for _ in range(steps):
      state, metrics = step(state, sharding.global_batch(next(loader), mesh))
      losses.append(float(metrics['loss']))
  runs.append(losses)
print(json.dumps(runs))
"""


def test_new_lr_on_resume_is_in_force_bit_for_bit(tmp_path, four_steps):
  """Class (b): --config.optimizer.lr on a resume trains with that lr from the resume step on:
  the same losses, bit for bit, as the checkpoint restored and stepped by hand with that lr."""
  workdir = copy_of(four_steps, str(tmp_path / 'lr'))
  checkpoint = os.path.join(four_steps, 'checkpoints', '4')  # the step-4 checkpoint, untouched
  resumed = run(workdir, '--config.optimizer.lr=0.003', '--config.train.num_steps=7')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'optimizer.lr 0.01 -> 0.003 at step 4' in resumed.stdout
  logged = helpers.train_records(workdir)
  assert [logged[s]['train/lr'] for s in (5, 6, 7)] == [pytest.approx(0.003, rel=1e-6)] * 3
  assert logged[4]['train/lr'] == pytest.approx(0.01, rel=1e-6)
  # The reference with the new lr, and with the old one, in one process.
  reference = subprocess.run([sys.executable, '-c', LR_REFERENCE, checkpoint, '3', '0.003',
                              '0.01'], cwd=helpers.ROOT, capture_output=True, text=True,
                             env=helpers.cpu_env(), timeout=600)
  assert reference.returncode == 0, reference.stderr
  expected, old = json.loads(reference.stdout.strip().splitlines()[-1])
  assert [logged[s]['train/loss'] for s in (5, 6, 7)] == expected  # bit for bit
  # And the old lr would have given other losses (the new one is really in force).
  assert old[1:] != expected[1:]


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'diverged')
  proc = run(workdir, '--config.optimizer.lr=1e12', '--config.train.checkpoint_every_steps=1',
             '--config.train.log_every_steps=1')
  assert proc.returncode == 3, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: non-finite loss or gradient at step ')
  bad_step = int(lines[0].split('at step ')[1].split()[0])
  saved = helpers.checkpoint_steps(workdir)
  assert saved and max(saved) < bad_step  # nothing at or after the bad step was saved
  _, state = helpers.restore_state(workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
  assert f'the last checkpoint (step {max(saved)}) is kept' in lines[0]


def test_non_finite_steps_can_be_skipped_and_are_counted(tmp_path):
  workdir = str(tmp_path / 'skipping')
  proc = run(workdir, '--config.optimizer.lr=1e12', '--config.train.on_nonfinite=skip',
             '--config.train.log_every_steps=1')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'skipped non-finite step(s)' in proc.stdout
  summary = helpers.read_summary(workdir)
  assert summary['final_step'] == STEPS and 1 <= summary['nonfinite_steps'] <= STEPS
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    last = [json.loads(line) for line in f if '"train/loss"' in line][-1]
  assert last['train/nonfinite_steps'] == summary['nonfinite_steps']
  _, state = helpers.restore_state(workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


def test_checkpoint_of_another_model_is_a_one_line_error_not_moved(tmp_path, four_steps):
  workdir = copy_of(four_steps, str(tmp_path / 'other_model'))
  proc = run(workdir, '--config.model.width=0.25', '--config.train.allow_changed=model.width')
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: config.model.width changed since the '
                                                 'checkpoint at step 4 (0.125 -> 0.25)')
  assert 'shapes' in lines[0]
  assert helpers.checkpoint_steps(workdir) == [2, 4]
  # Without a stored config the shapes themselves are compared.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4', 'config'))
  proc = run(workdir, '--config.model.width=0.25')
  assert proc.returncode == 2 and 'written by another model or optimizer config' in proc.stderr
  assert helpers.checkpoint_steps(workdir) == [2, 4]


def build_folder_with_bad_images(root):
  """train/{a,b}: 16 files of which 3 cannot be read; odd modes that must be converted."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = helpers.DATA
  real = lambda split, cls: sorted(os.path.join(data, split, cls, f)
                                   for f in os.listdir(os.path.join(data, split, cls)))
  jpegs = real('train', 'hat')[:9] + real('val', 'hat')[:5]
  for d in ('train/a', 'train/b', 'val/a', 'val/b'):
    os.makedirs(os.path.join(root, d))
  for i, path in enumerate(jpegs[:5]):
    shutil.copy(path, os.path.join(root, 'train/a', f'{i}.jpg'))
  for i, path in enumerate(jpegs[5:9]):
    shutil.copy(path, os.path.join(root, 'train/b', f'{i}.jpg'))
  photo = Image.open(jpegs[0])
  odd = {'train/a/gray.jpg': photo.convert('L'), 'train/a/cmyk.jpg': photo.convert('CMYK'),
         'train/a/rgba.png': photo.convert('RGBA'), 'train/b/tiny.jpg': photo.resize((10, 10))}
  for name, image in odd.items():
    image.save(os.path.join(root, name))
  with open(jpegs[1], 'rb') as f:
    data_bytes = f.read()
  bad = {'train/b/truncated.jpg': data_bytes[:len(data_bytes) // 3], 'train/b/empty.jpg': b'',
         'train/b/notes.jpg': b'these are my notes, not an image\n',
         'val/b/truncated.jpg': data_bytes[:len(data_bytes) // 3]}
  for name, content in bad.items():
    with open(os.path.join(root, name), 'wb') as f:
      f.write(content)
  for i, path in enumerate(jpegs[9:11]):
    shutil.copy(path, os.path.join(root, 'val/a', f'{i}.jpg'))
  for i, path in enumerate(jpegs[11:13]):
    shutil.copy(path, os.path.join(root, 'val/b', f'{i}.jpg'))
  return odd, bad


def test_bad_images_are_skipped_and_counted_odd_modes_converted(tmp_path):
  from alexnet_jax.data import preprocessing  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / 'images')
  odd, bad = build_folder_with_bad_images(folder)
  for name in odd:  # grayscale, CMYK, RGBA, 10x10: decoded to RGB
    with open(os.path.join(folder, name), 'rb') as f:
      image = preprocessing.decode_image(f.read())
    assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
  workdir = str(tmp_path / 'run')
  # 16 training files, batch 8: 4 steps show each file exactly twice.
  proc = run(workdir, f'--config.dataset.folder={folder}', '--config.model.num_classes=2',
             '--config.train.num_steps=4', '--config.train.eval_every_epochs=2',
             '--config.eval.batch_size=5')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in bad:
    assert f'skipping unreadable image {os.path.join(folder, name)}' in proc.stdout
  summary = helpers.read_summary(workdir)
  assert summary['final_step'] == 4
  assert summary['skipped_images'] == 3 * 2  # three bad training files, seen twice each
  assert summary['eval']['skipped_images'] == 1 and summary['eval']['count'] == 4
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [json.loads(line) for line in f if '"train/loss"' in line]
  assert train[-1]['train/skipped_images'] == 6
  assert all(np.isfinite(r['train/loss']) for r in train)
  assert '6 training image presentation(s) were skipped' in proc.stdout


BAD_INPUT = [  # (what is wrong, extra flags, a phrase of the one-line error)
    ('unknown config key', ['--config.model.no_such_key=1'], 'unknown config key'),
    ('wrong type', ['--config.train.batch_size=abc'], "batch_size=abc: invalid literal"),
    ('negative learning rate', ['--config.optimizer.lr=-1'], 'lr=-1.0 must be > 0'),
    ('bad switch value', ['--config.model.pool=avg'], "pool='avg'; choose one of"),
    ('batch not divisible over devices', ['--config.train.batch_size=9',
                                          '--config.mesh.data=2'],
     'batch_size=9 does not divide over the 2 devices'),
    ('num_classes not the dataset', ['--config.model.num_classes=7'], 'num_classes is 7'),
    ('missing image folder', ['--config.dataset.folder=/nonexistent/images'],
     "'/nonexistent/images/train' does not exist"),
    ('unknown dataset name', ['--config.dataset.name=no_such_dataset'],
     "unknown dataset 'no_such_dataset'"),
    ('imagenet2012 manual files missing', ['--config=configs/alexnet.py',
                                           '--config.dataset.data_dir={tmp}/tfds'],
     'put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in'),
    ('workdir unwritable', ['--workdir={tmp}/a_file/run'], 'is not writable'),
    ('workdir in use by another run', ['--workdir={tmp}/busy'],
     'is in use by a running training'),
]


@pytest.mark.parametrize('what,flags,message', BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_nonzero_and_before_compiling(tmp_path, what, flags, message):
  import fcntl  # pylint: disable=g-import-not-at-top
  (tmp_path / 'a_file').write_text('a file where a directory should be')
  (tmp_path / 'busy').mkdir()
  with open(tmp_path / 'busy' / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another run" holds the workdir
    flags = [f.format(tmp=tmp_path) for f in flags]
    if not any(f.startswith('--config=') for f in flags):
      flags.insert(0, '--config=configs/alexnet.py:tiny')
    if not any(f.startswith('--workdir=') for f in flags):
      flags.append(f'--workdir={tmp_path}/run')
    cmd = [sys.executable, 'launch.py', *flags]
    env = helpers.cpu_env(2)
    proc = subprocess.run(cmd, cwd=helpers.ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
  assert proc.returncode == 2, (what, proc.stdout, proc.stderr)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), (what, proc.stderr)
  assert message in lines[0], (what, lines[0])
  assert 'first step' not in proc.stdout  # refused before anything was compiled
