"""Orbax checkpoints holding everything a run needs to resume exactly.

One checkpoint = the TrainState (params, optimizer state, step, dropout key, batch norm's
running statistics: empty without batch norm, absent from checkpoints written before it), the
Grain iterator state (so the data order continues where it stopped), a small JSON `meta` (the
plateau rule's state, the last evaluation) and the config it was written with (JSON), which
resume compares with the new one (config_changes.py). A re-run with the same --workdir restores
the latest one; Orbax writes each step into a temporary directory and renames it when complete,
so a crash or a full disk mid-save leaves the previous checkpoint intact (the temporary
directory is removed at the next start). Only a checkpoint whose bytes cannot be read back is
moved aside to <workdir>/checkpoints.unreadable/ (and the one before it used); a readable one
that does not fit (another model, a refused setting) is an error that moves nothing, and a
data-iterator state that cannot be applied falls back to the step's position in the data order.
"""
import dataclasses
import glob
import json
import os
import re
import shutil
from typing import Any, Callable

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from alexnet_jax import sharding
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError


class _absl_warnings_off:  # pylint: disable=invalid-name
  def __enter__(self):
    self.level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)

  def __exit__(self, *exc):
    logging.set_verbosity(self.level)


def _state_metadata(path: str):
  """The saved TrainState's tree of array metadata (shapes, dtypes), read without its data."""
  with _absl_warnings_off():  # "no _CHECKPOINT_METADATA" at item level: expected here
    metadata = ocp.StandardCheckpointer().metadata(path)
  return metadata.item_metadata.tree if hasattr(metadata, 'item_metadata') else metadata


def _first_line(error: Exception, limit: int = 300) -> str:
  """The error on one line; tensorstore's JSON spec dropped, the middle elided (the head says
  what failed, the tail why: 'File too large', 'No space left on device')."""
  text = re.sub(r"\s*\[tensorstore_spec='.*?'\]", '', str(error), flags=re.S)
  text = ' '.join(text.split()) or type(error).__name__
  return text if len(text) <= limit else f'{text[:limit // 2]} ... {text[-limit // 2:]}'


@dataclasses.dataclass
class Restored:
  step: int
  state: Any
  meta: dict
  data_note: str  # '' when the data iterator's own state was restored


class Checkpoints:
  """The run's CheckpointManager under <workdir>/checkpoints."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True),
        item_names=('state', 'data', 'meta', 'config'))
    self.saved_step: int | None = None  # the last save this run finished (or started)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _write_failed(self, step: int, error: Exception) -> RunFailure:
    kept = [s for s in self.manager.all_steps() if s != step]
    previous = f'step {max(kept)} is intact' if kept else 'no earlier checkpoint exists'
    return RunFailure(
        f'could not write the checkpoint at step {step} in {self.directory} '
        f'({_first_line(error)}); {previous}. Free disk space (or fix the path) and run the '
        'same command again to resume')

  def save(self, step: int, state, data_iterator, meta: dict, config: dict) -> None:
    """Starts an asynchronous save; a failure of the previous one is raised here."""
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
          meta=ocp.args.JsonSave(meta),
          config=ocp.args.JsonSave(config)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_failed(self.saved_step or step, e) from e
    self.saved_step = step

  def restore_latest(self, like_state_for: Callable[[int, dict | None], Any], data_iterator,
                     fallback_position: Callable[[int], int]) -> 'Restored | None':
    """The newest readable checkpoint, restored, or None when there is none.

    like_state_for(step, saved_config) checks the checkpoint's config (None: written before
    configs were stored) against this run's, raising UserError to refuse it, and returns the
    state to restore into (its structure and shardings). data_iterator is set to the saved
    position in place; where the saved state cannot be applied (written by another kind of
    iterator), to fallback_position(step). A checkpoint whose files cannot be read is reported,
    moved aside to checkpoints.unreadable/<step> (nothing is deleted) and the one before it is
    tried; nothing else is ever moved.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved_config = self._read_config(step)
      except Exception as e:  # pylint: disable=broad-except  # unreadable JSON
        self._move_aside(step, e)
        continue
      like_state = like_state_for(step, saved_config)  # UserError: refused, nothing moved
      self._check_compatible(step, like_state)  # UserError: another model, nothing moved
      try:
        state, meta = self._restore_state(step, like_state)
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore/json errors
        self._move_aside(step, e)
        continue
      data_note = self._restore_data(step, data_iterator, fallback_position)
      return Restored(step, state, meta, data_note)
    return None

  def _move_aside(self, step: int, error: Exception) -> None:
    aside = os.path.join(os.path.dirname(self.directory), 'checkpoints.unreadable')
    print(f'warning: the checkpoint at step {step} cannot be read ({_first_line(error)}); '
          f'moved to {aside}/{step}, trying the one before it', flush=True)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), os.path.join(aside, str(step)))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
    self.manager.reload()

  def _read_config(self, step: int) -> dict | None:
    if not os.path.isdir(os.path.join(self.directory, str(step), 'config')):
      return None  # written before checkpoints stored their config
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore())).config

  def _check_compatible(self, step: int, like_state) -> None:
    """A readable checkpoint of another model (other width, classes, optimizer) is the user's
    mistake, not damage: say so instead of moving it aside."""
    try:
      tree = _state_metadata(os.path.join(self.directory, str(step), 'state'))
    except Exception:  # pylint: disable=broad-except  # unreadable: _restore_state says so
      return
    saved = {sharding.path_name(k): tuple(v.shape)
             for k, v in jax.tree_util.tree_leaves_with_path(tree) if hasattr(v, 'shape')}
    wanted = {sharding.path_name(k): tuple(v.shape)
              for k, v in jax.tree_util.tree_leaves_with_path(like_state)}
    if saved.keys() != wanted.keys() or saved != wanted:
      differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
      raise UserError(
          f'the checkpoint at step {step} in {self.directory} was written by another model or '
          f'optimizer config ({len(differ)} arrays differ, e.g. {differ[0]}: saved '
          f'{saved.get(differ[0])}, now {wanted.get(differ[0])}); use another --workdir or '
          'the config.json stored in this one')

  def _restore_state(self, step: int, like_state):
    """(state laid out like like_state: a checkpoint restores onto another mesh or process
    count, meta)."""
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    saved = _state_metadata(os.path.join(self.directory, str(step), 'state'))
    # Written before the TrainState held batch_stats (so by a net without batch norm; a net
    # with it was refused by _check_compatible): restore the fields it has, keep the empty one.
    old = 'batch_stats' not in saved and not jax.tree.leaves(like_state.batch_stats)
    target = {name: getattr(abstract_state, name) for name in saved} if old else abstract_state
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    state = like_state.replace(**restored.state) if old else restored.state
    return state, restored.meta

  def _restore_data(self, step: int, data_iterator, fallback_position) -> str:
    """Sets the data iterator to the checkpoint's position; returns what happened, in words.

    The training iterator's state is the next position in the global data order, the same
    in every process's file, so any process's file fits any process count."""
    data_dir = os.path.join(self.directory, str(step), 'data')
    ours = os.path.join(data_dir, f'process_{jax.process_index()}-of-{jax.process_count()}.json')
    files = [ours] if os.path.exists(ours) else sorted(glob.glob(os.path.join(data_dir, '*.json')))
    try:
      with open(files[0]) as f:
        data_iterator.set_state(json.load(f))
      return ''
    except Exception as e:  # pylint: disable=broad-except  # missing, or another iterator's
      why = 'none was saved' if not files else f'it does not fit this iterator: {_first_line(e, 120)}'
      position = fallback_position(step)
      data_iterator.set_state({'global_next_index': position})
      return (f'the data position saved at step {step} could not be restored ({why}); '
              f'continuing at position {position} of the data order (the same epoch and '
              'position within it; the order is this version\'s, not the one that checkpoint '
              'was following)')

  def close(self) -> None:
    """Waits for the save in flight; raises RunFailure if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_failed(self.saved_step, e) from e
    finally:
      self.manager.close()


def load_run(workdir: str, step: int | None = None):
  """(config, params, step) of a finished or running training run, for eval and tools.

  The config is the one stored with that checkpoint (for checkpoints written before configs
  were stored: workdir/config.json, written at each start); params are restored as host numpy
  arrays from the latest checkpoint, or from `step`. To run the net, load_variables: a net with
  batch norm needs its running statistics too.
  """
  config, variables, step = load_variables(workdir, step)
  return config, variables['params'], step


def load_variables(workdir: str, step: int | None = None):
  """(config, variables, step) as load_run, variables being what model.apply takes: the params
  and, for a net with batch norm (model.norm), its running statistics ('batch_stats')."""
  config_path = os.path.join(workdir, 'config.json')
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.exists(config_path) or not os.path.isdir(directory):
    raise UserError(f'{workdir!r} holds no training run (no config.json and checkpoints/)')
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
  if not steps:
    raise UserError(f'{workdir!r} has no finished checkpoint yet')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise UserError(f'{workdir!r} has no checkpoint at step {step}; it has {steps}')
  stored = os.path.join(directory, str(step), 'config', 'metadata')
  with open(stored if os.path.exists(stored) else config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  path = os.path.join(directory, str(step), 'state')
  tree = _state_metadata(path)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  # Checkpoints of nets without batch norm hold no statistics (or none at all, written before).
  names = ['params'] + (['batch_stats'] if jax.tree.leaves(tree.get('batch_stats', {})) else [])
  target = {name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu),
                               tree[name]) for name in names}
  restored = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  return config, jax.device_get(restored), step
