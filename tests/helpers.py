"""What several test files share, written once: the repository's paths and the tiny config,
launch.py and the tools run as subprocesses, the embedded photos copied into small folders and
identified in batches, readers of a run's checkpoints and metrics, and the independent truths
more than one file checks against (the paper's layer table, its LRN formula in float64).
Imported as `from tests import helpers`, after conftest.py has set up the environment (JAX is
imported here)."""
import errno
import functools
import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax.data import preprocessing as pp
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.tools import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'data', 'clothing10-128')  # the embedded photos: 10 classes
VAL = os.path.join(DATA, 'val')  # its validation split: 24 photos of each class
CLASSES = sorted(os.listdir(os.path.join(DATA, 'train')))
SMALL_CLASSES = ('hat', 'shoes')  # small_folder's (conftest.py)
DEMO_STATS = 'data/clothing10-128/stats.npz'
TINY = 'configs/alexnet.py:tiny'
# The config files, loaded by path as --config loads them (configs/ is not a package).
alexnet_config = cli.config_module('configs/alexnet.py')
ablations_config = cli.config_module('configs/sweeps/ablations.py')
# The channel mean plain_config subtracts (that of the committed demo stats): a known constant
# that identifies every preprocessed image with its file.
CHANNEL_MEAN = np.load(os.path.join(ROOT, DEMO_STATS))['mean'].astype(np.float32)


# --- subprocesses: launch.py and the tools ---


def cpu_env(devices: int | None = None) -> dict:
  """The environment of a subprocess on CPU: one device (conftest gives this process 8 for the
  sharding tests), or `devices` fake ones; this process's other XLA flags (conftest's
  compiler level) passed on, so that both compile alike and share cache entries."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  if devices is not None:
    flags.append(f'--xla_force_host_platform_device_count={devices}')
  return dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', XLA_FLAGS=' '.join(flags))


def launch_command(workdir, *overrides, config=TINY) -> list[str]:
  return [sys.executable, 'launch.py', f'--config={config}', f'--workdir={workdir}', *overrides]


def launch(workdir, *overrides, config=TINY, check=True, env=None, timeout=600):
  """launch.py in a subprocess (one CPU device unless env says otherwise); with check, a
  nonzero exit fails the test with the command's output."""
  cmd = launch_command(workdir, *overrides, config=config)
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        env=cpu_env() if env is None else env, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f'{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
  return proc


def run_tool(name, *args, env=None, timeout=300):
  """`python -m alexnet_jax.tools.NAME ARGS` in a subprocess (one CPU device unless env says
  otherwise); the exit status is the caller's to check."""
  return subprocess.run([sys.executable, '-m', f'alexnet_jax.tools.{name}', *args], cwd=ROOT,
                        capture_output=True, text=True,
                        env=cpu_env() if env is None else env, timeout=timeout)


class FullFile:
  """A file on a full disk: it opens, its writes fail with ENOSPC (wrap `open`'s result)."""

  def __init__(self, file):
    self.file = file

  def write(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def __getattr__(self, name):
    return getattr(self.file, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.file.close()


# --- a run's files (and a sweep's) ---


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def restore_state(workdir, step=None):
  """(step, the saved train state as a dict of numpy arrays) of the latest checkpoint or `step`."""
  step = checkpoint_steps(workdir)[-1] if step is None else step
  state = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'state'))
  return step, state


def read_summary(workdir) -> dict:
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def train_records(workdir) -> dict:
  """{step: record} of the training records in the run's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return {r['step']: r for r in records if 'train/loss' in r}


def write_run(workdir, top1, top5, losses):
  """A finished run's summary.json and metrics.jsonl as a sweep reads them, without training."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'final_step': 10, 'total_steps': 10, 'wall_time_s': 5.0,
               'eval': {'top1': top1, 'top5': top5}}, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step, loss in enumerate(losses, 1):
      f.write(json.dumps({'step': step, 'train/loss': loss}) + '\n')
    f.write(json.dumps({'step': 10, 'eval/top1': top1}) + '\n')


def assert_png(path, min_side=100):
  """path holds a PNG file (its signature) of an RGB(A) image more than min_side on each side."""
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n', path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > min_side and image.shape[1] > min_side, path


# --- data: configs, small folders of real photos, and which file each batch image is ---


def tiny_config(**dataset):
  config = alexnet_config.get_config('tiny')  # resize 72, crop 67, workers 0
  config.dataset.folder = DATA
  config.dataset.update(dataset)
  return config


def plain_config(folder, size=24, **overrides):
  """No randomness in the pixels (crop = whole image, no flip, no lighting): identifiable."""
  config = tiny_config(folder=folder)
  config.model.num_classes = 2
  config.input.update(resize_size=size, image_size=size, random_flip=False, pca_lighting=False,
                      mean='channel', standardize=False, stats_file=DEMO_STATS)
  config.train.batch_size = 4
  config.eval.batch_size = 4
  config.input.update(overrides)
  return config


def train_source(config):
  """The training split's source, as the stats functions take it (built on demand)."""
  return lambda: sources.make_source(config.dataset, config.dataset.train_split)


def copy_images(root, classes, per_split):
  """root/<split>/<class>/: the first n embedded photos of each class, n = per_split[split]."""
  for split, n in per_split.items():
    for name in classes:
      os.makedirs(os.path.join(root, split, name))
      for f in sorted(os.listdir(os.path.join(DATA, split, name)))[:n]:
        shutil.copy(os.path.join(DATA, split, name, f), os.path.join(root, split, name, f))
  return str(root)


def decoded_squares(paths, size):
  return np.stack([pp.center_crop(pp.resize_shorter_side(pp.decode_image(open(p, 'rb').read()),
                                                         size), size) for p in paths])


def expected_images(folder, split, size=24):
  """{image bytes -> (path, label)} of plain_config's output, computed file by file."""
  pairs = []
  for label, name in enumerate(sorted(os.listdir(os.path.join(folder, split)))):
    pairs += [(p, label) for p in sorted(glob.glob(os.path.join(folder, split, name, '*')))]
  return expected_table(pairs, size)


def expected_table(pairs, size=24):
  out = {}
  for path, label in pairs:
    x = decoded_squares([path], size)[0].astype(np.float32) - CHANNEL_MEAN
    out[x.tobytes()] = (path, label)
  return out


def identify(batches, table):
  """The (path, label) of every (real) image of the batches; checks the labels on the way."""
  found = []
  for b in batches:
    mask = b.get('mask', np.ones(len(b['label']), bool))
    for img, label in zip(b['image'][mask], b['label'][mask]):
      path, true_label = table[np.ascontiguousarray(img).tobytes()]
      assert label == true_label
      found.append(path)
  return found


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def one_line_error(fn, match=None) -> str:
  """fn() raises a UserError (matching `match`) of one line; returns its message."""
  with pytest.raises(UserError, match=match) as e:
    fn()
  assert '\n' not in str(e.value)
  return str(e.value)


# --- the paper's network: its layer table, its LRN, and narrow nets on small images ---

# The paper's layers (section 3.5, Figure 2): (name, kernel h, kernel w, input maps per kernel,
# number of kernels) for convs; (name, inputs, outputs) for the fully connected layers.
PAPER_CONVS = [('conv1', 11, 11, 3, 96), ('conv2', 5, 5, 48, 256), ('conv3', 3, 3, 256, 384),
               ('conv4', 3, 3, 192, 384), ('conv5', 3, 3, 192, 256)]
PAPER_FCS = [('fc6', 6 * 6 * 256, 4096), ('fc7', 4096, 4096), ('fc8', 4096, 1000)]


def paper_param_count(num_classes: int = 1000) -> int:
  """Weights plus biases of the layer table, with num_classes outputs of fc8."""
  fcs = PAPER_FCS[:-1] + [('fc8', 4096, num_classes)]
  return (sum(kh * kw * cin * cout + cout for _, kh, kw, cin, cout in PAPER_CONVS) +
          sum(fin * fout + fout for _, fin, fout in fcs))


LRN_N, LRN_K, LRN_ALPHA, LRN_BETA = 5, 2.0, 1e-4, 0.75  # paper section 3.3


def lrn_float64(a):
  """b[c] = a[c] / (k + alpha * sum_{j=max(0,c-n/2)}^{min(N-1,c+n/2)} a[j]^2)^beta, written out,
  over the last axis."""
  a = np.asarray(a, np.float64)
  channels = a.shape[-1]
  b = np.empty_like(a)
  for c in range(channels):
    lo, hi = max(0, c - LRN_N // 2), min(channels - 1, c + LRN_N // 2)
    d = LRN_K + LRN_ALPHA * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
    b[..., c] = a[..., c] / d ** LRN_BETA
  return b


def init_params(model, image_size=227, seed=0):
  return jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.PRNGKey(seed)}, jnp.zeros((1, image_size, image_size, 3)))['params']


# The switches, on a narrow net with small images (the arithmetic is the same).
SMALL = dict(width=0.25, num_classes=7)
IMAGE = 67  # conv1 -> 15, pool -> 7, pool -> 3, pool5 -> 1


def run_small(seed=0, train=False, rng=1, **switches):
  """(params, input, logits, the sown intermediates in float64) of a SMALL net on 2 images."""
  model = alexnet.AlexNet(**{**SMALL, **switches})
  params = init_params(model, IMAGE, seed)
  x = jax.random.uniform(jax.random.PRNGKey(42), (2, IMAGE, IMAGE, 3), minval=-1, maxval=1)
  apply = jax.jit(functools.partial(model.apply, train=train, mutable=['intermediates']))
  logits, state = apply({'params': params}, x, rngs={'dropout': jax.random.PRNGKey(rng)})
  inter = {k: np.asarray(v[0], np.float64) for k, v in state['intermediates'].items()}
  return params, x, logits, inter


def halves(x_GxBxHxWxC):
  """The two groups' halves side by side on the channel axis, as one ungrouped layer's."""
  return np.concatenate([x_GxBxHxWxC[0], x_GxBxHxWxC[1]], axis=-1)


def config_model(**overrides):
  """configs/alexnet.py's model section (every key) with 10 classes and the overrides."""
  c = alexnet_config.get_config().model
  c.num_classes = 10
  c.update(overrides)
  return c


# --- the split net the sharding and collectives tests train and compile ---

SPLIT_IMAGE = 67
SPLIT_BATCH = 8
SPLIT_MODEL = alexnet.AlexNet(width=0.25, num_classes=10, dropout=0.5, norm='lrn')


def mesh_of(data, model):
  config = ml_collections.ConfigDict({'data': data, 'model': model})
  return sharding.create_mesh(config, jax.devices()[:data * model])


def sgd():
  return optim.create_optimizer(ml_collections.ConfigDict(dict(
      name='sgd', lr=0.05, momentum=0.9, weight_decay=5e-4, schedule='constant')), 1, 1)


def record_folder_openings(monkeypatch) -> list[str]:
  """The split of every ImageFolderSource opened from now on (the list fills as they open)."""
  opened = []
  real_init = sources.ImageFolderSource.__init__

  def recording_init(self, root, split):
    opened.append(split)
    real_init(self, root, split)

  monkeypatch.setattr(sources.ImageFolderSource, '__init__', recording_init)
  return opened
