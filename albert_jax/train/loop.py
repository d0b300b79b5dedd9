"""The training loop that pretraining and fine-tuning share.

  train   the latest checkpoint of the workdir (refusing one of another
          model), else a fresh state; then step, log, evaluate, checkpoint
          and handle preemption until train.num_steps
Each trainer (albert_jax/train/trainer.py, albert_jax/finetune/trainer.py)
assembles its `Run` (train/run.py) and brings its own data, initial params and
evaluation.
"""

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np

from albert_jax.data import pipeline
from albert_jax.errors import UsageError
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import distributed
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import metrics as metrics_lib
from albert_jax.train.config import CheckpointConfig, TrainConfig
from albert_jax.train.run import Run
from albert_jax.train.train_step import TrainState

_DIVERGED = (
  'training diverged; lower --config.train.learning_rate or raise --config.train.warmup_steps'
)


class RunConfig(Protocol):
  """What the loop reads of a pretraining or fine-tuning config record."""

  train: TrainConfig
  checkpoint: CheckpointConfig

  def to_json(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class RunResult:
  """Where a run stopped, what it last logged and where its outputs are."""

  step: int
  first_step: int  # The step it started from (== step: nothing to do).
  preempted: bool
  train_metrics: dict[str, float | None]  # The last logged training record.
  eval_metrics: dict[str, float]  # The last evaluation, without 'eval_'.
  workdir: str
  checkpoint_dir: str
  metrics_path: str
  tensorboard_dir: str


def train(
  run: Run,
  config: RunConfig,
  workdir: str,
  *,
  train_iter: Iterator[Any],
  fresh: Callable[[], TrainState],
  evaluate: Callable[[Any], dict[str, float]] | None,
  preemption: distributed.PreemptionWatcher,
  model_changes: Callable[[], str] = lambda: '',
) -> RunResult:
  """Trains `run` in `workdir` up to config.train.num_steps.

  Resumes from the workdir's latest checkpoint (moving `train_iter` there)
  or starts from `fresh()`; writes config.json. Every train.log_every steps
  the mean metrics since, with throughput, go to metrics.jsonl, TensorBoard
  and the console; every train.eval_every steps and at the last,
  `evaluate(params)` with 'eval_' prefixed. A checkpoint is saved every
  checkpoint.every_steps, at the last step and on a preemption notice.

  Args:
    evaluate: params -> metrics; None when there is no evaluation data.
    model_changes: 'model.hidden_size 64 -> 32, ...', named when the
      checkpoint is of another model (called only then).
  Raises:
    UsageError: a checkpoint of other shapes, or a non-finite loss (no state
      after it is saved).
  """
  os.makedirs(workdir, exist_ok=True)
  checkpoint_dir = os.path.join(workdir, checkpoint_lib.WORKDIR_SUBDIR)
  with contextlib.ExitStack() as cleanup:
    checkpointer = checkpoint_lib.Checkpointer(
      checkpoint_dir, every_steps=config.checkpoint.every_steps, keep=config.checkpoint.keep
    )
    cleanup.callback(checkpointer.close)
    cleanup.callback(checkpointer.wait)  # Runs first: pending saves land.
    state = _start_or_resume(run, checkpointer, train_iter, fresh, model_changes)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json())
    writer = cleanup.enter_context(
      contextlib.closing(metrics_lib.MetricsWriter(workdir, total_steps=config.train.num_steps))
    )
    loop = _Loop(run, config.train, checkpointer, writer, evaluate, preemption)
    state = loop.steps(state, train_iter)
    if evaluate is not None and not loop.scores and not loop.preempted:
      loop.scores = evaluate(state.params)  # Resumed at the end: report anyway.
  _log_end(loop, config.train.num_steps)
  return RunResult(
    step=loop.step,
    first_step=loop.first_step,
    preempted=loop.preempted,
    train_metrics=loop.last,
    eval_metrics=loop.scores,
    workdir=workdir,
    checkpoint_dir=checkpoint_dir,
    metrics_path=writer.jsonl_path,
    tensorboard_dir=writer.tensorboard_dir,
  )


def _log_end(loop: '_Loop', num_steps: int) -> None:
  """Says why the run stopped before its last step (preempted, or nothing to do)."""
  if loop.preempted:
    log(f'preempted: saved a checkpoint at step {loop.step}; rerun to resume')
  elif loop.step == loop.first_step:
    log(
      f'nothing to do: the checkpoint is at step {loop.step} of '
      f'{num_steps}; raise --config.train.num_steps to train on'
    )


def _start_or_resume(
  run: Run,
  checkpointer: checkpoint_lib.Checkpointer,
  train_iter: Iterator[Any],
  fresh: Callable[[], TrainState],
  model_changes: Callable[[], str],
) -> TrainState:
  latest = checkpointer.latest_step()
  if latest is None:
    return fresh()
  checkpointer.check_compatible(latest, run.initial.abstract, model_changes())
  state = checkpointer.restore(latest, run.initial.abstract, train_iter)
  log(f'resumed from {checkpointer.directory} at step {latest}')
  return state


class _Loop:
  """The stepping part of `train`: what it has logged so far, and where."""

  def __init__(
    self,
    run: Run,
    train_config: TrainConfig,
    checkpointer: checkpoint_lib.Checkpointer,
    writer: metrics_lib.MetricsWriter,
    evaluate: Callable[[Any], dict[str, float]] | None,
    preemption: distributed.PreemptionWatcher,
  ):
    self.run, self.config = run, train_config
    self.checkpointer, self.writer = checkpointer, writer
    self.evaluate, self.preemption = evaluate, preemption
    self.throughput = metrics_lib.Throughput(
      flops_per_step=train_config.batch_size * run.flops_per_example,
      tokens_per_step=train_config.batch_size * run.tokens_per_example,
      peak_flops=_peak_flops(run.mesh, train_config.peak_flops_per_device),
      total_steps=train_config.num_steps,
    )
    self.first_step = self.step = 0
    self.preempted = False
    self.last: dict[str, float | None] = {}
    self.scores: dict[str, float] = {}

  def steps(self, state: TrainState, train_iter: Iterator[Any]) -> TrainState:
    """Trains from `state` to the last step or a preemption."""
    config, run = self.config, self.run
    self.first_step = self.step = int(state.step)
    pending: list[dict[str, jax.Array]] = []  # Metrics not yet logged.
    with mesh_lib.activate(run.mesh, run.rules):
      while self.step < config.num_steps and not self.preempted:
        batch = pipeline.make_global_batch(next(train_iter), run.batch_sharding)
        state, metrics = run.train_step(state, batch)
        self.step += 1
        step, last_step = self.step, self.step == config.num_steps
        pending.append(metrics)
        if step == self.first_step + 1:  # Compiled; time from here.
          jax.block_until_ready(metrics)
          self.throughput.restart(step)
        if step % config.log_every == 0 or last_step:
          self.last = {**_mean_checked(pending, step), **self.throughput.measure(step)}
          self.writer.write(step, self.last)
          pending = []
        if self.evaluate is not None and (step % config.eval_every == 0 or last_step):
          self.scores = self.evaluate(state.params)
          self.writer.write(step, {f'eval_{k}': v for k, v in self.scores.items()})
          self.throughput.restart(step)
        self.preempted = self.preemption.should_stop(step)
        if self.checkpointer.should_save(step) or last_step or self.preempted:
          _mean_checked(pending, step)  # Never save a diverged state.
          self.checkpointer.save(step, state, train_iter)
          self.throughput.restart(step)
    return state


def log(message: str) -> None:
  """Prints `message` on process 0."""
  if jax.process_index() == 0:
    print(message, flush=True)


def _mean_checked(pending: list[Mapping[str, jax.Array]], step: int) -> dict[str, float]:
  """Mean of per-step metrics; UsageError naming the first step whose loss
  is not finite."""
  if not pending:
    return {}
  values = jax.device_get(pending)
  for offset, metrics in enumerate(values):
    if not np.isfinite(metrics['loss']):
      bad = step - len(values) + 1 + offset
      raise UsageError(
        f'loss is {metrics["loss"]} at step {bad}: {_DIVERGED} '
        '(the last checkpoint before it is kept)'
      )
  return {k: float(np.mean([m[k] for m in values])) for k in values[-1]}


def _peak_flops(mesh: jax.sharding.Mesh, override: float) -> float | None:
  """Peak FLOP/s of all devices of `mesh`, None when unknown."""
  peak = metrics_lib.peak_flops_per_device(mesh.devices.flat[0].device_kind, override)
  return None if peak is None else peak * mesh.size
