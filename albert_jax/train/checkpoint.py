"""Checkpoints: orbax CheckpointManager holding the train state and the data position.

A checkpoint at step s (= s optimizer updates done) holds two items:
  state  the TrainState (params, optimizer state, step, RNG), written
         asynchronously, each process writing its own shards;
  data   the grain iterator state of every process (process_I-of-N.json), so a
         resumed run reads exactly the batches an uninterrupted one would.
Restoring takes the target shardings from an abstract state, so a checkpoint
saved under one mesh loads under another.

Orbax's on-disk layout (step directories, the 'state' item, its 'params'
subtree) is known here only: `checkpoint_steps` and `restore_params` serve
readers that want a run's params without a model or mesh (export, sweeps).
"""

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy

from albert_jax import tree_paths
from albert_jax.errors import UsageError

# A run's checkpoints live in WORKDIR/checkpoints.
WORKDIR_SUBDIR = 'checkpoints'


def _absolute(directory: str) -> str:
  # Orbax needs absolute paths; remote ones (gs://...) already are.
  return directory if '://' in directory else os.path.abspath(directory)


def checkpoint_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in `directory`, ascending; [] when
  `directory` does not exist."""
  directory = _absolute(directory)
  if not epath.Path(directory).is_dir():
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def restore_params(directory: str, step: int) -> Any:
  """The params of checkpoint `step` in `directory` as host numpy arrays, in
  the tree and dtypes they were saved with.

  Reads only the params of the TrainState, on one process, whatever mesh the
  run had. Orbax's ValueError / KeyError / FileNotFoundError pass through
  (an incomplete or foreign checkpoint).
  """
  path = epath.Path(_absolute(directory)) / str(step) / 'state'
  # The saved tree itself is the restore target: no model is built here.
  abstract = ocp.PyTreeCheckpointHandler().metadata(path).tree['params']
  restored = ocp.PyTreeCheckpointer().restore(
    path,
    args=ocp.args.PyTreeRestore(
      item={'params': abstract},
      restore_args={
        'params': jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
      },
      partial_restore=True,
    ),
  )
  return restored['params']


class Checkpointer:
  """Saves and restores (TrainState, data iterator) under `directory`."""

  def __init__(self, directory: str, *, every_steps: int, keep: int):
    if every_steps < 1 or keep < 1:
      raise UsageError(
        f'config.checkpoint.every_steps and .keep must be >= 1, got {every_steps} and {keep}'
      )
    self.directory = _absolute(directory)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        save_decision_policy=save_decision_policy.FixedIntervalPolicy(every_steps),
        preservation_policy=preservation_policy.LatestN(keep),
        enable_async_checkpointing=True,
      ),
      item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'data': grain.checkpoint.CheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `step` is a periodic checkpoint step."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, data_iterator: Any) -> None:
    """Starts writing checkpoint `step`; returns once device arrays are copied."""
    self._manager.save(
      step,
      force=True,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
      ),
    )

  def check_compatible(self, step: int, abstract_state: Any, changes: str = '') -> None:
    """Raises UsageError unless checkpoint `step` holds arrays of `abstract_state`'s shapes.

    `changes` (e.g. 'model.hidden_size 64 -> 32') is added to the message.
    """
    saved = tree_paths.shapes(self._manager.item_metadata(step)['state'].tree)
    wanted = tree_paths.shapes(abstract_state)
    # Parameters first: they name the model difference most plainly.
    for name in sorted(
      saved.keys() | wanted.keys(), key=lambda n: (not n.startswith('params/'), n)
    ):
      if saved.get(name) != wanted.get(name):
        there = f'shape {saved[name]}' if name in saved else 'absent'
        here = f'shape {wanted[name]}' if name in wanted else 'absent'
        raise UsageError(
          f'{self.directory} holds a checkpoint (step {step}) of another model '
          f'or optimizer{f" ({changes})" if changes else ""}: {name} is {there} '
          f'there but {here} in this config; resume with the config it was '
          'saved with, or use a new --workdir'
        )

  def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
    """The state of checkpoint `step`, placed as `abstract_state`'s shardings.

    `data_iterator` is moved to the saved position in place.
    """
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
      ),
    )
    return restored['state']

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
