"""Orbax checkpoints holding everything a run needs to resume exactly.

One checkpoint = the TrainState (params, optimizer state, step, dropout key, batch norm's
running statistics: empty without batch norm, absent from checkpoints written before it), the
Grain iterator state (so the data order continues where it stopped), a small JSON `meta` (the
plateau rule's state, the last evaluation) and the config it was written with (JSON), which
resume compares with the new one (config_changes.py). A re-run with the same --workdir restores
the latest one; Orbax writes each step into a temporary directory and renames it when complete,
so a crash or a full disk mid-save leaves the previous checkpoint intact (the temporary
directory is removed at the next start). Only a checkpoint whose bytes are proven unreadable
(`unreadable_bytes`: garbled JSON, a missing file, an array file that is truncated or does not
decode) is moved aside to <workdir>/checkpoints.unreadable/ (and the one before it used). Any other
error while reading (out of memory, an I/O error, a sharding error) is a RunFailure that moves
nothing; a readable checkpoint that does not fit (another model, a refused setting) is a UserError
that moves nothing; a data-iterator state that cannot be applied falls back to the step's
position in the data order. With several processes every process reads, then all agree on one
outcome before anything is moved (`Checkpoints.restore_latest`).
"""
import dataclasses
import errno
import glob
import json
import os
import re
import shutil
from typing import Any, Callable

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax import config_changes
from alexnet_jax import sharding
from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError


def _state_metadata(path: str):
  """The saved TrainState's tree of array metadata (shapes, dtypes), read without its data (by
  the handler itself: no Checkpointer, so no barrier between processes)."""
  return ocp.StandardCheckpointHandler().metadata(epath.Path(path)).tree


def _read_items(step_dir: str, **items: ocp.args.CheckpointArgs) -> ocp.args.Composite:
  """Items of the checkpoint in step_dir, read by Orbax's handlers directly.

  CheckpointManager.restore ends in a barrier of all processes; a process whose read raised
  never reaches it, and the others would wait there (300 s) instead of in the agreement
  (Checkpoints._agree) that decides what every process does next."""
  handler = ocp.CompositeCheckpointHandler()
  try:
    return handler.restore(epath.Path(step_dir), args=ocp.args.Composite(**items))
  finally:
    handler.close()


# What a damaged checkpoint raises, found by damaging one in every way (orbax 0.12.8,
# tensorstore 0.1.86; docs/reliability.md has the dated table). Tensorstore reports an array
# file cut short as OUT_OF_RANGE ("Requested byte range ... is not valid for value of size"), one that does
# not decode as FAILED_PRECONDITION ("ZSTD_decompressStream() failed", "Truncated Zstd-compressed
# stream") or DATA_LOSS ("Error decoding manifest / b-tree node"), a missing one as NOT_FOUND;
# all as ValueError, wrapped by Orbax in a bare Exception. The file's own I/O errors carry
# "[OS error N: ...]".
_DAMAGE_STATUS = ('DATA_LOSS:', 'OUT_OF_RANGE:', 'NOT_FOUND:')
_DAMAGE_TEXT = ('Error decoding', 'Data corruption', 'decompress', 'Truncated',
                'is not valid for value of size', 'Expected to start with hex bytes')


def _chain(error: BaseException) -> list[BaseException]:
  """error and the exceptions it was raised from (or while handling), as a traceback shows."""
  chain = []
  while error is not None and len(chain) < 16 and error not in chain:
    chain.append(error)
    error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
  return chain


def _environment_error(error: BaseException) -> bool:
  """An error of the machine, not of the checkpoint's bytes: memory, I/O (EIO, EACCES, ENOSPC,
  a stale handle...), also where tensorstore reports it ("[OS error 5: EIO ...]")."""
  if isinstance(error, MemoryError) or (isinstance(error, OSError) and
                                        not isinstance(error, FileNotFoundError)):
    return True
  os_error = re.search(r'\[OS error (\d+)', str(error))
  return bool(os_error) and int(os_error.group(1)) != errno.ENOENT


def unreadable_bytes(error: BaseException, step_dir: str) -> bool:
  """Whether `error`, raised reading the checkpoint in step_dir, proves its files damaged.

  Proof: a JSON file that does not parse (json.JSONDecodeError, UnicodeDecodeError), a file or
  item of the checkpoint that is missing while its directory is there (FileNotFoundError,
  Orbax's KeyError "... was not found in the checkpoint", tensorstore's NOT_FOUND), an array file
  cut short or that does not decode (tensorstore's errors above). Nothing in the chain may be an
  error of the machine (_environment_error): out of memory, an I/O error, and everything else
  (a sharding ValueError, a device's RESOURCE_EXHAUSTED, a bug) is no proof.
  """
  chain = _chain(error)
  if any(_environment_error(e) for e in chain):
    return False
  for e in chain:
    text = str(e)
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
      return True
    missing = (isinstance(e, FileNotFoundError) or
               (isinstance(e, KeyError) and 'was not found in the checkpoint' in text) or
               (isinstance(e, ValueError) and text.startswith('NOT_FOUND:')))
    if missing:
      return os.path.isdir(step_dir)
    if isinstance(e, ValueError) and (text.startswith(_DAMAGE_STATUS) or
                                      any(t in text for t in _DAMAGE_TEXT)):
      return True
  return False


def _describe(error: BaseException) -> str:
  """The error it was raised from (Orbax wraps tensorstore's), on one line with its type."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = re.sub(r'\s*See full TensorStore details:.*', '', str(error), flags=re.S).strip()
  return f'{type(error).__name__}: {_first_line(Exception(text))}' if text else (
      type(error).__name__)


def _first_line(error: Exception, limit: int = 300) -> str:
  """The error on one line; tensorstore's JSON spec dropped, the middle elided (the head says
  what failed, the tail why: 'File too large', 'No space left on device')."""
  text = re.sub(r"\s*\[tensorstore_spec='.*?'\]", '', str(error), flags=re.S)
  text = ' '.join(text.split()) or type(error).__name__
  return text if len(text) <= limit else f'{text[:limit // 2]} ... {text[-limit // 2:]}'


# Each process's verdict on a checkpoint it tried to read, in order of gravity (_agree).
_READ, _UNREADABLE, _REFUSED, _FAILED = 0, 1, 2, 3


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
    # Orbax removes what an interrupted save left in a thread it starts here, and waits for it
    # only at the next save: a run that ends at once (a refused resume, exit 2) would exit under
    # that thread, which then dies with a traceback. Wait for it now (milliseconds).
    wait_for_cleanup = getattr(self.manager, '_maybe_await_cleanup_tmp_directory', None)
    if wait_for_cleanup is not None:
      wait_for_cleanup()
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
    iterator), to fallback_position(step).

    Each process reads the checkpoint (its own shards of it), then all agree (_agree): where
    any process failed for another reason than damage (out of memory, an I/O error...), every
    process raises RunFailure and nothing is moved; else where any refused it (UserError), all
    do; else where any proved its bytes unreadable (unreadable_bytes; a damaged shard is read
    by one process only), process 0 moves it aside to checkpoints.unreadable/<step> (nothing is
    deleted) and all try the one before it.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):

      def attempt(step=step):
        saved_config = self._read_config(step)
        like_state = like_state_for(step, saved_config)  # UserError: refused
        self._check_compatible(step, like_state)  # UserError: another model
        return self._restore_state(step, like_state)

      restored, unreadable = self._agree(step, attempt)
      if unreadable is not None:
        self._move_aside(step, unreadable)
        continue
      state, meta = restored
      data_note = self._restore_data(step, data_iterator, fallback_position)
      return Restored(step, state, meta, data_note)
    return None

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _agree(self, step: int, attempt: Callable[[], Any]) -> tuple[Any, str | None]:
    """(attempt(), None) where every process read the checkpoint at `step`; (None, why) where
    it is to be moved aside (why: this process's reason, '' where another process had it).

    Every process reaches the one allgather of verdicts, whatever its attempt raised, so none
    waits for another that gave up. The outcome is the gravest verdict of any process: another
    error (RunFailure), a refusal (UserError), proven damage (moved aside), success. A process
    that has the gravest error raises its own; the others name the process that had it.
    """
    try:
      result, error = attempt(), None
    except UserError as e:
      result, error, verdict = None, e, _REFUSED
    except Exception as e:  # pylint: disable=broad-except  # classified here
      result, error = None, e
      verdict = _UNREADABLE if unreadable_bytes(e, self._step_dir(step)) else _FAILED
    else:
      verdict = _READ
    verdicts = [verdict]
    if jax.process_count() > 1:
      verdicts = [int(v) for v in np.ravel(multihost_utils.process_allgather(np.int32(verdict)))]
    outcome = max(verdicts)
    others = ', '.join(str(i) for i, v in enumerate(verdicts) if v == outcome)
    if outcome == _FAILED:
      if verdict == _FAILED:
        raise RunFailure(
            f'could not read the checkpoint at step {step} in {self.directory} '
            f'({_describe(error)}); that is no proof that its files are damaged, so nothing was '
            'moved. Run the same command again once the cause is fixed (memory, the file '
            'system, the mesh)') from error
      raise RunFailure(f'process(es) {others} could not read the checkpoint at step {step} in '
                       f'{self.directory} (their error line says why); nothing was moved')
    if outcome == _REFUSED:
      if verdict == _REFUSED:
        raise error
      raise UserError(f'process(es) {others} refused the checkpoint at step {step} in '
                      f'{self.directory} (their error line says why); nothing was moved')
    if outcome == _UNREADABLE:
      return None, (_describe(error) if verdict == _UNREADABLE else '')
    return result, None

  def _move_aside(self, step: int, why: str) -> None:
    """Every process calls it, having agreed; process 0 moves the directory."""
    aside = os.path.join(os.path.dirname(self.directory), 'checkpoints.unreadable')
    target = os.path.join(aside, str(step))
    suffix = 1
    while os.path.exists(target):  # moved aside before (the run got there again): keep both
      target, suffix = os.path.join(aside, f'{step}.{suffix}'), suffix + 1
    who = '' if jax.process_count() == 1 else f' on process {jax.process_index()}'
    if why:
      print(f'warning: the checkpoint at step {step} cannot be read{who} ({why}); moved to '
            f'{target}, trying the one before it', flush=True)
    elif jax.process_index() == 0:
      print(f'warning: the checkpoint at step {step} cannot be read by another process (its '
            f'warning says why); moved to {target}, trying the one before it', flush=True)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      shutil.move(self._step_dir(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
    self.manager.reload()

  def _read_config(self, step: int) -> dict | None:
    if not os.path.isdir(os.path.join(self._step_dir(step), 'config')):
      return None  # written before checkpoints stored their config
    return _read_items(self._step_dir(step), config=ocp.args.JsonRestore()).config

  def _check_compatible(self, step: int, like_state) -> None:
    """A readable checkpoint of another model (other width, classes, optimizer) is the user's
    mistake, not damage: say so instead of moving it aside."""
    try:
      tree = _state_metadata(os.path.join(self._step_dir(step), 'state'))
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
    saved = _state_metadata(os.path.join(self._step_dir(step), 'state'))
    # Written before the TrainState held batch_stats (so by a net without batch norm; a net
    # with it was refused by _check_compatible): restore the fields it has, keep the empty one.
    old = 'batch_stats' not in saved and not jax.tree.leaves(like_state.batch_stats)
    target = {name: getattr(abstract_state, name) for name in saved} if old else abstract_state
    restored = _read_items(self._step_dir(step), state=ocp.args.StandardRestore(target),
                           meta=ocp.args.JsonRestore())
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
    config = ml_collections.ConfigDict(config_changes.upgrade(json.load(f)))  # today's keys
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
