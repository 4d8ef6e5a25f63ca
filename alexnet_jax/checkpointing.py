"""Orbax checkpoints holding everything a run needs to resume exactly.

One checkpoint = the TrainState (params, optimizer state, step, dropout key), the Grain
iterator state (so the data order continues where it stopped), and a small JSON `meta`
(the plateau rule's state, the last evaluation). A re-run with the same --workdir restores the
latest one; Orbax writes each step into a temporary directory and renames it when complete, so
a crash mid-save leaves the previous checkpoint intact.
"""
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """The run's CheckpointManager under <workdir>/checkpoints."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=('state', 'data', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta)))

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
    self.manager.wait_until_finished()
    self.manager.close()


def load_run(workdir: str, step: int | None = None):
  """(config, params, step) of a finished or running training run, for eval and tools.

  The config is the run's own (workdir/config.json, written at start); params are restored
  as host numpy arrays from the latest checkpoint, or from `step`.
  """
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from alexnet_jax.errors import UserError  # pylint: disable=g-import-not-at-top
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
  metadata = ocp.StandardCheckpointer().metadata(path)
  tree = metadata.item_metadata.tree if hasattr(metadata, 'item_metadata') else metadata
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  target = {'params': jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree['params'])}
  restored = ocp.PyTreeCheckpointer().restore(
      path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  return config, jax.device_get(restored['params']), step
