r"""Evaluation and prediction from a training run's checkpoint.

  python -m alexnet_jax.inference eval --workdir=runs/demo [--ten_crop] [--step=N]
  python -m alexnet_jax.inference predict --workdir=runs/demo IMAGE [IMAGE ...]

eval: validation top-1/top-5 with the centre 227 crop, or the paper's 10-crop test (section
4.1: four corners + centre and their flips, softmax averaged); prints them and writes
<workdir>/eval_<centre|10crop>_step<N>.json. predict: the top-5 classes with probabilities.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alexnet_jax import checkpointing
from alexnet_jax import input_pipeline
from alexnet_jax import models
from alexnet_jax import preprocessing
from alexnet_jax import sharding
from alexnet_jax import train
from alexnet_jax.errors import UserError


def _state(config, params) -> train.TrainState:
  model = models.from_config(config.model)
  return train.TrainState.create(apply_fn=model.apply, params=params, tx=optax.identity(),
                                 rng=jax.random.PRNGKey(0))


def evaluate_run(workdir: str, ten_crop: bool, step: int | None = None,
                 batch_size: int | None = None) -> dict:
  config, params, step = checkpointing.load_run(workdir, step)
  if batch_size:
    config.eval.batch_size = batch_size
  elif ten_crop:  # ten times the images per batch: keep the memory of a centre-crop batch
    config.eval.batch_size = max(1, config.eval.batch_size // 10)
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': 1, 'model': 1}),
                              jax.devices()[:1])
  # The run's own statistics (cached in its workdir when computed from the training set).
  prep = input_pipeline.preprocess_params(config, stats_dir=workdir)
  loader = input_pipeline.create_eval_loader(config, ten_crop=ten_crop, shard_index=0,
                                             shard_count=1, params=prep)
  with jax.set_mesh(mesh):
    result = train.evaluate(_state(config, params), loader, jax.jit(train.eval_step), mesh)
  result.update({'crop': '10crop' if ten_crop else 'centre', 'step': step})
  with open(os.path.join(workdir, f'eval_{result["crop"]}_step{step}.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def read_image(path: str, prep: input_pipeline.PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
  """An image file -> (its uint8 resize x resize centre, the net's centre-crop input)."""
  try:
    with open(path, 'rb') as f:
      image = preprocessing.decode_and_resize(f.read(), prep.resize_size)
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read image {path!r}: {e}') from None
  return image, preprocessing.eval_transform(image, image_size=prep.image_size, mean=prep.mean,
                                             std=prep.std)


def predict(workdir: str, paths: list[str], top_k: int = 5) -> list[list[tuple[str, float]]]:
  """For each image file: its top_k (class name, probability), most probable first."""
  config, params, _ = checkpointing.load_run(workdir)
  with open(os.path.join(workdir, 'classes.json')) as f:
    class_names = json.load(f)
  prep = input_pipeline.preprocess_params(config, stats_dir=workdir)
  images = [read_image(path, prep)[1] for path in paths]
  model = models.from_config(config.model)
  logits = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))(
      params, jnp.asarray(np.stack(images)))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  k = min(top_k, probs.shape[-1])
  order = np.argsort(-probs, axis=-1)[:, :k]
  return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  ev = sub.add_parser('eval', help='validation top-1/top-5 of a checkpoint')
  ev.add_argument('--workdir', required=True)
  ev.add_argument('--ten_crop', action='store_true', help="the paper's 10-crop test")
  ev.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  ev.add_argument('--batch_size', type=int, default=None)
  pr = sub.add_parser('predict', help='top-5 classes of image files')
  pr.add_argument('--workdir', required=True)
  pr.add_argument('images', nargs='+')
  args = parser.parse_args(argv)
  try:
    if args.command == 'eval':
      r = evaluate_run(args.workdir, args.ten_crop, args.step, args.batch_size)
      print(f'{r["crop"]} eval at step {r["step"]}: top1 {r["top1"]:.4f} top5 {r["top5"]:.4f} '
            f'loss {r["loss"]:.4f} on {r["count"]} images')
    else:
      for path, top in zip(args.images, predict(args.workdir, args.images)):
        print(f'{path}: ' + ', '.join(f'{name} {p:.3f}' for name, p in top))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
