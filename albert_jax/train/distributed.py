"""Multi-process setup: joining the other processes, and stopping together on preemption.

One process runs per TPU VM worker (host): the TPU runtime gives a process all
of its host's chips. Under SLURM one process runs per GPU (one task each, as
`launch.cluster --target=slurm` starts them): JAX's SLURM detection gives each
task the GPU its SLURM_LOCALID numbers, so fewer tasks would leave GPUs idle
(albert_jax/cluster.py says more). Each process feeds its own part of every
global batch; jax.jit programs then span the devices of all processes.
"""

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

from albert_jax.errors import Interrupted


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  cluster: bool = False,
) -> None:
  """Joins a multi-process run; a single-process run needs no call.

  Args:
    coordinator_address: 'host:port' of process 0; with `num_processes` and
      `process_id` this starts a run anywhere (several processes on one
      machine included).
    num_processes: how many processes take part.
    process_id: this process's index in [0, num_processes).
    cluster: without an address, let JAX read them from the environment
      (Cloud TPU VM pods, SLURM, Open MPI, Kubernetes).
  """
  if not coordinator_address and not cluster:
    return
  # CPU devices of different processes talk through gloo (ignored on TPU/GPU).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address or None, num_processes, process_id)


class PreemptionWatcher:
  """Says when to save a checkpoint and stop because the job is being
  preempted or interrupted.

  The notice is SIGTERM (Cloud TPU maintenance, SLURM time limit or
  `scancel`, Kubernetes eviction), or SIGINT (Ctrl-C) in a single process.
  A single process installs handlers that only set a flag, read at the next
  step. Several processes must stop at the same step to write one checkpoint
  together: JAX's preemption sync service, started by
  `jax.distributed.initialize`, listens for SIGTERM on every host and agrees
  on that step (Ctrl-C stays Python's KeyboardInterrupt there).

  Ctrl-C is SIGTERM that ends with exit status 130: when the block it
  watches ends, `Interrupted` is raised. A second Ctrl-C exits at once
  (status 130), saving nothing more: the complete checkpoints stay, and a
  save in flight is left as orbax's temporary directory, removed on resume.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous: dict[int, object] = {}
    self.interrupted = False  # By Ctrl-C (SIGINT), not SIGTERM.
    if jax.process_count() == 1:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT:
      if self.interrupted:
        print('interrupted again: exiting now, without saving', file=sys.stderr, flush=True)
        os._exit(128 + signal.SIGINT)  # At once: no cleanup, which may wait on a save.
      self.interrupted = True
      print(
        'interrupted: saving a checkpoint after this step (Ctrl-C again to exit at once)',
        file=sys.stderr,
        flush=True,
      )
    self._event.set()

  def should_stop(self, step: int) -> bool:
    """Whether to checkpoint after `step` and stop; call once per step on every process."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()

  def close(self) -> None:
    """Restores the signal handlers that were there before."""
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def __enter__(self) -> 'PreemptionWatcher':
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    self.close()
    if self.interrupted and exc_type is None:
      # The loop said what it saved; the exit status says Ctrl-C.
      raise Interrupted('', signal.SIGINT)
