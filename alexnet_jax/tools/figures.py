r"""The paper's figures from a training run.

  python -m alexnet_jax.tools.figures conv1 --workdir=runs/demo --out=conv1.png
  python -m alexnet_jax.tools.figures retrieval --workdir=runs/demo --images_dir=data/clothing10-128/val
  python -m alexnet_jax.tools.figures curves --workdir=runs/imagenet --out=curves.png

curves: a run's training loss and validation top-1 error against the step (metrics.jsonl), with
chance marked and each plateau decay of the lr; it prints the step at which the validation
top-1 first left chance (more than 3 standard deviations above 1/classes: optim.at_chance) and
whether any lr decay came before it.

retrieval (Figure 4, right): for a few query images of a folder, their nearest neighbours by
Euclidean distance between fc7 activations.

conv1 (Figure 3): the 96 first-layer kernels (11x11x3), each contrast-normalised on its own,
the first group's 48 above and the second's below, as in the paper. It also prints, per group,
the mean chroma fraction of its kernels: the share of a kernel's energy that is colour (the
deviation of R, G, B from their mean at each pixel) rather than luminance. The paper saw the
first GPU's kernels come out largely colour-agnostic and the second's colour-specific.
"""
import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from alexnet_jax import checkpointing
from alexnet_jax import evaluation
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.tools import cli

FIGURES = ('conv1', 'retrieval', 'curves')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run\'s workdir.')
_OUT = flags.DEFINE_string('out', None, 'Output PNG (default: <figure>.png).')
_STEP = flags.DEFINE_integer('step', None, 'conv1: checkpoint step (default: the latest).')
_IMAGES_DIR = flags.DEFINE_string('images_dir', None, 'retrieval: a folder of images (searched '
                                  'deeply).')
_QUERIES = flags.DEFINE_integer('queries', 5, 'retrieval: query images.')
_NEIGHBOURS = flags.DEFINE_integer('neighbours', 6, 'retrieval: neighbours per query.')


def _pyplot():
  """matplotlib's pyplot on the file backend, imported only when a figure is drawn (heavy)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def chroma_fraction(kernels_Nx11x11x3: np.ndarray) -> np.ndarray:
  """Per kernel: sum over pixels of |rgb - mean(rgb)|^2 over the kernel's total energy about
  its mean. 0 for a gray (R=G=B) kernel; larger the more colour-specific."""
  k = np.asarray(kernels_Nx11x11x3, np.float64)
  colour = k - k.mean(axis=-1, keepdims=True)
  centred = k - k.mean(axis=(1, 2, 3), keepdims=True)
  return np.sum(colour ** 2, axis=(1, 2, 3)) / np.maximum(np.sum(centred ** 2, axis=(1, 2, 3)),
                                                          1e-30)


def kernels_by_group(conv1_kernel_GxKxKx3xO: np.ndarray) -> np.ndarray:
  """G x kh x kw x 3 x O -> G x O x kh x kw x 3."""
  return np.transpose(np.asarray(conv1_kernel_GxKxKx3xO), (0, 4, 1, 2, 3))


def kernel_grid(conv1_kernel_GxKxKx3xO: np.ndarray, columns: int = 16, gap: int = 1,
                group_gap: int = 4) -> np.ndarray:
  """An RGB image in [0, 1]: each group's kernels in rows of `columns`, groups stacked."""
  groups = kernels_by_group(conv1_kernel_GxKxKx3xO)
  g, n, kh, kw, _ = groups.shape
  rows = -(-n // columns)
  height = g * rows * (kh + gap) + (g - 1) * group_gap
  image = np.ones((height, columns * (kw + gap) - gap, 3))
  for gi in range(g):
    for i in range(n):
      k = groups[gi, i]
      k = (k - k.min()) / max(k.max() - k.min(), 1e-12)  # contrast-normalised per kernel
      top = gi * (rows * (kh + gap) + group_gap) + (i // columns) * (kh + gap)
      left = (i % columns) * (kw + gap)
      image[top:top + kh, left:left + kw] = k
  return image


def conv1_figure(workdir: str, out: str, step: int | None = None) -> dict:
  plt = _pyplot()
  _, params, step = checkpointing.load_run(workdir, step)
  kernel = params['conv1']['kernel']
  image = kernel_grid(kernel)
  chroma = [float(chroma_fraction(k).mean()) for k in kernels_by_group(kernel)]
  fig, ax = plt.subplots(figsize=(8, 8 * image.shape[0] / image.shape[1] + 0.6))
  ax.imshow(image, interpolation='nearest')
  ax.set_axis_off()
  ax.set_title(f'conv1 kernels at step {step}: group 1 above (chroma {chroma[0]:.2f}), '
               f'group 2 below (chroma {chroma[1]:.2f})', fontsize=9)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return {'step': step, 'chroma_per_group': chroma, 'out': out}


def fc7_features(workdir: str, paths: list[str], batch_size: int = 32):
  """(fc7 activations N x 4096, the 256-px centre images) of image files, from a checkpoint."""
  config, variables, _ = checkpointing.load_variables(workdir)  # batch norm's statistics too
  prep = dataset_lib.of_run(workdir, config).preprocess
  model = alexnet.from_config(config.model)

  @jax.jit
  def embed(x):
    _, state = model.apply(variables, x, train=False, mutable=['intermediates'])
    return state['intermediates']['fc7_out'][0]

  thumbs, feats = [], []
  for start in range(0, len(paths), batch_size):
    batch = []
    for path in paths[start:start + batch_size]:
      image, net_input = evaluation.read_image(path, prep)
      thumbs.append(image)
      batch.append(net_input)
    feats.append(np.asarray(embed(np.stack(batch))))
  return np.concatenate(feats), thumbs


def nearest_neighbours(features: np.ndarray, queries: list[int], k: int) -> np.ndarray:
  """For each query index, the k indices nearest by Euclidean distance (itself first)."""
  q = features[queries].astype(np.float64)
  f = features.astype(np.float64)
  dist = (np.sum(q ** 2, 1)[:, None] - 2 * q @ f.T + np.sum(f ** 2, 1)[None, :])
  return np.argsort(dist, axis=1, kind='stable')[:, :k]


def retrieval_figure(workdir: str, images_dir: str, out: str, num_queries: int = 5,
                     k: int = 6, seed: int = 0) -> dict:
  """Paper Figure 4 (right): query images and their nearest neighbours in fc7 space."""
  plt = _pyplot()
  paths = sorted(os.path.join(root, f) for root, _, files in os.walk(images_dir)
                 for f in files if f.lower().endswith(('.jpg', '.jpeg', '.png')))
  if len(paths) < 2:
    raise UserError(f'{images_dir!r} holds fewer than 2 images')
  features, thumbs = fc7_features(workdir, paths)
  queries = sorted(np.random.default_rng(seed).choice(len(paths), min(num_queries, len(paths)),
                                                      replace=False).tolist())
  neighbours = nearest_neighbours(features, queries, min(k + 1, len(paths)))
  fig, axes = plt.subplots(len(queries), neighbours.shape[1],
                           figsize=(1.6 * neighbours.shape[1], 1.7 * len(queries)),
                           squeeze=False)
  for row, q in enumerate(queries):
    for col, idx in enumerate(neighbours[row]):
      ax = axes[row, col]
      ax.imshow(thumbs[idx])
      ax.set_xticks([])
      ax.set_yticks([])
      name = os.path.basename(os.path.dirname(paths[idx]))
      ax.set_title(('query: ' if col == 0 else '') + name, fontsize=7)
  fig.suptitle('Nearest neighbours in fc7 space (first column: the query)', fontsize=9)
  fig.tight_layout()
  fig.savefig(out, dpi=72)
  plt.close(fig)
  return {'queries': [paths[q] for q in queries],
          'neighbours': [[paths[i] for i in row] for row in neighbours], 'out': out}


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise UserError(f'{workdir!r} holds no metrics.jsonl (not a training run\'s workdir?)')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_num_classes(workdir: str) -> int:
  """The classes of a run, from the config.json it writes at each start."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return int(json.load(f)['model']['num_classes'])
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'cannot read the config of run {workdir!r}: {e}') from None


def chance_summary(records: list[dict]) -> dict:
  """From a run's metrics: the step of the first evaluation that was not at chance (None if
  none), the steps of the lr decays, those before it, and the last evaluation's step."""
  evals = [r for r in records if 'eval/top1' in r]
  left = next((r['step'] for r in evals if r.get('eval/at_chance', 1.0) == 0.0), None)
  decays = [r['step'] for r in evals if r.get('eval/lr_decayed', 0.0) == 1.0]
  return {'left_chance_step': left, 'decay_steps': decays,
          'decays_before_leaving_chance': [s for s in decays if left is None or s < left],
          'last_eval_step': evals[-1]['step'] if evals else None}


def curves_figure(workdir: str, out: str, num_classes: int) -> dict:
  """The training loss and the validation top-1 error of a run against the step."""
  records = read_metrics(workdir)
  train = [(r['step'], r['train/loss']) for r in records if 'train/loss' in r]
  evals = [(r['step'], 1.0 - r['eval/top1']) for r in records if 'eval/top1' in r]
  if not train:
    raise UserError(f'{workdir!r}: metrics.jsonl has no training records yet')
  summary = chance_summary(records)
  plt = _pyplot()
  fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
  ax_loss.plot(*zip(*train), lw=1, label='training loss')
  ax_loss.axhline(np.log(num_classes), color='gray', ls='--', label=f'chance, ln {num_classes}')
  ax_loss.set(xlabel='step', ylabel='loss')
  if evals:
    ax_err.plot(*zip(*evals), marker='.', lw=1, label='validation top-1 error')
  ax_err.axhline(1 - 1 / num_classes, color='gray', ls='--', label='chance')
  ax_err.set(xlabel='step', ylabel='top-1 error', ylim=(0, 1))
  for ax in (ax_loss, ax_err):
    for step in summary['decay_steps']:
      ax.axvline(step, color='tab:red', lw=0.8)
    if summary['left_chance_step'] is not None:
      ax.axvline(summary['left_chance_step'], color='tab:green', ls=':', label='left chance')
    ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return {**summary, 'out': out, 'last_train_step': train[-1][0], 'last_loss': train[-1][1]}


def main(argv):
  if len(argv) != 2 or argv[1] not in FIGURES:
    raise app.UsageError(f'name one figure: {" | ".join(FIGURES)} (then its flags)')
  figure = argv[1]
  needed = {'conv1': ['workdir'], 'retrieval': ['workdir', 'images_dir'],
            'curves': ['workdir']}[figure]
  missing = [f'--{name}' for name in needed if flags.FLAGS[name].value is None]
  if missing:
    raise app.UsageError(f'{figure} needs {" and ".join(missing)}')
  out = _OUT.value or f'{figure}.png'
  if figure == 'curves':
    r = curves_figure(_WORKDIR.value, out, run_num_classes(_WORKDIR.value))
    left = r['left_chance_step']
    print(f'{r["out"]}: training to step {r["last_train_step"]} (last logged loss '
          f'{r["last_loss"]:.4f}); the validation top-1 '
          + (f'left chance at step {left}' if left is not None else
             f'had not left chance by step {r["last_eval_step"]}')
          + f'; lr decays at steps {r["decay_steps"] or "none"}, '
          f'{len(r["decays_before_leaving_chance"])} before leaving chance')
    return
  if figure == 'retrieval':
    r = retrieval_figure(_WORKDIR.value, _IMAGES_DIR.value, out, _QUERIES.value,
                         _NEIGHBOURS.value)
    for q, row in zip(r['queries'], r['neighbours']):
      print(f'{q}: ' + ', '.join(os.path.relpath(p, _IMAGES_DIR.value) for p in row[1:]))
    print(f'wrote {r["out"]}')
    return
  result = conv1_figure(_WORKDIR.value, out, _STEP.value)
  chroma = result['chroma_per_group']
  print(f'conv1 kernels at step {result["step"]} -> {result["out"]}')
  print(f'mean chroma fraction per group: group 1 {chroma[0]:.3f}, group 2 {chroma[1]:.3f} '
        '(0 = gray, colour-agnostic kernels)')


if __name__ == '__main__':
  cli.run(main)
