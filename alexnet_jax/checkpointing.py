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
