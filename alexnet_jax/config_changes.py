"""What a setting changed between a checkpoint and its resume does (docs/resuming.md).

Every leaf key of configs/alexnet.py's get_config() has exactly one class (`KEYS`; a test walks
the config and docs/resuming.md's table against it):

  RUN        (a) touches nothing a checkpoint holds and nothing the update computes: workers,
                 log and checkpoint frequency, eval batch, where the data lives (the data itself
                 is checked: same classes and sizes, same statistics). Resume; one note line.
  OPTIMIZER  (b) optimizer hyperparameters and whatever drives the schedule: applied from the
                 resume step on, one note line each (`optimizer.lr 0.01 -> 0.001 at step N`).
  EXPERIMENT (c) changes what the checkpoint holds (shapes, the optimizer's state) or what the
                 experiment is (a model switch, the augmentation, the data): refused with one
                 error line, nothing moved. The ones that keep shapes can be let through by
                 naming them in config.train.allow_changed.

A few keys depend on the schedule: the evaluation frequency and the 10-crop switch drive the
plateau rule, the run length drives a cosine schedule; under other schedules they are RUN.
"""
import copy
import dataclasses
from typing import Any

from alexnet_jax.errors import UserError

RUN, OPTIMIZER, EXPERIMENT = 'a', 'b', 'c'
CLASS_NAMES = {RUN: 'resume, note', OPTIMIZER: 'applied from the resume step',
               EXPERIMENT: 'refused'}


@dataclasses.dataclass(frozen=True)
class Rule:
  """A key's class; `when` = (key, values, class): that class instead while key's value is in
  values. fixed: a refused key that no allow_changed can let through (shapes differ)."""
  cls: str
  why: str
  when: tuple[str, tuple[Any, ...], str] | None = None
  fixed: bool = False

  def class_for(self, config) -> str:
    if self.when and _get(config, self.when[0]) in self.when[1]:
      return self.when[2]
    return self.cls

  def describe(self) -> str:
    if not self.when:
      return self.cls
    key, values, cls = self.when
    return f'{cls} when {key} is {" or ".join(str(v) for v in values)}, else {self.cls}'


_PATH = 'only where the data is read from; the data found there must be the same (classes, sizes)'
_MODEL = 'a model switch: the run would be another experiment from here on'
_AUG = 'the augmentation or normalisation: another experiment from here on'
_IMPL = 'an implementation with the same values (benchmark switch)'
_SCHED = 'an optimizer hyperparameter'

KEYS: dict[str, Rule] = {
    'seed': Rule(EXPERIMENT, 'it orders the data and draws the augmentation from the resume step '
                 'on (init and the dropout key are already in the checkpoint): a new seed '
                 'mid-run makes a run no seed reproduces'),
    'dataset.name': Rule(EXPERIMENT, 'other data (a prepared copy has other pixels)'),
    'dataset.folder': Rule(RUN, _PATH),
    'dataset.data_dir': Rule(RUN, _PATH),
    'dataset.manual_dir': Rule(RUN, 'read only when a dataset is prepared'),
    'dataset.train_split': Rule(EXPERIMENT, 'other training data'),
    'dataset.eval_split': Rule(EXPERIMENT, 'other validation data, which the plateau rule and '
                               'the reported numbers use'),
    'input.resize_size': Rule(EXPERIMENT, _AUG),
    'input.image_size': Rule(EXPERIMENT, 'fc6\'s input size changes with it', fixed=True),
    'input.random_crop': Rule(EXPERIMENT, _AUG),
    'input.random_flip': Rule(EXPERIMENT, _AUG),
    'input.pca_lighting': Rule(EXPERIMENT, _AUG),
    'input.lighting_std': Rule(EXPERIMENT, _AUG),
    'input.mean': Rule(EXPERIMENT, _AUG),
    'input.standardize': Rule(EXPERIMENT, _AUG),
    'input.stats_file': Rule(RUN, 'only where the statistics are read from; their values must '
                             'be the same'),
    'input.stats_images': Rule(EXPERIMENT, 'other statistics (mean image, eigenvalues)'),
    'input.lighting_eigen': Rule(EXPERIMENT, _AUG),
    'input.augment_on': Rule(RUN, 'the same augmentation from another random generator: the '
                             'draws from here on differ from an uninterrupted run\'s'),
    'input.workers': Rule(RUN, 'the batches do not depend on it (Grain\'s elastic iterator)'),
    'input.prefetch': Rule(RUN, 'buffering only'),
    'input.max_unreadable_frac': Rule(RUN, 'when a run with unreadable images stops; the '
                                      'images it skips get no weight either way'),
    'model.arch': Rule(EXPERIMENT, 'another net: every layer\'s shape', fixed=True),
    'model.num_classes': Rule(EXPERIMENT, 'fc8\'s shape', fixed=True),
    'model.norm': Rule(EXPERIMENT, _MODEL + ' (to or from batch norm the checkpoint\'s arrays '
                       'differ too: refused as another model)'),
    'model.lrn_order': Rule(EXPERIMENT, _MODEL),
    'model.pool': Rule(EXPERIMENT, _MODEL),
    'model.dropout': Rule(EXPERIMENT, _MODEL),
    'model.dropout_placement': Rule(EXPERIMENT, _MODEL),
    'model.activation': Rule(EXPERIMENT, _MODEL),
    'model.dtype': Rule(EXPERIMENT, 'the compute precision of every step'),
    'model.init': Rule(EXPERIMENT, 'the recorded recipe would no longer be the one that ran'),
    'model.width': Rule(EXPERIMENT, 'every layer\'s shape', fixed=True),
    'model.remove_convs': Rule(EXPERIMENT, 'the layers the checkpoint holds', fixed=True),
    'model.lrn_impl': Rule(RUN, _IMPL),
    'model.conv_impl': Rule(RUN, _IMPL),
    'model.pool_impl': Rule(RUN, _IMPL),
    'optimizer.name': Rule(EXPERIMENT, 'the optimizer state\'s contents', fixed=True),
    'optimizer.lr': Rule(OPTIMIZER, _SCHED),
    'optimizer.momentum': Rule(OPTIMIZER, _SCHED),
    'optimizer.weight_decay': Rule(OPTIMIZER, _SCHED),
    'optimizer.lr_scaling': Rule(OPTIMIZER, _SCHED),
    'optimizer.schedule': Rule(OPTIMIZER, _SCHED),
    'optimizer.plateau_factor': Rule(OPTIMIZER, 'the plateau rule (its counters carry on)'),
    'optimizer.plateau_patience': Rule(OPTIMIZER, 'the plateau rule (its counters carry on)'),
    'optimizer.plateau_max_decays': Rule(OPTIMIZER, 'the plateau rule (its counters carry on)'),
    'optimizer.plateau_threshold': Rule(OPTIMIZER, 'the plateau rule (its counters carry on)'),
    'optimizer.plateau_min_epochs': Rule(OPTIMIZER, 'the plateau rule (its counters carry on)'),
    'optimizer.step_epochs': Rule(OPTIMIZER, _SCHED),
    'optimizer.step_at_epochs': Rule(OPTIMIZER, _SCHED),
    'optimizer.bias_lr_mult': Rule(OPTIMIZER, _SCHED),
    'optimizer.bias_decay_mult': Rule(OPTIMIZER, _SCHED),
    'optimizer.decay_mults': Rule(OPTIMIZER, _SCHED),
    'optimizer.warmup_epochs': Rule(OPTIMIZER, _SCHED),
    'mesh.data': Rule(RUN, 'a checkpoint restores onto any mesh'),
    'mesh.model': Rule(RUN, 'a checkpoint restores onto any mesh'),
    'distributed.auto': Rule(RUN, 'how processes find each other'),
    'distributed.coordinator_address': Rule(RUN, 'how processes find each other'),
    'distributed.num_processes': Rule(RUN, 'the data order does not depend on it'),
    'distributed.process_id': Rule(RUN, 'how processes find each other'),
    'train.batch_size': Rule(EXPERIMENT, 'the gradient noise, the steps per epoch and so the '
                             'meaning of every step count, and the lr under linear scaling'),
    'train.num_epochs': Rule(RUN, 'the run\'s length; a cosine schedule spans it',
                             when=('optimizer.schedule', ('cosine',), OPTIMIZER)),
    'train.num_steps': Rule(RUN, 'the run\'s length; a cosine schedule spans it',
                            when=('optimizer.schedule', ('cosine',), OPTIMIZER)),
    'train.eval_every_epochs': Rule(RUN, 'how often to evaluate; the plateau rule counts '
                                    'evaluations', when=('optimizer.schedule', ('plateau',),
                                                         OPTIMIZER)),
    'train.checkpoint_every_steps': Rule(RUN, 'bookkeeping'),
    'train.keep_checkpoints': Rule(RUN, 'bookkeeping'),
    'train.log_every_steps': Rule(RUN, 'bookkeeping'),
    'train.on_nonfinite': Rule(RUN, 'what happens after a non-finite step, which never updates'),
    'train.chance_epochs': Rule(RUN, 'when a run still at chance is reported'),
    'train.on_chance': Rule(RUN, 'whether a run still at chance goes on or stops'),
    'train.allow_changed': Rule(RUN, 'this list itself'),
    'eval.batch_size': Rule(RUN, 'padding only: the same images are counted'),
    'eval.ten_crop': Rule(RUN, 'the validation error the plateau rule reads',
                          when=('optimizer.schedule', ('plateau',), OPTIMIZER)),
}


# RUN keys that a finished run's reported results still depend on: how long it trained and what
# its evaluations measured. The other RUN keys may differ and its results stand (a sweep reuses
# the run: sweeps/plan.py stale_keys).
RESULT_KEYS = frozenset({'train.num_epochs', 'train.num_steps', 'train.eval_every_epochs',
                         'eval.ten_crop'})


def changes_results(key: str, config) -> bool:
  """Whether a finished run trained with another value of `key` would report other results
  (a key KEYS does not know is taken to)."""
  rule = KEYS.get(key)
  return rule is None or rule.class_for(config) != RUN or key in RESULT_KEYS


def _get(config, key: str):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def leaf_keys(config, prefix: str = '') -> list[str]:
  """Every leaf key of a (nested) config, dotted."""
  keys = []
  for name, value in (config.items() if hasattr(config, 'items') else []):
    key = f'{prefix}{name}'
    if hasattr(value, 'items'):
      keys += leaf_keys(value, key + '.')
    else:
      keys.append(key)
  return keys


def flatten(config) -> dict[str, Any]:
  return {key: _get(config, key) for key in leaf_keys(config)}


@dataclasses.dataclass
class Changes:
  """The keys whose value differs between the checkpoint's config and this run's, by class."""
  step: int
  run: dict[str, tuple[Any, Any]]
  optimizer: dict[str, tuple[Any, Any]]
  allowed: dict[str, tuple[Any, Any]]  # EXPERIMENT keys named in train.allow_changed

  @property
  def keys(self) -> set[str]:
    return set(self.run) | set(self.optimizer) | set(self.allowed)

  def lines(self) -> list[str]:
    """What the resume prints: one note for the RUN keys, one line per other key."""
    out = []
    if self.run:
      out.append(f'note: resuming at step {self.step} with settings that change neither the '
                 f'checkpoint nor the update: {_listed(self.run)}')
    out += [f'{key} {_show(old)} -> {_show(new)} at step {self.step}'
            for key, (old, new) in sorted(self.optimizer.items())]
    out += [f'{key} {_show(old)} -> {_show(new)} at step {self.step} (allowed by '
            'train.allow_changed: the run is another experiment from here on)'
            for key, (old, new) in sorted(self.allowed.items())]
    return out


def _show(value) -> str:
  return repr(value) if isinstance(value, str) else str(value)


def _listed(changes: dict) -> str:
  return ', '.join(f'{key} {_show(old)} -> {_show(new)}' for key, (old, new) in
                   sorted(changes.items()))


# --- Compat: configs stored by earlier versions, read as today's (the only place) ---------
# A checkpoint stores the config it ran with, and so does workdir/config.json. Resume
# (compare), the commands that rebuild a run's model (checkpointing.load_variables) and a
# sweep's reuse of a finished run (sweeps/plan.py) read them through upgrade(); no other module
# knows an earlier version's keys. (Earlier checkpoint layouts are read where the checkpoint is:
# one without a stored config, or without batch norm's statistics, in checkpointing.py and
# train._resume; the plateau rule's saved fields in optim.PlateauRule.from_dict.)

# Keys added after runs were stored, with the value a run whose stored config lacks them ran
# with: a missing key reads as what the run did.
ADDED_KEYS: dict[str, Any] = {
    'model.norm': 'lrn',  # before it, model.lrn alone chose LRN (True) or nothing (False)
    # Before it, dropout zeroed torchvision's units (fc6's and fc7's inputs); the default is
    # the paper's now, so resuming such a run with today's default is a change to refuse.
    'model.dropout_placement': 'torchvision',
    'input.augment_on': 'host',  # before it, the Grain workers augmented
    'model.arch': 'alexnet',  # before it, the AlexNet was the only net
    'optimizer.step_at_epochs': '',  # before them, the paper's update and 'step' schedule
    'optimizer.bias_lr_mult': 1.0,
    'optimizer.bias_decay_mult': 1.0,
    'optimizer.decay_mults': '',
}


def upgrade(stored: dict) -> dict:
  """A stored config (a nested dict, as its JSON holds it) in today's keys, as a new dict.

  model.lrn, the LRN switch that model.norm replaced, becomes model.norm: False (the no-LRN
  ablation) is norm 'none'; True is the norm stored beside it, or 'lrn'. Then each key of
  ADDED_KEYS that a stored section lacks takes the value that run ran with. A config in
  today's keys comes back equal.
  """
  config = copy.deepcopy(dict(stored))
  model = config.get('model')
  if isinstance(model, dict) and 'lrn' in model:
    lrn = model.pop('lrn')
    model['norm'] = model.get('norm', 'lrn') if lrn else 'none'
  for key, value in ADDED_KEYS.items():
    section, name = key.split('.')
    if isinstance(config.get(section), dict):
      config[section].setdefault(name, value)
  return config


def allowed_keys(config) -> set[str]:
  text = config.train.get('allow_changed', '') or ''
  keys = {k.strip() for k in text.split(',') if k.strip()}
  unknown = sorted(k for k in keys if k not in KEYS)
  if unknown:
    raise UserError(f'config.train.allow_changed names unknown key(s) {", ".join(unknown)}')
  return keys


def compare(saved: dict, config, step: int) -> Changes:
  """The changes from a checkpoint's config (a nested dict, read through upgrade) to `config`,
  classified; raises UserError naming the first refused key. Keys either side still lacks are
  not compared."""
  old, new = flatten(upgrade(saved)), flatten(config)
  allowed = allowed_keys(config)
  changes = Changes(step, {}, {}, {})
  for key in sorted(old.keys() & new.keys()):
    if same(old[key], new[key]):
      continue
    rule = KEYS.get(key)
    if rule is None:
      raise UserError(f'config key {key} has no resume class in '
                      'alexnet_jax/config_changes.py KEYS; add it there and to docs/resuming.md')
    cls = rule.class_for(config)
    pair = (old[key], new[key])
    if cls == RUN:
      changes.run[key] = pair
    elif cls == OPTIMIZER:
      changes.optimizer[key] = pair
    elif key in allowed and not rule.fixed:
      changes.allowed[key] = pair
    else:
      hint = ('it changes the checkpoint\'s shapes; use another --workdir' if rule.fixed else
              f'resume with the old value, use another --workdir, or add '
              f'--config.train.allow_changed={key} to continue this run anyway')
      raise UserError(f'config.{key} changed since the checkpoint at step {step} '
                      f'({_show(old[key])} -> {_show(new[key])}): {rule.why}; {hint}')
  return changes


def same(a, b) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return float(a) == float(b)  # 1 and 1.0 read back from JSON alike
  return a == b
