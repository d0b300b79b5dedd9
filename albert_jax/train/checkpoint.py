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

import errno
import os
import shutil
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy

from albert_jax import tree_paths
from albert_jax.errors import UsageError

# A run's checkpoints live in WORKDIR/checkpoints; unreadable ones are moved
# to WORKDIR/unusable_checkpoints.
WORKDIR_SUBDIR = 'checkpoints'
UNUSABLE_SUBDIR = 'unusable_checkpoints'
_MARGIN_BYTES = 1 << 20


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


def remove_partial(directory: str) -> None:
  """Removes what an interrupted save left in `directory` (orbax writes each
  checkpoint to a temporary directory, renamed when complete)."""
  if jax.process_index() != 0 or not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if '.orbax-checkpoint-tmp' in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


class Checkpointer:
  """Saves and restores (TrainState, data iterator) under `directory`."""

  def __init__(self, directory: str, *, every_steps: int, keep: int):
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

  def all_steps(self) -> list[int]:
    """The steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def move_aside(self, step: int) -> str:
    """Moves checkpoint `step` (unreadable) out of the way, next to the
    checkpoints, never deleting it; returns where it went (process 0 moves)."""
    aside = os.path.join(os.path.dirname(self.directory), UNUSABLE_SUBDIR)
    target = os.path.join(aside, str(step))
    suffix = 0
    while os.path.exists(target):
      suffix += 1
      target = os.path.join(aside, f'{step}.{suffix}')
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'move_aside_{step}')
    self._manager.reload()
    return target

  def should_save(self, step: int) -> bool:
    """Whether `step` is a periodic checkpoint step."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, data_iterator: Any) -> None:
    """Starts writing checkpoint `step`; returns once device arrays are copied.

    Raises OSError(ENOSPC) before writing anything when the disk cannot hold
    it: a save that fails halfway leaves orbax's threads failing noisily.
    """
    self._check_space(step, state)
    self._manager.save(
      step,
      force=True,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
      ),
    )

  def _check_space(self, step: int, state: Any) -> None:
    if '://' in self.directory:  # Remote storage: no free-space figure.
      return
    # This process's shards, and room for the metadata and iterator state.
    # OCDBT's chunks and indices take more than the raw bytes: a quarter more.
    needed = (
      _MARGIN_BYTES
      + 5
      * sum(shard.data.nbytes for x in jax.tree.leaves(state) for shard in x.addressable_shards)
      // 4
    )
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise OSError(
        errno.ENOSPC,
        f'checkpoint {step} needs {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free',
        os.path.join(self.directory, str(step)),
      )

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises UsageError unless checkpoint `step` holds arrays of `abstract_state`'s shapes."""
    metadata = self._manager.item_metadata(step)['state']
    if metadata is None:  # Not a usable checkpoint, rather than another model's.
      raise FileNotFoundError(f'checkpoint {step} has no readable state metadata')
    saved = tree_paths.shapes(metadata.tree)
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
          f'or optimizer: {name} is {there} '
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

  def check_for_errors(self) -> None:
    """Raises what a finished asynchronous save failed with (a full disk)."""
    self._manager.check_for_errors()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
