"""Training: the state, the pure train_step, the one builder of its jitted sharded form, and the
loop that drives it.

train_step is a pure function of (state, batch); jit_train_step places it on a mesh (every
caller that steps uses it: the loop, the benchmarks, the communication tool, the tests). The loop
owns the host side: the dataset built once, periodic evaluation (evaluation.py), the plateau
rule, metrics, checkpoints and resume.
"""
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any

from flax import struct
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alexnet_jax import checkpointing
from alexnet_jax import compiler_options
from alexnet_jax import config_changes
from alexnet_jax import config_validation
from alexnet_jax import evaluation
from alexnet_jax import metric_logging
from alexnet_jax import model as model_lib
from alexnet_jax import optim
from alexnet_jax import resilience
from alexnet_jax import sharding
from alexnet_jax.data import augment_on
from alexnet_jax.data import dataset as dataset_lib
from alexnet_jax.data import device_preprocessing
from alexnet_jax.data import pipeline
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet


def _log(*args, **kwargs) -> None:
  """Progress lines, from the first process only (every process runs the same loop)."""
  if jax.process_index() == 0:
    print(*args, **kwargs)


class TrainState(train_state.TrainState):
  """params, opt_state and step (from flax), plus the dropout key folded with the step and
  batch norm's running statistics (model.norm; an empty dict for a net without batch norm)."""
  rng: jax.Array
  batch_stats: Any = struct.field(default_factory=dict)


def create_train_state(model: alexnet.AlexNet, tx: optax.GradientTransformation, rng: jax.Array,
                       image_size: int, mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """A fresh TrainState; with a mesh, every leaf is created where sharding.PARAM_RULES puts it."""

  def init(key):
    params_rng, dropout_rng = jax.random.split(key)
    # One dummy image per data shard: the sharded model splits the batch over 'data'.
    dummy = jnp.zeros((mesh.shape['data'] if mesh else 1, image_size, image_size, 3))
    variables = model.init({'params': params_rng}, dummy, train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                              rng=dropout_rng, batch_stats=variables.get('batch_stats', {}))
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so that it checkpoints

  if mesh is None:
    return jax.jit(init)(rng)
  shardings = sharding.tree_shardings(jax.eval_shape(init, rng), mesh)
  return jax.jit(init, out_shardings=shardings)(rng)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               nonfinite_guard: bool = True) -> tuple[TrainState, dict]:
  """One SGD step on a batch {'image': B x S x S x 3, 'label': B}; pure and jittable.

  nonfinite_guard=False leaves out the guard that keeps a non-finite update out of the state:
  only for the benchmark, which measures what the guard costs."""
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  # Examples whose image could not be decoded (batch['valid'] False) get no weight.
  weights = batch['valid'].astype(jnp.float32) if 'valid' in batch else jnp.ones(
      batch['label'].shape, jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  weighted_mean = lambda values: jnp.sum(values * weights) / count

  def loss_fn(params):
    variables = alexnet.variables(params, state.batch_stats)
    if state.batch_stats:  # batch norm: this batch's statistics (over its valid examples),
      # the running averages updated
      logits, updated = state.apply_fn(variables, batch['image'], train=True,
                                       example_mask=batch.get('valid'),
                                       rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
      batch_stats = updated['batch_stats']
    else:
      logits = state.apply_fn(variables, batch['image'], train=True,
                              rngs={'dropout': dropout_rng})
      batch_stats = state.batch_stats
    loss = weighted_mean(evaluation.cross_entropy_loss(logits, batch['label']))
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  # A non-finite loss or gradient never reaches params or optimizer state: the state (and so
  # any checkpoint) stays the last good one; the loop then stops or skips (on_nonfinite).
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if nonfinite_guard:
    new_state = _guarded_update(state, grads, batch_stats, finite)
  else:
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {
      'loss': loss,
      'top1': weighted_mean(evaluation.topk_correct(logits, batch['label'], 1)),
      'top5': weighted_mean(evaluation.topk_correct(logits, batch['label'], 5)),
      'grad_norm': grad_norm,
      'lr': optim.current_learning_rate(new_state.opt_state),  # the lr this update used
      'nonfinite': 1.0 - finite.astype(jnp.float32),
  }
  return new_state, metrics


def _guarded_update(state: TrainState, grads, batch_stats, finite: jax.Array) -> TrainState:
  """state.apply_gradients, or the state unchanged where `finite` is False.

  Selecting the new params and momentum against the old ones makes XLA keep both versions of
  every buffer (it copies each donated parameter and momentum buffer, a measurable share of the
  CPU step: docs/performance.md). For the paper's SGD the same effect comes from scalars:
  momentum 1, weight decay 0 and a zeroed gradient leave v <- 1 v - lr (0 w + 0) = v exactly,
  and the params take the update only where finite; so the arrays keep the unguarded step's one
  pass. Other optimizers (AdamW) select the arrays."""
  keep_good = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  hyperparams = getattr(state.opt_state, 'hyperparams', {})
  if 'momentum' not in hyperparams or 'weight_decay' not in hyperparams:  # not paper_sgd
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state.replace(params=keep_good(new_state.params, state.params),
                             opt_state=keep_good(new_state.opt_state, state.opt_state),
                             batch_stats=keep_good(batch_stats, state.batch_stats))
  gated = dict(hyperparams, momentum=jnp.where(finite, hyperparams['momentum'], 1.0),
               weight_decay=jnp.where(finite, hyperparams['weight_decay'], 0.0))
  safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
  updates, opt_state = state.tx.update(safe_grads, state.opt_state._replace(hyperparams=gated),
                                       state.params)
  updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
  # The injected values as they were (the gated ones are this step's only), the counts kept.
  opt_state = opt_state._replace(
      hyperparams=keep_good(opt_state.hyperparams, hyperparams),
      count=jnp.where(finite, opt_state.count, state.opt_state.count),
      hyperparams_states=keep_good(opt_state.hyperparams_states,
                                   state.opt_state.hyperparams_states))
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state, batch_stats=keep_good(batch_stats, state.batch_stats))


def jit_train_step(state: TrainState, mesh: jax.sharding.Mesh,
                   augmentation: device_preprocessing.Augmentation | None = None,
                   nonfinite_guard: bool = True):
  """train_step jitted with the state and the batch placed by sharding.py's tables (params and
  optimizer state per PARAM_RULES, the batch split over 'data'); the state is donated, so the
  caller's old state must not be used after a step.

  With an augmentation (config.input.augment_on='device') the batch is the loader's uint8
  R x R images with each example's epoch and index, and the paper's augmentation runs inside
  the same jitted program, before the step (device_preprocessing.train_images). The backend's
  compiler options (compiler_options.py) apply. nonfinite_guard: see train_step.
  """
  state_shardings = sharding.tree_shardings(state, mesh)
  step_fn = functools.partial(train_step, nonfinite_guard=nonfinite_guard)
  if augmentation is None:
    return jax.jit(step_fn, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, None), donate_argnums=0,
                   compiler_options=compiler_options.for_mesh(mesh))

  def augment_and_step(state, batch, aug):
    batch = dict(batch)
    batch['image'] = device_preprocessing.train_images(aug, batch['image'], batch.pop('epoch'),
                                                       batch.pop('index'))
    return step_fn(state, batch)

  return sharding.BoundArgument.jit(
      augment_and_step, mesh, (state_shardings, sharding.batch_sharding(mesh)), augmentation,
      out_shardings=(state_shardings, None), donate_argnums=0,
      compiler_options=compiler_options.for_mesh(mesh))


def _check_workdir(workdir: str) -> None:
  """A local (or mounted) directory this process can write. A URL (gs://, s3://) is refused
  before anything is written: the run's lock (fcntl), metrics, config and statistics are written
  with local file calls (docs/reliability.md), which would create a directory named 'gs:'."""
  if '://' in workdir:
    raise UserError(f'workdir {workdir!r} is not a local path: this version writes its lock, '
                    'metrics and config with local file calls, not through a bucket. Use a '
                    'directory on a local disk or on a file system mounted on every host')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')  # one per process
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable: {e.strerror}') from None


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class _Progress:
  """The one-line progress report: step/total, loss, accuracy, lr, img/s, data wait, ETA."""

  def __init__(self, total_steps: int, start_step: int, batch_size: int):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.start = time.perf_counter()
    self.last_time = self.start
    self.last_step = start_step
    self.data_wait = 0.0
    self.excluded = 0.0  # evaluation and checkpoint time, kept out of img/s

  def restart(self, step: int) -> None:
    self.last_time, self.last_step, self.data_wait, self.excluded = (
        time.perf_counter(), step, 0.0, 0.0)

  def exclude(self, seconds: float) -> None:
    self.excluded += seconds

  def report(self, step: int, means: dict[str, float]) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self.last_time - self.excluded, 1e-9)
    steps = max(step - self.last_step, 1)
    rate = steps * self.batch_size / elapsed
    wait = self.data_wait / elapsed
    eta = (self.total_steps - step) * elapsed / steps
    _log(f'step {step}/{self.total_steps} | loss {means["loss"]:.4f} | '
          f'top1 {means["top1"]:.3f} top5 {means["top5"]:.3f} | lr {means["lr"]:.3g} | '
          f'{rate:.1f} img/s | data wait {100 * wait:.0f}% | ETA {_format_eta(eta)}',
          flush=True)
    self.restart(step)
    return {'img_per_sec': rate, 'data_wait_frac': wait}


@dataclasses.dataclass(frozen=True)
class RunLength:
  """How long the run is, and every how many steps it logs, evaluates and checkpoints."""
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, train_config, num_train: int) -> 'RunLength':
    """The batch is config_validation.check_batches's to refuse: here at least one step per
    epoch is taken as given."""
    batch_size = train_config.batch_size
    assert 0 < batch_size <= num_train, 'config_validation.check_batches runs first'
    steps_per_epoch = num_train // batch_size
    total = (train_config.num_steps if train_config.num_steps > 0
             else int(train_config.num_epochs * steps_per_epoch))
    return cls(steps_per_epoch=steps_per_epoch, total_steps=total,
               log_every=max(1, train_config.log_every_steps),
               eval_every=max(1, int(train_config.eval_every_epochs * steps_per_epoch)),
               checkpoint_every=max(1, train_config.checkpoint_every_steps))

  def due(self, step: int, every: int) -> bool:
    return step % every == 0 or step == self.total_steps


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
  """Means of the per-step metrics since the last report (one device->host transfer), over
  the finite steps only (skipped non-finite steps would make every mean NaN)."""
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *pending))
  good = stacked['nonfinite'] == 0
  if not good.any():
    return {k: float('nan') for k in stacked if k != 'nonfinite'}
  return {k: float(np.mean(v[good])) for k, v in stacked.items() if k != 'nonfinite'}


class _NonFinitePolicy:
  """Checks the steps' `nonfinite` flags (at log, eval and checkpoint steps: one transfer for
  all steps since the last check) and stops or counts them (config.train.on_nonfinite).

  train_step already keeps a non-finite update out of the state, so what is checkpointed is
  the last good state whatever happens here.
  """

  def __init__(self, mode: str, skipped: int = 0):
    self.mode, self.skipped = mode, skipped
    self.unchecked: list[tuple[int, jax.Array, jax.Array]] = []

  def add(self, step: int, metrics: dict) -> None:
    self.unchecked.append((step, metrics['nonfinite'], metrics['loss']))

  def check(self, last_checkpoint: int | None) -> None:
    if not self.unchecked:
      return
    flags, losses = jax.device_get(([f for _, f, _ in self.unchecked],
                                    [l for _, _, l in self.unchecked]))
    bad = [(step, loss) for (step, _, _), flag, loss in zip(self.unchecked, flags, losses)
           if flag]
    self.unchecked = []
    if not bad:
      return
    if self.mode == 'skip':
      self.skipped += len(bad)
      _log(f'skipped non-finite step(s) {", ".join(str(s) for s, _ in bad)} (loss '
           f'{bad[0][1]}); {self.skipped} skipped in this run so far', flush=True)
      return
    step, loss = bad[0]
    kept = (f'the last checkpoint (step {last_checkpoint}) is kept' if last_checkpoint
            else 'no checkpoint had been written yet')
    raise resilience.NonFiniteError(
        f'non-finite loss or gradient at step {step} (loss {loss}); training stopped, {kept} '
        'and no update from that step was applied. Lower config.optimizer.lr or check the '
        'data; config.train.on_nonfinite=skip skips such steps instead')


class AtChanceError(RunFailure):
  """The validation top-1 still at chance after chance_epochs, with on_chance='stop'."""


def _apply_plateau_rule(state: TrainState, plateau: optim.PlateauRule, last_eval: dict,
                        epoch: float, num_classes: int) -> tuple[TrainState, bool]:
  """The plateau rule on one evaluation; (state with the lr decayed or not, decayed)."""
  chance = optim.at_chance(last_eval['top1'], num_classes, last_eval['count'])
  decision = plateau.update(1.0 - last_eval['top1'], epoch, chance)
  if decision.factor == 1.0:
    return state, False
  old_lr = float(optim.learning_rate_level(state.opt_state))
  new_lr = old_lr * decision.factor
  _log(f'lr decay {plateau.decays} of {plateau.max_decays}: {decision.reason}; lr {old_lr:.3g} '
       f'-> {new_lr:.3g}', flush=True)
  return state.replace(opt_state=optim.with_learning_rate(state.opt_state, new_lr)), True


class _ChanceCheck:
  """After config.train.chance_epochs epochs, a validation top-1 still at chance is said once,
  in one line; on_chance='stop' then ends the run (its checkpoint saved first)."""

  def __init__(self, train_config, num_classes: int):
    self.epochs = train_config.get('chance_epochs', 0.0)
    self.stop = train_config.get('on_chance', 'warn') == 'stop'
    self.num_classes = num_classes
    self.said = False

  def check(self, last_eval: dict, epoch: float) -> str:
    """'' or the line that says the run is still at chance (once)."""
    if self.said or self.epochs <= 0 or epoch < self.epochs:
      return ''
    bound = optim.chance_top1_bound(self.num_classes, last_eval['count'])
    if last_eval['top1'] > bound:
      return ''
    self.said = True
    then = ('the run stops here (config.train.on_chance=stop)' if self.stop else
            'training goes on (config.train.on_chance=stop would end it)')
    return (f'the validation top-1 is still at chance after {epoch:.1f} epochs '
            f'({last_eval["top1"]:.4f} on {last_eval["count"]} images; chance 1/'
            f'{self.num_classes} = {1 / self.num_classes:.4f}, +3 sd = {bound:.4f}): check the '
            f'lr, the init and the data; {then}')


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains config's model in workdir, resuming from its latest checkpoint; returns a summary."""
  wall_start = time.perf_counter()
  # Every key's type and range, the mesh and the batches: one line, before the workdir exists.
  config_validation.validate(config, jax.devices(), jax.process_count())
  _check_workdir(workdir)
  resilience.check_on_nonfinite(config.train.on_nonfinite)
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0:  # one run per workdir; released at exit, kill -9 included
      stack.enter_context(resilience.WorkdirLock(workdir))
    mesh = sharding.create_mesh(config.mesh)
    model = model_lib.from_config(config.model)  # a bad switch: an error before the data pass
    config_changes.allowed_keys(config)  # an unknown key there is an error before anything runs
    # The data once: sources, class names, the statistics (the run's own cached file).
    dataset = dataset_lib.build(config, stats_dir=workdir, log=_log, run_dir=workdir)
    # The batches against the mesh and processes (as validate found them) and the data's size.
    config_validation.check_batches(config, mesh.shape['data'], jax.process_count(),
                                    dataset.num_train)
    run = RunLength.from_config(config.train, dataset.num_train)
    with jax.set_mesh(mesh):  # the model's sharding annotations read the mesh from context
      return _train(config, workdir, dataset, model, run, mesh, wall_start)


def _check_same_data(saved: dict, now: dict, step: int) -> None:
  differ = [k for k in now if k in saved and saved[k] != now[k]]
  if differ:
    key = differ[0]
    what = {'statistics': 'the mean image / RGB statistics'}.get(key, key)
    raise UserError(
        f'the data this run reads is not the data of the checkpoint at step {step}: {what} '
        f'differ ({_short(saved[key])} -> {_short(now[key])}); check config.dataset.folder, '
        'config.dataset.data_dir and config.input.stats_file, or use another --workdir')


def _short(value) -> str:
  text = str(value)
  return text if len(text) <= 60 else text[:57] + '...'


def _abstract_state_like(state: TrainState, tx: optax.GradientTransformation,
                         mesh: jax.sharding.Mesh) -> TrainState:
  """state's shapes and shardings, with tx's optimizer state (another schedule's structure)."""
  abstract = jax.eval_shape(lambda s: s.replace(tx=tx, opt_state=tx.init(s.params)), state)
  shardings = sharding.tree_shardings(abstract, mesh)
  return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                      abstract, shardings)


def _resume(config, state: TrainState, checkpoints: checkpointing.Checkpoints, train_iter,
            run: RunLength, mesh: jax.sharding.Mesh,
            dataset: dataset_lib.Dataset) -> tuple[int, TrainState, dict] | None:
  """(step, state, meta) from the latest checkpoint, with this config's changes applied
  (config_changes.py: class a noted, b applied to the optimizer state, c refused); None when
  there is no checkpoint. train_iter is set to the saved data position in place."""
  changes: config_changes.Changes | None = None

  def like_state_for(step: int, saved_config: dict | None):
    nonlocal changes
    if saved_config is None:
      _log(f'note: the checkpoint at step {step} stores no config (written by an earlier '
           'version): settings are not compared, the optimizer state is used as saved',
           flush=True)
      return state
    changes = config_changes.compare(saved_config, config, step)  # UserError: refused
    # Restored into the saved optimizer's structure (another schedule's may differ).
    saved_tx = optim.create_optimizer(ml_collections.ConfigDict(saved_config['optimizer']),
                                      run.steps_per_epoch, run.total_steps,
                                      config.train.batch_size)
    saved_like = _abstract_state_like(state, saved_tx, mesh)
    return saved_like if (jax.tree.structure(saved_like.opt_state) !=
                          jax.tree.structure(state.opt_state)) else state

  restored = checkpoints.restore_latest(
      like_state_for, train_iter, fallback_position=lambda step: step * config.train.batch_size)
  if not restored:
    return None
  _check_same_data(restored.meta['data_identity'], dataset.identity, restored.step)
  opt_state = restored.state.opt_state
  if jax.tree.structure(opt_state) != jax.tree.structure(state.opt_state):
    opt_state = optim.transplant(opt_state, state.opt_state)
  if changes:
    opt_state = optim.with_hyperparams(opt_state, optim.resumed_hyperparams(
        config.optimizer, set(changes.optimizer), config.train.batch_size))
    for line in changes.lines():
      _log(line, flush=True)
  if restored.data_note:
    _log(f'note: {restored.data_note}', flush=True)
  else:
    position = train_iter.get_state()['global_next_index']
    _log(f'data: the saved position restored (epoch {position // dataset.num_train + 1}, '
         f'example {position % dataset.num_train} of {dataset.num_train} in its order)', flush=True)
  _log(f'resumed from {checkpoints.directory} at step {restored.step}', flush=True)
  # The restored arrays in this run's TrainState (its tx and apply_fn, not the saved ones).
  state = state.replace(step=restored.state.step, params=restored.state.params,
                        opt_state=opt_state, rng=restored.state.rng,
                        batch_stats=restored.state.batch_stats)
  return restored.step, state, restored.meta


def _train(config, workdir: str, dataset: dataset_lib.Dataset, model: alexnet.AlexNet,
           run: RunLength, mesh: jax.sharding.Mesh, wall_start: float) -> dict[str, Any]:
  tx = optim.create_optimizer(config.optimizer, run.steps_per_epoch, run.total_steps,
                              config.train.batch_size)
  opt = config.optimizer
  plateau = optim.PlateauRule(  # no decay during a warm-up either
      factor=opt.plateau_factor, patience=opt.plateau_patience,
      threshold=opt.plateau_threshold, max_decays=opt.plateau_max_decays,
      min_epochs=max(opt.plateau_min_epochs, opt.warmup_epochs))
  chance_check = _ChanceCheck(config.train, dataset.num_classes)
  # Where the augmentation runs, decided once: both loaders and both jitted steps follow it.
  on_device = augment_on.on_device(config)
  train_iter = iter(pipeline.create_train_loader(config, dataset, seed=config.seed,
                                                 on_device=on_device))
  eval_loader = pipeline.create_eval_loader(config, dataset, ten_crop=config.eval.ten_crop,
                                            on_device=on_device)
  unreadable = pipeline.UnreadableImages(config.input.max_unreadable_frac)

  state = create_train_state(model, tx, jax.random.PRNGKey(config.seed),
                             config.input.image_size, mesh)
  checkpoints = checkpointing.Checkpoints(workdir, config.train.keep_checkpoints)
  last_eval: dict[str, float] = {}
  skipped = skipped_images = 0
  start_step = 0
  # The time that made the state, summed over the sittings: each sitting's up to the checkpoint
  # the next one resumed from (None: a checkpoint from before this was kept).
  time_before: float | None = 0.0
  sittings = 1
  resumed = _resume(config, state, checkpoints, train_iter, run, mesh, dataset)
  if resumed:
    start_step, state, meta = resumed
    time_before = meta.get('wall_time_s')
    sittings = meta.get('sittings', 1) + 1
    plateau = plateau.with_counters_of(meta['plateau'])  # the config's settings, saved counts
    chance_check.said = meta['chance_said']
    last_eval = meta['last_eval']
    skipped = meta['nonfinite_steps']
    skipped_images = meta['skipped_images']
  if jax.process_index() == 0:
    # What a killed run logged after its last checkpoint is logged again from there.
    metric_logging.drop_after(workdir, start_step)

  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  net_name = type(model).__name__  # AlexNet, or cuda-convnet's CIFAR-10 net (model.arch)
  _log(f'{net_name}: {n_params:,} parameters | dataset {config.dataset.name}: '
        f'{dataset.num_train} train / {dataset.num_eval} eval images, {dataset.num_classes} '
        f'classes | batch {config.train.batch_size}, {run.steps_per_epoch} steps/epoch, '
        f'{run.total_steps} steps', flush=True)
  _log(f'mesh data={mesh.shape["data"]} x model={mesh.shape["model"]} over '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s) in '
        f'{jax.process_count()} process(es) | batch {config.train.batch_size} global, '
        f'{config.train.batch_size // mesh.shape["data"]} per data shard | base lr '
        f'{optim.base_learning_rate(config.optimizer, config.train.batch_size):g} '
        f'(lr_scaling={config.optimizer.lr_scaling})', flush=True)
  _log(pipeline.loader_size(config.input).describe(), flush=True)

  if jax.process_index() == 0:  # what the eval/predict/figure tools rebuild the model from
    metric_logging.write_file(os.path.join(workdir, 'config.json'), config.to_json(indent=2))
    dataset_lib.save_class_names(dataset, workdir)
  writer = metric_logging.create_writer(workdir, jax.process_index() == 0)
  augmentation = device_preprocessing.of_run(config, dataset.preprocess, on_device)
  jitted_train_step = jit_train_step(state, mesh, augmentation)
  jitted_eval_step = evaluation.jit_eval_step(state, mesh, augmentation, config.eval.ten_crop)
  progress = _Progress(run.total_steps, start_step, config.train.batch_size)
  nonfinite = _NonFinitePolicy(config.train.on_nonfinite, skipped)
  pending: list[dict] = []
  step = start_step
  last_saved = start_step or None
  stop = resilience.StopSignals()
  stop_at_chance = ''

  def save_checkpoint():
    nonlocal last_saved
    nonfinite.check(last_saved)  # never checkpoint past an unchecked non-finite step
    checkpoints.save(step, state, train_iter,
                     {'plateau': plateau.to_dict(), 'last_eval': last_eval,
                      'nonfinite_steps': nonfinite.skipped, 'skipped_images': skipped_images,
                      # said and gone on: not again; a stop says it again at the next eval
                      'chance_said': chance_check.said and not chance_check.stop,
                      'data_identity': dataset.identity, 'sittings': sittings,
                      'wall_time_s': (None if time_before is None else
                                      time_before + time.perf_counter() - wall_start)},
                     config.to_dict())
    last_saved = step

  # finally: a save in flight completes even when the loop raises (non-finite step, bad data).
  with stop, contextlib.closing(checkpoints):
    while step < run.total_steps:
      t0 = time.perf_counter()
      batch = next(train_iter)
      progress.data_wait += time.perf_counter() - t0
      skipped_images += int(np.sum(~batch['valid']))  # this process's unreadable images
      unreadable.add(batch['valid'])
      state, metrics = jitted_train_step(state, sharding.global_batch(batch, mesh))
      step += 1
      pending.append(metrics)
      nonfinite.add(step, metrics)
      if step == start_step + 1:  # keep compilation out of the first img/s figure
        jax.block_until_ready(metrics)
        _log(f'first step (compilation included) took {time.perf_counter() - t0:.1f} s',
             flush=True)
        progress.restart(step)

      if run.due(step, run.log_every):
        nonfinite.check(last_saved)
        unreadable.check(step)  # RunFailure past input.max_unreadable_frac
        means, pending = _mean_metrics(pending), []
        means.update(progress.report(step, means))
        means['nonfinite_steps'] = nonfinite.skipped
        means['skipped_images'] = skipped_images
        writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})

      t0 = time.perf_counter()
      if run.due(step, run.eval_every):
        nonfinite.check(last_saved)
        last_eval = {**evaluation.evaluate(state, eval_loader, jitted_eval_step, mesh),
                     'step': step}
        _log(f'eval at step {step} (epoch {step / run.steps_per_epoch:.1f}): '
             f'top1 {last_eval["top1"]:.4f} top5 {last_eval["top5"]:.4f} '
             f'loss {last_eval["loss"]:.4f} on {last_eval["count"]} images', flush=True)
        unreadable.check_eval(last_eval, step)
        epoch = step / run.steps_per_epoch
        scalars = {f'eval/{k}': last_eval[k] for k in ('loss', 'top1', 'top5')}
        scalars['eval/at_chance'] = float(optim.at_chance(last_eval['top1'],
                                                          dataset.num_classes,
                                                          last_eval['count']))
        if config.optimizer.schedule == 'plateau':
          state, decayed = _apply_plateau_rule(state, plateau, last_eval, epoch,
                                               dataset.num_classes)
          scalars.update({'eval/lr_decayed': float(decayed),
                          'eval/lr_decays': plateau.decays,
                          'eval/evals_since_best': plateau.evals_since_best,
                          'eval/lr_level': float(optim.learning_rate_level(state.opt_state))})
        writer.write_scalars(step, scalars)
        chance_line = chance_check.check(last_eval, epoch)
        if chance_line and chance_check.stop:
          stop_at_chance = chance_line  # raised after the checkpoint below
        elif chance_line:
          _log(f'warning: {chance_line}', flush=True)
      if jax.process_count() > 1 and run.due(step, run.log_every):
        stop.agree()  # every process stops at the same step, or none does
      if (run.due(step, run.checkpoint_every) or
          ((stop.received or stop_at_chance) and last_saved != step)):
        save_checkpoint()
      progress.exclude(time.perf_counter() - t0)
      if stop_at_chance:
        raise AtChanceError(f'{stop_at_chance}; checkpoint saved at step {step} (resuming '
                            'with config.train.on_chance=warn goes on past it)')
      if stop.received and step < run.total_steps:
        break

  writer.close()
  pipeline.close_iterator(train_iter)
  pipeline.close_iterator(eval_loader)
  sitting_s = time.perf_counter() - wall_start
  # wall_time_s: the run's, over every sitting (this one's alone where an earlier one's time
  # was not kept: wall_time_complete False); sitting_wall_time_s: this sitting's.
  summary = {'final_step': step, 'total_steps': run.total_steps,
             'wall_time_s': sitting_s + (time_before or 0.0),
             'wall_time_complete': time_before is not None, 'sittings': sittings,
             'sitting_wall_time_s': sitting_s, 'eval': last_eval,
             'nonfinite_steps': nonfinite.skipped, 'skipped_images': skipped_images}
  if skipped_images:
    _log(f'{skipped_images} training image presentation(s) were skipped as unreadable (see '
         'the warnings above)', flush=True)
  if step < run.total_steps:  # stopped by a signal: the checkpoint is saved and complete
    _log(f'stopped by {stop.name} at step {step}/{run.total_steps}: checkpoint saved in '
         f'{checkpoints.directory}; run the same command again to resume', flush=True)
    return {**summary, 'stopped_by': stop.name}
  if jax.process_index() == 0:
    metric_logging.write_file(os.path.join(workdir, 'summary.json'),
                              json.dumps(summary, indent=2))
  if last_eval:
    _log(f'done: step {step}/{run.total_steps}, val top1 {last_eval["top1"]:.4f} '
          f'top5 {last_eval["top5"]:.4f}, {summary["wall_time_s"]:.0f} s', flush=True)
  return summary
