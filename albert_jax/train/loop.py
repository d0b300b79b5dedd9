"""The parts of a training run that pretraining and fine-tuning share.

  start_or_resume  the latest checkpoint of the workdir (refusing one of
                   another model), else a fresh state; writes config.json
  run              step, log, evaluate, checkpoint, preemption, until
                   train.num_steps
Each trainer (albert_jax/train/trainer.py, albert_jax/finetune/trainer.py)
brings its own data, model, objective and evaluation.
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from albert_jax.data import pipeline
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import distributed
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import metrics as metrics_lib
from albert_jax.errors import UsageError
from albert_jax.train.state import InitialState
from albert_jax.train.train_step import TrainState


def start_or_resume(
    config: ml_collections.ConfigDict, workdir: str, initial: InitialState,
    train_iter: Iterator[Any], fresh: Callable[[], TrainState], *,
    model_changes: Callable[[], str] = lambda: '',
) -> tuple[checkpoint_lib.Checkpointer, TrainState]:
  """(the checkpointer of `workdir`, the state to train from).

  Resuming restores the latest checkpoint and moves `train_iter` to its
  position; otherwise the state is `fresh()`. Writes `config` to
  workdir/config.json.

  Args:
    config: the run's config (its `checkpoint` block sets the checkpointer).
    workdir: run directory, shared by all processes.
    initial: the shapes and shardings the checkpoint is restored as.
    train_iter: the training data iterator, checkpointed with the state.
    fresh: the state of a run that starts here.
    model_changes: 'model.hidden_size 64 -> 32, ...', named when the
      checkpoint is of another model (read only then).
  Raises:
    UsageError: the checkpoint holds arrays of other shapes.
  """
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      every_steps=config.checkpoint.every_steps, keep=config.checkpoint.keep)
  latest = checkpointer.latest_step()
  if latest is not None:
    checkpointer.check_compatible(latest, initial.abstract, model_changes())
    state = checkpointer.restore(latest, initial.abstract, train_iter)
    log(f'resumed from {checkpointer.directory} at step {latest}')
  else:
    state = fresh()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return checkpointer, state


@dataclasses.dataclass(frozen=True)
class LoopResult:
  """Where the loop stopped and what it last logged."""
  step: int
  first_step: int  # The step it started from (== step: nothing to do).
  preempted: bool
  train_metrics: dict[str, float | None]  # The last logged training record.
  eval_metrics: dict[str, float]  # The last evaluation, without 'eval_'.
  metrics_path: str
  tensorboard_dir: str


def run(state: TrainState, train_step: Callable[..., Any], *,
        train_config: ml_collections.ConfigDict, workdir: str,
        mesh: jax.sharding.Mesh, rules: mesh_lib.LogicalRules,
        train_iter: Iterator[Any], checkpointer: checkpoint_lib.Checkpointer,
        preemption: distributed.PreemptionWatcher,
        flops_per_example: float, tokens_per_example: int,
        evaluate: Callable[[Any], dict[str, float]] | None,
        eval_at_end: bool, diverged: str) -> LoopResult:
  """Trains `state` up to train_config.num_steps; closes `checkpointer`.

  Each step feeds the next global batch of `train_iter`. Every
  train.log_every steps (and at the last) the mean metrics of the steps
  since, with throughput, go to workdir/metrics.jsonl, TensorBoard and the
  console; every train.eval_every steps `evaluate(params)` (metrics without
  'eval_') is logged with 'eval_' prefixed. A checkpoint is saved at the
  checkpointer's steps, at the last step and on a preemption notice, after
  which the loop stops.

  Args:
    flops_per_example, tokens_per_example: for throughput and MFU.
    evaluate: None when there is no evaluation data.
    eval_at_end: evaluate at the last step too, and at the end of a run
      resumed there, so that the result always holds an evaluation.
    diverged: what a non-finite loss means and what to do ('training
      diverged; lower --config.train.learning_rate').
  Raises:
    UsageError: a non-finite loss; no state after it is saved.
  """
  num_steps = train_config.num_steps
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  writer = metrics_lib.MetricsWriter(workdir, total_steps=num_steps)
  throughput = metrics_lib.Throughput(
      flops_per_step=train_config.batch_size * flops_per_example,
      tokens_per_step=train_config.batch_size * tokens_per_example,
      peak_flops=_peak_flops(mesh, train_config.peak_flops_per_device),
      total_steps=num_steps)
  first_step = int(state.step)
  pending: list[dict[str, jax.Array]] = []  # Metrics of the steps not yet logged.
  last: dict[str, float | None] = {}
  scores: dict[str, float] = {}
  step, preempted = first_step, False
  try:
    with mesh_lib.activate(mesh, rules):
      while step < num_steps and not preempted:
        batch = pipeline.make_global_batch(next(train_iter), batch_sharding)
        state, metrics = train_step(state, batch)
        step += 1
        pending.append(metrics)
        if step == first_step + 1:  # Compiled; time from here.
          jax.block_until_ready(metrics)
          throughput.restart(step)

        if step % train_config.log_every == 0 or step == num_steps:
          last = {**_mean_checked(pending, step, diverged),
                  **throughput.measure(step)}
          writer.write(step, last)
          pending = []

        if evaluate is not None and (step % train_config.eval_every == 0 or
                                     (eval_at_end and step == num_steps)):
          scores = evaluate(state.params)
          writer.write(step, {f'eval_{k}': v for k, v in scores.items()})
          throughput.restart(step)

        preempted = preemption.should_stop(step)
        if checkpointer.should_save(step) or step == num_steps or preempted:
          _mean_checked(pending, step, diverged)  # Never save a diverged state.
          checkpointer.save(step, state, train_iter)
          throughput.restart(step)
      if eval_at_end and evaluate is not None and not scores and not preempted:
        scores = evaluate(state.params)  # Resumed at the end: report anyway.
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  if preempted:
    log(f'preempted: saved a checkpoint at step {step}; rerun to resume')
  return LoopResult(step=step, first_step=first_step, preempted=preempted,
                    train_metrics=last, eval_metrics=scores,
                    metrics_path=writer.jsonl_path,
                    tensorboard_dir=writer.tensorboard_dir)


def log(message: str) -> None:
  """Prints `message` on process 0."""
  if jax.process_index() == 0:
    print(message, flush=True)


def _mean_checked(pending: list[Mapping[str, jax.Array]], step: int,
                  diverged: str) -> dict[str, float]:
  """Mean of per-step metrics; UsageError naming the first step whose loss
  is not finite."""
  if not pending:
    return {}
  values = jax.device_get(pending)
  for offset, metrics in enumerate(values):
    if not np.isfinite(metrics['loss']):
      bad = step - len(values) + 1 + offset
      raise UsageError(f'loss is {metrics["loss"]} at step {bad}: {diverged} '
                       '(the last checkpoint before it is kept)')
  return {k: float(np.mean([m[k] for m in values])) for k in values[-1]}


def _peak_flops(mesh: jax.sharding.Mesh, override: float) -> float | None:
  """Peak FLOP/s of all devices of `mesh`, None when unknown."""
  peak = metrics_lib.peak_flops_per_device(mesh.devices.flat[0].device_kind, override)
  return None if peak is None else peak * mesh.size
