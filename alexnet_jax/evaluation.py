"""The paper's test protocol (section 4.1) in one place: the eval step, top-k, the centre crop
and the 10-crop test, evaluation of a checkpoint and prediction on image files.

eval_step sums over the real examples of a padded batch; a 5-D batch (B x 10 x S x S x 3) is
the 10-crop test, the softmax averaged over the four corner and centre patches and their
reflections. The commands are `python -m alexnet_jax.tools.evaluate` and `... predict`.
"""
import json
import os
from typing import Any

from flax import struct
from flax.training import train_state
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alexnet_jax import checkpointing
from alexnet_jax import compiler_options
from alexnet_jax import model as model_lib
from alexnet_jax import sharding
from alexnet_jax.data import augment_on as augment_on_lib
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import device_preprocessing
from alexnet_jax.data import pipeline
from alexnet_jax.data import preprocessing
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy, in float32 whatever the compute dtype."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k best-scored classes, 0.0 elsewhere and wherever a logit
  is not finite.

  The classes are ranked as jnp.argmax and a stable descending sort rank them: by score, and
  on a tie the lower class index first. So a class ranks above the label if its score is
  higher, or equal with a lower index; the label is in the top k if fewer than k classes do.
  Counting ties as correct would score constant logits (a dead net) top-1 = 1.0; comparisons
  with NaN are all false, so NaN logits would score 1.0 too. The learning-rate rule reads this
  number.

  Written as a count rather than lax.top_k: it is elementwise per example, so a batch split
  over devices stays split (XLA gathers the whole batch for a top_k).
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  lower_index = jnp.arange(logits.shape[-1]) < labels[:, None]
  ahead = (logits > label_logit) | ((logits == label_logit) & lower_index)
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return ((jnp.sum(ahead, axis=-1) < k) & finite).astype(jnp.float32)


def eval_step(state, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Sums over the real (mask=True) examples of a padded eval batch.

  A 5-D image batch B x 10 x S x S x 3 is the paper's 10-crop test (section 4.1): the softmax
  is averaged over the 10 patches of each image.
  """
  images = batch['image']
  labels = batch['label']
  variables = alexnet.variables(state.params, state.batch_stats)  # BN: the running averages
  if images.ndim == 5:
    b, n = images.shape[:2]
    logits = state.apply_fn(variables, images.reshape((b * n,) + images.shape[2:]), train=False)
    logits = logits.reshape(b, n, -1).astype(jnp.float32)  # the softmax in float32
    probs = jax.nn.softmax(logits, axis=-1).mean(axis=1)
    loss = -jnp.log(jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0])
    # Ranked by the mean probability itself (its log turns a probability that underflowed to 0
    # into -inf); an image with a non-finite logit in any crop is wrong, as topk_correct counts
    # one crop.
    finite = jnp.all(jnp.isfinite(logits), axis=(1, 2))
    scores = jnp.where(finite[:, None], probs, jnp.nan)
  else:
    scores = state.apply_fn(variables, images, train=False)
    loss = cross_entropy_loss(scores, labels)
  mask = batch['mask'].astype(jnp.float32)
  return {
      'loss': jnp.sum(loss * mask),
      'top1': jnp.sum(topk_correct(scores, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(scores, labels, 5) * mask),
      'count': jnp.sum(mask),
  }


def jit_eval_step(state, mesh: jax.sharding.Mesh,
                  augmentation: device_preprocessing.Augmentation | None = None,
                  ten_crop: bool = False):
  """eval_step jitted with the state placed like the training state and the batch over 'data'.

  With an augmentation (config.input.augment_on='device') the batch is uint8 R x R and the
  mean, the centre crop or the ten patches (ten_crop) and the std are applied on the device.
  """
  state_shardings = sharding.tree_shardings(state, mesh)
  if augmentation is None:
    return jax.jit(eval_step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   compiler_options=compiler_options.for_mesh(mesh))

  def crop_and_step(state, batch, aug):
    images = device_preprocessing.eval_images(aug, batch['image'], ten_crop)
    return eval_step(state, {**batch, 'image': images})

  return sharding.BoundArgument.jit(crop_and_step, mesh,
                                    (state_shardings, sharding.batch_sharding(mesh)),
                                    augmentation,
                                    compiler_options=compiler_options.for_mesh(mesh))


class InferenceState(train_state.TrainState):
  """What eval_step reads, as train.TrainState holds it: params, batch norm's running
  statistics (empty without batch norm) and the model's apply_fn; no optimizer."""
  batch_stats: Any = struct.field(default_factory=dict)


def _inference_state(config, variables) -> InferenceState:
  model = model_lib.from_config(config.model)  # the net config.model.arch names
  return InferenceState.create(apply_fn=model.apply, params=variables['params'],
                               tx=optax.identity(), batch_stats=variables.get('batch_stats', {}))


def evaluate(state, eval_loader, jitted_eval_step,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """One pass of eval_loader: mean loss, top-1 and top-5 over its real images, their count and
  how many could not be read (all processes').

  eval_loader is a pipeline.EvalLoader, made once per run: each evaluation is a pass of the
  same iterator, so its Grain worker processes start at the first evaluation only (the caller
  closes it at the end).
  """
  totals = None
  skipped = 0
  for batch in iter(eval_loader):
    skipped += int(np.sum(batch.pop('skipped', 0)))  # unreadable images, already masked
    sums = jitted_eval_step(state, sharding.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if jax.process_count() > 1:  # each process counted its own rows
    skipped = int(np.sum(multihost_utils.process_allgather(np.int64(skipped))))
  totals = jax.device_get(totals)
  count = max(float(totals['count']), 1.0)
  return {'loss': float(totals['loss']) / count, 'top1': float(totals['top1']) / count,
          'top5': float(totals['top5']) / count, 'count': int(totals['count']),
          'skipped_images': skipped}


def evaluate_run(workdir: str, ten_crop: bool, step: int | None = None,
                 batch_size: int | None = None, augment_on: str | None = None) -> dict:
  """The validation result of a run's checkpoint (the latest, or `step`), centre crop or the
  10-crop test, with the run's own config and statistics; also written to
  <workdir>/eval_<centre|10crop>_step<N>.json. augment_on ('host', 'device', 'auto') overrides
  where the run's config crops and normalises."""
  config, variables, step = checkpointing.load_variables(workdir, step)
  if augment_on:
    config.input.augment_on = augment_on
  if batch_size:
    config.eval.batch_size = batch_size
  elif ten_crop:  # ten times the images per batch: keep the memory of a centre-crop batch
    config.eval.batch_size = max(1, config.eval.batch_size // 10)
  mesh = sharding.create_mesh(ml_collections.ConfigDict({'data': 1, 'model': 1}),
                              jax.devices()[:1])
  # The run's own statistics (cached in its workdir when computed from the training set).
  dataset = dataset_lib.build(config, stats_dir=workdir, log=None, open_train=False)
  on_device = augment_on_lib.on_device(config)  # once: the loader and the step follow it
  loader = pipeline.create_eval_loader(config, dataset, ten_crop=ten_crop, on_device=on_device,
                                       shard_index=0, shard_count=1)
  state = _inference_state(config, variables)
  augmentation = device_preprocessing.of_run(config, dataset.preprocess, on_device)
  with jax.set_mesh(mesh):
    result = evaluate(state, loader, jit_eval_step(state, mesh, augmentation, ten_crop), mesh)
  result.update({'crop': '10crop' if ten_crop else 'centre', 'step': step,
                 'augment_on': 'device' if augmentation else 'host'})
  with open(os.path.join(workdir, f'eval_{result["crop"]}_step{step}.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def read_image(path: str, prep: preprocessing.PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
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
  config, variables, _ = checkpointing.load_variables(workdir)
  dataset = dataset_lib.of_run(workdir, config)  # its classes and statistics, no data read
  images = [read_image(path, dataset.preprocess)[1] for path in paths]
  model = model_lib.from_config(config.model)  # the net config.model.arch names
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(  # BN: the running averages
      variables, jnp.asarray(np.stack(images)))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  k = min(top_k, probs.shape[-1])
  order = np.argsort(-probs, axis=-1)[:, :k]
  return [[(dataset.class_names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]
