"""The paper's optimizer and learning-rate rules, as Optax transformations.

Section 5 of the paper:  v <- 0.9 v - 0.0005 * lr * w - lr * grad;   w <- w + v.

`optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum))` keeps the momentum of the
*unscaled* gradients and multiplies the whole trace by the *current* lr: the update is
-lr_t (0.9 m + g_t), i.e. a change of lr also rescales all the momentum accumulated under the
old lr. The paper's v accumulates already-scaled steps (-lr_s * g_s for s <= t), so after a
decay the old velocity keeps its old size and fades out at 0.9 per step. The two agree only
while lr is constant; at each of the paper's three /10 decays optax's form would shrink the
velocity ten-fold at once. We scale by lr *before* the momentum trace, which is the paper's
update exactly, at every step.
"""
import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import optax

from alexnet_jax.errors import UserError

SCHEDULES = ('plateau', 'step', 'cosine', 'constant')


@dataclasses.dataclass(frozen=True)
class Multipliers:
  """Per-parameter factors of the lr and the weight decay, as Caffe's lr_mult and decay_mult:
  a parameter p of layer L takes lr * lr_mult(p) and weight_decay * decay_mult(p). Biases
  (every leaf named 'bias') take bias_lr and bias_decay; other leaves the factor `decay` names
  for their layer (the first part of their path, e.g. 'conv1'), else 1, and lr factor 1.

  cuda-convnet's recipe needs them (layer-params-conv-local-11pct.cfg at 3878e8f): epsB = 2 epsW,
  no weight decay on biases (include/weights.cuh line 157: only weights have wc), and wc per
  layer (0 on the convolutions). The paper's update has none: all factors 1 (DEFAULT)."""
  bias_lr: float = 1.0
  bias_decay: float = 1.0
  decay: tuple[tuple[str, float], ...] = ()  # (layer, factor), in the config's order

  def is_default(self) -> bool:
    return self.bias_lr == 1.0 and self.bias_decay == 1.0 and all(f == 1.0 for _, f in self.decay)

  def factors(self, path) -> tuple[float, float]:
    """(lr factor, weight decay factor) of the parameter at a pytree key path."""
    names = [str(getattr(key, 'key', getattr(key, 'name', key))) for key in path]
    if names and names[-1] == 'bias':
      return self.bias_lr, self.bias_decay
    return 1.0, dict(self.decay).get(names[0] if names else '', 1.0)

  def check_layers(self, params) -> None:
    """A layer named in `decay` must be one of the net's (a typo would decay nothing)."""
    layers = set(params) if isinstance(params, dict) else set()
    unknown = [name for name, _ in self.decay if name not in layers]
    if unknown:
      raise UserError(f'config.optimizer.decay_mults names {", ".join(unknown)}, not a layer '
                      f'of this net ({", ".join(sorted(layers))})')


DEFAULT_MULTIPLIERS = Multipliers()
_DECAY_ITEM = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^,=]+?)\s*$')


def parse_decay_mults(text: str) -> tuple[tuple[str, float], ...]:
  """'conv1=0,conv2=0' -> (('conv1', 0.0), ('conv2', 0.0)); UserError on anything else."""
  items = []
  for part in (p for p in text.split(',') if p.strip()):
    match = _DECAY_ITEM.match(part)
    try:
      factor = float(match.group(2)) if match else math.nan
    except ValueError:
      factor = math.nan
    if not match or not math.isfinite(factor) or factor < 0:
      raise UserError(f'config.optimizer.decay_mults={text!r}: {part.strip()!r} is not '
                      'LAYER=FACTOR with a factor >= 0 (e.g. conv1=0,fc10=2.5)')
    items.append((match.group(1), factor))
  names = [name for name, _ in items]
  if len(set(names)) != len(names):
    raise UserError(f'config.optimizer.decay_mults={text!r} names a layer twice')
  return tuple(items)


def multipliers(opt_config) -> Multipliers:
  """config.optimizer's bias_lr_mult, bias_decay_mult and decay_mults (keys a config stored
  before them lacks read as 1, no factor)."""
  return Multipliers(bias_lr=float(opt_config.get('bias_lr_mult', 1.0)),
                     bias_decay=float(opt_config.get('bias_decay_mult', 1.0)),
                     decay=parse_decay_mults(opt_config.get('decay_mults', '')))


def _scaled_decay_and_lr(learning_rate, weight_decay,
                         mults: Multipliers) -> optax.GradientTransformation:
  """-lr * lr_mult * (g + weight_decay * decay_mult * w), per parameter."""

  def update_fn(updates, state, params):
    mults.check_layers(params)

    def one(path, g, w):
      lr_factor, decay_factor = mults.factors(path)
      return -(learning_rate * lr_factor) * (g + (weight_decay * decay_factor) * w)

    return jax.tree_util.tree_map_with_path(one, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def paper_sgd(learning_rate, momentum: float = 0.9, weight_decay: float = 5e-4,
              multipliers: Multipliers | None = None) -> optax.GradientTransformation:
  """v <- momentum * v - lr * (weight_decay * w + grad); the update is v (w <- w + v).

  With multipliers (not all 1): v <- momentum * v - lr * lr_mult * (weight_decay * decay_mult *
  w + grad) per parameter, cuda-convnet's inc <- mom * inc - wc * eps * w - eps * grad with
  eps = lr * lr_mult and wc = weight_decay * decay_mult (include/weights.cuh lines 150-160).
  Without them the chain is the paper's, unchanged (same ops, same state)."""
  if multipliers is None or multipliers.is_default():
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),  # -lr * (g + wd * w)
        optax.trace(decay=momentum),  # v = momentum * v + that
    )
  # The same chain's state (three parts, the first two empty), so a checkpoint's structure does
  # not depend on the factors.
  return optax.chain(
      optax.identity(),
      _scaled_decay_and_lr(learning_rate, weight_decay, multipliers),
      optax.trace(decay=momentum),
  )


def adamw(learning_rate, weight_decay: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, weight_decay=weight_decay)


# With a warm-up, one more hyperparameter, warmup: a factor in (0, 1], injected as a schedule
# of the step, that scales the lr (for paper_sgd before the momentum trace, as a smaller lr
# would, so the velocity keeps the paper's form). Separate functions, not a default argument:
# inject_hyperparams injects defaults too, and a run without a warm-up must keep the state's
# structure of checkpoints written before warm-ups existed.
def paper_sgd_with_warmup(learning_rate, warmup, momentum: float = 0.9,
                          weight_decay: float = 5e-4,
                          multipliers: Multipliers | None = None) -> optax.GradientTransformation:
  return paper_sgd(learning_rate * warmup, momentum, weight_decay, multipliers)


def adamw_with_warmup(learning_rate, warmup, weight_decay: float) -> optax.GradientTransformation:
  return adamw(learning_rate * warmup, weight_decay)


PAPER_BATCH = 128


def base_learning_rate(opt_config, global_batch: int = PAPER_BATCH) -> float:
  """config.optimizer.lr, scaled linearly with the global batch when lr_scaling='linear'."""
  scaling = opt_config.get('lr_scaling', 'none')
  if scaling == 'none':
    return opt_config.lr
  if scaling == 'linear':
    return opt_config.lr * global_batch / PAPER_BATCH
  raise UserError(f"config.optimizer.lr_scaling={scaling!r}; choose one of none, linear")


def learning_rate_schedule(opt_config, steps_per_epoch: int, total_steps: int,
                           global_batch: int = PAPER_BATCH):
  """A float for 'plateau' and 'constant' (the train loop changes it), else a schedule. A
  warm-up is in the cosine schedule itself, and a separate factor under the others
  (warmup_factor)."""
  name = opt_config.schedule
  lr = base_learning_rate(opt_config, global_batch)
  if name in ('plateau', 'constant'):
    return lr
  if name == 'step':
    at_epochs = parse_step_at_epochs(opt_config.get('step_at_epochs', ''))
    if at_epochs:
      # Divide by 10 at each of these epochs (cuda-convnet's lr, lr/10, lr/100 stages).
      return optax.piecewise_constant_schedule(
          lr, {max(1, int(epoch * steps_per_epoch)): 0.1 for epoch in at_epochs})
    # Divide by 10 every step_epochs epochs.
    every = max(1, int(opt_config.step_epochs * steps_per_epoch))
    return optax.exponential_decay(lr, transition_steps=every, decay_rate=0.1, staircase=True)
  warmup = warmup_steps(opt_config, steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup,
                                            max(total_steps, warmup + 1))


def parse_step_at_epochs(text: str) -> tuple[float, ...]:
  """'30,35' -> (30.0, 35.0): increasing epochs > 0; UserError on anything else."""
  try:
    epochs = tuple(float(p) for p in text.split(',') if p.strip())
  except ValueError:
    epochs = (math.nan,)
  if (not all(math.isfinite(e) and e > 0 for e in epochs)
      or any(b <= a for a, b in zip(epochs, epochs[1:]))):
    raise UserError(f'config.optimizer.step_at_epochs={text!r} must be increasing epochs > 0, '
                    "comma-separated (e.g. '30,35'), or '' for every step_epochs")
  return epochs


def warmup_steps(opt_config, steps_per_epoch: int) -> int:
  return int(opt_config.get('warmup_epochs', 0.0) * steps_per_epoch)


def warmup_factor(num_steps: int):
  """The warm-up's factor of the lr at update `count` (0-based): (count + 1) / num_steps, then
  1; the first update already moves (a factor 0 would waste it)."""
  return lambda count: jnp.minimum(1.0, (count + 1) / num_steps)


def _check_warmup(opt_config, steps_per_epoch: int, total_steps: int) -> int:
  """The warm-up's length in steps; one error line where it cannot apply."""
  epochs = opt_config.get('warmup_epochs', 0.0)
  if epochs < 0:
    raise UserError(f'config.optimizer.warmup_epochs={epochs} must be >= 0')
  steps = warmup_steps(opt_config, steps_per_epoch)
  if epochs > 0 and steps == 0:
    raise UserError(f'config.optimizer.warmup_epochs={epochs} is less than one step '
                    f'({steps_per_epoch} steps per epoch); use 0 for no warm-up')
  if steps >= total_steps > 0:
    raise UserError(f'config.optimizer.warmup_epochs={epochs} ({steps} steps) is as long as '
                    f'the run ({total_steps} steps): the lr would never reach its value')
  return steps


def create_optimizer(opt_config, steps_per_epoch: int, total_steps: int,
                     global_batch: int = PAPER_BATCH) -> optax.GradientTransformation:
  """The configured optimizer; its learning rate lives in opt_state.hyperparams.

  A warm-up under 'plateau', 'constant' or 'step' is an injected factor 'warmup' (a schedule
  of the step) that multiplies 'learning_rate', which stays the rule's level: the plateau rule
  changes the level, the warm-up ramps it. Without a warm-up the state has no such entry, so
  checkpoints written before warm-ups existed keep their structure."""
  if opt_config.lr <= 0:
    raise UserError(f'config.optimizer.lr={opt_config.lr} must be > 0')
  if opt_config.weight_decay < 0:
    raise UserError(f'config.optimizer.weight_decay={opt_config.weight_decay} must be >= 0')
  if opt_config.schedule not in SCHEDULES:
    raise UserError(f'config.optimizer.schedule={opt_config.schedule!r}; choose one of '
                    f'{", ".join(SCHEDULES)}')
  warmup = _check_warmup(opt_config, steps_per_epoch, total_steps)
  schedule = learning_rate_schedule(opt_config, steps_per_epoch, total_steps, global_batch)
  optimizers = {'sgd': (paper_sgd, paper_sgd_with_warmup), 'adamw': (adamw, adamw_with_warmup)}
  if opt_config.name not in optimizers:
    raise UserError(f'config.optimizer.name={opt_config.name!r}; choose one of sgd, adamw')
  optimizer, optimizer_with_warmup = optimizers[opt_config.name]
  extra = {'momentum': opt_config.momentum} if opt_config.name == 'sgd' else {}
  mults = multipliers(opt_config)
  if not mults.is_default():
    if opt_config.name != 'sgd':
      raise UserError('config.optimizer.bias_lr_mult, bias_decay_mult and decay_mults apply to '
                      f'optimizer.name=sgd only, not {opt_config.name!r}: leave them at 1 and '
                      "''")
    extra['multipliers'] = mults  # not a number: inject_hyperparams passes it on as it is
  if warmup and opt_config.schedule != 'cosine':  # cosine's schedule has its own warm-up
    optimizer, extra['warmup'] = optimizer_with_warmup, warmup_factor(warmup)
  return optax.inject_hyperparams(optimizer)(
      learning_rate=schedule, weight_decay=opt_config.weight_decay, **extra)


def current_learning_rate(opt_state) -> float:
  """The lr the last update used: the level times the warm-up's factor, if any."""
  hyperparams = opt_state.hyperparams
  return hyperparams['learning_rate'] * hyperparams.get('warmup', 1.0)


def learning_rate_level(opt_state) -> float:
  """The lr the plateau rule sets (and decays), before any warm-up factor."""
  return opt_state.hyperparams['learning_rate']


def with_learning_rate(opt_state, learning_rate: float):
  """opt_state with its injected learning rate level replaced (the plateau rule's decay)."""
  return with_hyperparams(opt_state, {'learning_rate': learning_rate})


def with_hyperparams(opt_state, values: dict[str, float]):
  """opt_state with injected hyperparameters replaced, through optax.inject_hyperparams' own
  state (opt_state.hyperparams): a restored state otherwise keeps the values it was saved with,
  whatever the optimizer was built with."""
  hyperparams = dict(opt_state.hyperparams)
  for name, value in values.items():
    hyperparams[name] = hyperparams[name] * 0 + value  # keeps dtype, shape and sharding
  return opt_state._replace(hyperparams=hyperparams)


def resumed_hyperparams(opt_config, changed: set[str],
                        global_batch: int = PAPER_BATCH) -> dict[str, float]:
  """The injected values a resume with changed optimizer keys must set, by config.optimizer.

  The learning rate is set only where it is a number in the state (plateau, constant) and a key
  that defines it changed: otherwise the state's own lr stands (the plateau rule's decays).
  Under a schedule the lr is recomputed from the step count at every update anyway."""
  values = {}
  lr_keys = {'optimizer.lr', 'optimizer.lr_scaling', 'optimizer.schedule'}
  if opt_config.schedule in ('plateau', 'constant') and changed & lr_keys:
    values['learning_rate'] = base_learning_rate(opt_config, global_batch)
  if 'optimizer.weight_decay' in changed:
    values['weight_decay'] = opt_config.weight_decay
  if 'optimizer.momentum' in changed and opt_config.name == 'sgd':
    values['momentum'] = opt_config.momentum
  return values


def transplant(restored, template):
  """A restored opt_state moved into the structure of another schedule's (a number lr and a
  schedule's lr are different inject_hyperparams states; a warm-up adds a factor): the step
  count and the inner state (momentum) come from restored, a schedule's own step count is the
  restored one, and a value both hold (the plateau rule's decayed lr) is the restored one."""
  schedule_states = jax.tree.map(lambda leaf: leaf * 0 + restored.count,
                                 template.hyperparams_states)
  hyperparams = dict(template.hyperparams)
  numbers = lambda state: set(state.hyperparams) - set(state.hyperparams_states)
  for name in numbers(restored) & numbers(template):  # a schedule's value is recomputed
    hyperparams[name] = hyperparams[name] * 0 + restored.hyperparams[name]
  return template._replace(count=restored.count, inner_state=restored.inner_state,
                           hyperparams=hyperparams, hyperparams_states=schedule_states)


def chance_top1_bound(num_classes: int, count: int, sigmas: float = 3.0) -> float:
  """The top-1 below which an evaluation of `count` images is at chance: 1/classes plus
  `sigmas` binomial standard deviations (ImageNet's 50,000 images: 0.1 % + 0.04 %; 240 images
  of 10 classes: 10 % + 5.8 %)."""
  p = 1.0 / max(num_classes, 1)
  return p + sigmas * math.sqrt(p * (1 - p) / max(count, 1))


def at_chance(top1: float, num_classes: int, count: int) -> bool:
  return top1 <= chance_top1_bound(num_classes, count)


@dataclasses.dataclass
class Decision:
  """What the plateau rule made of one evaluation: the factor for the lr (1 or the rule's)
  and, for a decay, why in words (the errors it compared)."""
  factor: float = 1.0
  reason: str = ''


@dataclasses.dataclass
class PlateauRule:
  """Section 5: 'divide the learning rate by 10 when the validation error rate stopped
  improving with the current learning rate', three times in all, as a careful person would
  apply it:

  - "stopped improving": the last `patience` evaluations brought no error at least
    `threshold` (relative) below the best before them (a smaller gain is noise, not progress);
  - never while the validation top-1 is at chance (the paper's init sits there for thousands of
    steps; a flat 99.9 % is not a plateau) nor before `min_epochs`;
  - at most `max_decays` decays; after one, the patience window starts afresh.

  Host-side state, saved with each checkpoint (to_dict / from_dict; a checkpoint written
  before the window and the chance test existed restores its counters).
  """
  factor: float = 0.1
  patience: int = 5  # evaluations without a significant new best that make a plateau
  threshold: float = 0.01  # relative: a new best must be below best * (1 - threshold)
  min_epochs: float = 0.0
  max_decays: int = 3
  best_error: float = math.inf
  best_epoch: float = 0.0
  evals_since_best: int = 0
  decays: int = 0
  window: list = dataclasses.field(default_factory=list)  # the errors since the best

  COUNTERS = ('best_error', 'best_epoch', 'evals_since_best', 'decays', 'window')

  def update(self, val_error: float, epoch: float = math.inf,
             chance: bool = False) -> Decision:
    """Records one validation error at `epoch`; chance: the evaluation was at chance."""
    if chance:  # the rule starts when the run leaves chance
      return Decision()
    if val_error < self.best_error * (1.0 - self.threshold):
      self.best_error, self.best_epoch = val_error, epoch
      self.evals_since_best, self.window = 0, []
      return Decision()
    self.evals_since_best += 1
    self.window = (self.window + [val_error])[-self.patience:]
    if (self.evals_since_best < self.patience or epoch < self.min_epochs
        or self.decays >= self.max_decays):
      return Decision()
    self.decays += 1
    errors = ', '.join(f'{e:.4f}' for e in self.window)
    reason = (f'validation error {val_error:.4f} at epoch {epoch:.1f}: no error '
              f'{100 * self.threshold:g} % below the best {self.best_error:.4f} (epoch '
              f'{self.best_epoch:.1f}) in the last {self.evals_since_best} evaluations '
              f'({errors})')
    self.evals_since_best, self.window = 0, []
    return Decision(self.factor, reason)

  def with_counters_of(self, saved: dict) -> 'PlateauRule':
    """This rule's settings (the config's) with a saved rule's counters: a resume that changes
    the factor, patience or number of decays carries the decays already made on."""
    counters = PlateauRule.from_dict(saved)
    return dataclasses.replace(self, **{k: getattr(counters, k) for k in self.COUNTERS})

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['best_error'] = None if math.isinf(self.best_error) else self.best_error
    return d

  @classmethod
  def from_dict(cls, d: dict) -> 'PlateauRule':
    """A saved rule; keys of another version are left out, missing ones take their defaults."""
    fields = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in fields}
    d['best_error'] = math.inf if d.get('best_error') is None else d['best_error']
    return cls(**d)
