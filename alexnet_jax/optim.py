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

import jax
import optax

from alexnet_jax.errors import UserError

SCHEDULES = ('plateau', 'step', 'cosine', 'constant')


def paper_sgd(learning_rate, momentum: float = 0.9,
              weight_decay: float = 5e-4) -> optax.GradientTransformation:
  """v <- momentum * v - lr * (weight_decay * w + grad); the update is v (w <- w + v)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),  # -lr * (g + wd * w)
      optax.trace(decay=momentum),  # v = momentum * v + that
  )


def adamw(learning_rate, weight_decay: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, weight_decay=weight_decay)


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
  """A float for 'plateau' and 'constant' (the train loop changes it), else a schedule."""
  name = opt_config.schedule
  lr = base_learning_rate(opt_config, global_batch)
  if name in ('plateau', 'constant'):
    return lr
  if name == 'step':
    # Divide by 10 every step_epochs epochs.
    every = max(1, int(opt_config.step_epochs * steps_per_epoch))
    return optax.exponential_decay(lr, transition_steps=every, decay_rate=0.1, staircase=True)
  warmup = int(opt_config.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup,
                                            max(total_steps, warmup + 1))


def create_optimizer(opt_config, steps_per_epoch: int, total_steps: int,
                     global_batch: int = PAPER_BATCH) -> optax.GradientTransformation:
  """The configured optimizer; its learning rate lives in opt_state.hyperparams."""
  if opt_config.lr <= 0:
    raise UserError(f'config.optimizer.lr={opt_config.lr} must be > 0')
  if opt_config.weight_decay < 0:
    raise UserError(f'config.optimizer.weight_decay={opt_config.weight_decay} must be >= 0')
  if opt_config.schedule not in SCHEDULES:
    raise UserError(f'config.optimizer.schedule={opt_config.schedule!r}; choose one of '
                    f'{", ".join(SCHEDULES)}')
  schedule = learning_rate_schedule(opt_config, steps_per_epoch, total_steps, global_batch)
  if opt_config.name == 'sgd':
    return optax.inject_hyperparams(paper_sgd)(
        learning_rate=schedule, momentum=opt_config.momentum,
        weight_decay=opt_config.weight_decay)
  if opt_config.name == 'adamw':
    return optax.inject_hyperparams(adamw)(
        learning_rate=schedule, weight_decay=opt_config.weight_decay)
  raise UserError(f'config.optimizer.name={opt_config.name!r}; choose one of sgd, adamw')


def current_learning_rate(opt_state) -> float:
  return opt_state.hyperparams['learning_rate']


def with_learning_rate(opt_state, learning_rate: float):
  """opt_state with its injected learning rate replaced (the plateau rule's decay)."""
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
  schedule's lr are different inject_hyperparams states): the step count and the inner state
  (momentum) come from restored, a schedule's own step count is the restored one."""
  schedule_states = jax.tree.map(lambda leaf: leaf * 0 + restored.count,
                                 template.hyperparams_states)
  return template._replace(count=restored.count, inner_state=restored.inner_state,
                           hyperparams_states=schedule_states)


@dataclasses.dataclass
class PlateauRule:
  """Section 5: 'divide the learning rate by 10 when the validation error rate stopped
  improving with the current learning rate', three times in all.

  Host-side state, saved with each checkpoint (to_dict / from_dict).
  """
  factor: float = 0.1
  patience: int = 1  # evaluations without improvement that count as "stopped improving"
  max_decays: int = 3
  best_error: float = math.inf
  evals_since_best: int = 0
  decays: int = 0

  def update(self, val_error: float) -> float:
    """Records one validation error; returns the factor to multiply the lr by (1 or factor)."""
    if val_error < self.best_error:
      self.best_error = val_error
      self.evals_since_best = 0
      return 1.0
    self.evals_since_best += 1
    if self.evals_since_best >= self.patience and self.decays < self.max_decays:
      self.decays += 1
      self.evals_since_best = 0
      return self.factor
    return 1.0

  def with_counters_of(self, saved: dict) -> 'PlateauRule':
    """This rule's settings (the config's) with a saved rule's counters: a resume that changes
    the factor, patience or number of decays carries the decays already made on."""
    counters = PlateauRule.from_dict(saved)
    return dataclasses.replace(self, best_error=counters.best_error,
                               evals_since_best=counters.evals_since_best,
                               decays=counters.decays)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['best_error'] = None if math.isinf(self.best_error) else self.best_error
    return d

  @classmethod
  def from_dict(cls, d: dict) -> 'PlateauRule':
    d = dict(d)
    d['best_error'] = math.inf if d['best_error'] is None else d['best_error']
    return cls(**d)
