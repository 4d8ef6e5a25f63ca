"""Orbax checkpoints holding everything a run needs to resume exactly.

One checkpoint = the TrainState (params, optimizer state, step, dropout key), the Grain
iterator state (so the data order continues where it stopped), and a small JSON `meta`
(the plateau rule's state, the last evaluation). A re-run with the same --workdir restores the
latest one; Orbax writes each step into a temporary directory and renames it when complete, so
a crash or a full disk mid-save leaves the previous checkpoint intact (the temporary directory
is removed at the next start). A checkpoint that cannot be read back is moved aside to
<workdir>/checkpoints.unreadable/ and the one before it is used.
"""
import os
import re
import shutil

import grain
import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError


class _absl_warnings_off:  # pylint: disable=invalid-name
  def __enter__(self):
    from absl import logging  # pylint: disable=g-import-not-at-top
    self.level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)

  def __exit__(self, *exc):
    from absl import logging  # pylint: disable=g-import-not-at-top
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


class Checkpoints:
  """The run's CheckpointManager under <workdir>/checkpoints."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True),
        item_names=('state', 'data', 'meta'))
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

  def save(self, step: int, state, data_iterator, meta: dict) -> None:
    """Starts an asynchronous save; a failure of the previous one is raised here."""
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
          meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_failed(self.saved_step or step, e) from e
    self.saved_step = step

  def restore_latest(self, like_state, data_iterator):
    """(step, state, meta, data_restored) from the newest readable checkpoint, or None.

    An unreadable one (truncated or corrupted files) is reported, moved aside to
    checkpoints.unreadable/<step> (nothing is deleted) and the one before it is tried.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        self._check_compatible(step, like_state)
        return (step, *self.restore(step, like_state, data_iterator))
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore/json errors
        aside = os.path.join(os.path.dirname(self.directory), 'checkpoints.unreadable')
        print(f'warning: the checkpoint at step {step} cannot be read ({_first_line(e)}); '
              f'moved to {aside}/{step}, trying the one before it', flush=True)
        if jax.process_index() == 0:
          os.makedirs(aside, exist_ok=True)
          shutil.move(os.path.join(self.directory, str(step)), os.path.join(aside, str(step)))
        if jax.process_count() > 1:
          from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
          multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
        self.manager.reload()
    return None

  def _check_compatible(self, step: int, like_state) -> None:
    """A readable checkpoint of another model (other width, classes, optimizer) is the user's
    mistake, not damage: say so instead of moving it aside."""
    from alexnet_jax import sharding  # pylint: disable=g-import-not-at-top
    tree = _state_metadata(os.path.join(self.directory, str(step), 'state'))
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

  def restore(self, step: int, like_state, data_iterator):
    """Returns (state, meta, data_restored).

    state is laid out like like_state (its shardings: a checkpoint restores onto another
    mesh or process count). data_iterator is set to its saved position in place when the
    checkpoint has a position for this process; one saved by a different number of processes
    has not, and the data order then starts afresh (data_restored False).
    """
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    data_file = os.path.join(self.directory, str(step), 'data',
                             f'process_{jax.process_index()}-of-{jax.process_count()}.json')
    data_restored = os.path.exists(data_file)
    if data_restored:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored.state, restored.meta, data_restored

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

  The config is the run's own (workdir/config.json, written at start); params are restored
  as host numpy arrays from the latest checkpoint, or from `step`.
  """
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(workdir, 'config.json')
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.exists(config_path) or not os.path.isdir(directory):
    raise UserError(f'{workdir!r} holds no training run (no config.json and checkpoints/)')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
  if not steps:
    raise UserError(f'{workdir!r} has no finished checkpoint yet')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise UserError(f'{workdir!r} has no checkpoint at step {step}; it has {steps}')
  path = os.path.join(directory, str(step), 'state')
  tree = _state_metadata(path)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  target = {'params': jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree['params'])}
  restored = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  return config, jax.device_get(restored['params']), step
