"""Fine-tuning: `finetune(config, model_dir, workdir)`.

Reads top to bottom, like pretraining (albert_jax/train/trainer.py), whose
parts it runs: the sharded train step with the task's Objective, the
optimizer, mesh and logical sharding rules, the initial state
(train/state.py) and the loop (train/loop.py: orbax checkpoints of state +
grain iterator, the metrics writer, preemption handling).
  1. Config and mesh
  2. Model and data      the exported model in `model_dir`, its tokenizer,
                         the task's features (finetune/classification.py,
                         finetune/span_qa.py)
  3. State               abstract state and its shardings
  4. Start or resume     the exported backbone, a freshly initialised head
  5. Compiled steps      train step (donated state), predict step
  6. Loop                step, log, evaluate (the task's metrics), checkpoint
A workdir ends up holding:
  config.json  checkpoints/  metrics.jsonl  tensorboard/
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import export
from albert_jax import flops
from albert_jax.data import pipeline
from albert_jax.errors import DataError
from albert_jax.finetune import classification, span_qa
from albert_jax.finetune.task import Features, Task, num_rows
from albert_jax.train import distributed
from albert_jax.train import loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import optimizer as optimizer_lib
from albert_jax.train import state as state_lib
from albert_jax.train import train_step as step_lib
from albert_jax.errors import UsageError

TASKS = {'classification': classification.make_task,
         'span_qa': span_qa.make_task}


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
  """Where a run stopped, its last evaluation and where its outputs are."""
  step: int
  preempted: bool
  eval_metrics: dict[str, float]  # The last evaluation, without 'eval_'.
  workdir: str
  checkpoint_dir: str
  metrics_path: str


def finetune(config: ml_collections.ConfigDict, model_dir: str, workdir: str,
             *, devices: Sequence[jax.Device] | None = None) -> FinetuneResult:
  """Fine-tunes the exported model in `model_dir` on `config.task` in
  `workdir`, resuming from its latest checkpoint; evaluates at the end.

  Args:
    config: a config of experiments/configs/finetune.py.
    model_dir: a flax-format model written by `launch.export`.
    workdir: run directory, shared by all processes.
    devices: the mesh's devices (default: all devices of all processes).
  Raises:
    UsageError: an impossible config or model, a workdir holding another
      run's checkpoint, or a non-finite loss.
    DataError: unusable task data.
  """
  preemption = distributed.PreemptionWatcher()
  try:
    return _finetune(config, model_dir, workdir, devices, preemption)
  finally:
    preemption.close()


def _finetune(config: ml_collections.ConfigDict, model_dir: str,
              workdir: str, devices: Sequence[jax.Device] | None,
              preemption: distributed.PreemptionWatcher) -> FinetuneResult:
  # ---------------------------------------------------------------- 1. Config and mesh
  train_config, data_config = config.train, config.data
  if config.task not in TASKS:
    raise UsageError(f'unknown task {config.task!r}: choose one of '
                     f'{", ".join(TASKS)}')
  for key in ('batch_size', 'grad_accum_steps', 'num_steps', 'log_every',
              'eval_every'):
    if train_config[key] < 1:
      raise UsageError(f'train.{key} must be >= 1, got {train_config[key]}')
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  rules = tuple(config.sharding_rules)
  # Each process then takes its share of every batch (see _train_dataset).
  mesh_lib.check_batch_split(train_config.batch_size,
                             train_config.grad_accum_steps, mesh, rules,
                             factor=jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  loop.log(f'mesh {mesh_lib.describe(mesh)}; workdir {workdir}')

  # ---------------------------------------------------------------- 2. Model and data
  try:
    pretrained = export.load_pretrained(model_dir)
    model_config = dataclasses.replace(pretrained.config, **config.model)
  except (export.ExportError, ValueError) as e:
    raise UsageError(str(e)) from None
  if data_config.max_seq_length > model_config.max_position_embeddings:
    raise UsageError(
        f'data.max_seq_length={data_config.max_seq_length} exceeds the '
        f'model\'s max_position_embeddings={model_config.max_position_embeddings}')
  task = TASKS[config.task](data_config, pretrained.tokenizer, model_config)
  loop.log(f'{config.task}: {num_rows(task.train):,} training features, '
           f'{num_rows(task.eval) if task.eval else 0:,} eval features')
  train_iter = iter(_train_dataset(task.train, train_config.batch_size,
                                   data_config.seed))
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)

  # ---------------------------------------------------------------- 3. State
  optimizer, schedule = optimizer_lib.optimizer_and_schedule(train_config)
  initial = state_lib.initial_state(
      task.model, [jnp.zeros((1,) + task.train[k].shape[1:], task.train[k].dtype)
                   for k in task.model_inputs],
      optimizer=optimizer, seed=train_config.seed, mesh=mesh, rules=rules)

  # ---------------------------------------------------------------- 4. Start or resume
  def fresh() -> step_lib.TrainState:
    """The exported backbone, a freshly initialised head."""
    try:
      backbone = export.matching_params(
          pretrained.params['albert'], initial.abstract.params['albert'],
          source=model_dir)
    except export.ExportError as e:
      raise UsageError(str(e)) from None
    return initial.materialize({'albert': backbone})

  checkpointer, state = loop.start_or_resume(config, workdir, initial,
                                             train_iter, fresh)
  num_params = sum(math.prod(x.shape)
                   for x in jax.tree.leaves(initial.abstract.params))
  loop.log(f'model from {model_dir}: {num_params:,} parameters')

  # ---------------------------------------------------------------- 5. Compiled steps
  train_step = step_lib.jit_train_step(
      mesh, rules, initial.shardings, objective=task.objective,
      optimizer=optimizer, schedule=schedule,
      grad_accum_steps=train_config.grad_accum_steps)
  predict_step = jax.jit(
      lambda params, batch: (batch['row'], task.model.apply(
          {'params': params}, *(batch[k] for k in task.model_inputs))),
      in_shardings=(initial.shardings.params, batch_sharding),
      out_shardings=mesh_lib.replicated(mesh))

  def evaluate(params: Any) -> dict[str, float]:
    """The task's metrics on the eval features."""
    outputs = _predict(predict_step, params, task, train_config.batch_size,
                       batch_sharding)
    return task.score(outputs)

  # ---------------------------------------------------------------- 6. Loop
  result = loop.run(
      state, train_step, train_config=train_config, workdir=workdir,
      mesh=mesh, rules=rules, train_iter=train_iter, checkpointer=checkpointer,
      preemption=preemption,
      flops_per_example=flops.train_flops_per_example(
          model_config, data_config.max_seq_length, 0),
      tokens_per_example=data_config.max_seq_length,
      evaluate=None if task.eval is None else evaluate, eval_at_end=True,
      diverged='fine-tuning diverged; lower --config.train.learning_rate')
  return FinetuneResult(
      step=result.step, preempted=result.preempted,
      eval_metrics=result.eval_metrics, workdir=workdir,
      checkpoint_dir=checkpointer.directory, metrics_path=result.metrics_path)


class _Rows:
  """Random access to feature rows: {name: array row i}."""

  def __init__(self, features: Features):
    self._features = features
    self._len = num_rows(features)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._features.items()}


def _train_dataset(features: Features, global_batch_size: int,
                   seed: int) -> grain.IterDataset:
  """Endless, reshuffled every epoch; this process's share of each global
  batch. Checkpointable through grain's iterator state."""
  if num_rows(features) < global_batch_size:
    raise DataError(f'the training data has {num_rows(features)} features, '
                    f'fewer than one batch of {global_batch_size}: lower '
                    '--config.train.batch_size')
  ds = grain.MapDataset.source(_Rows(features)).shuffle(seed=seed).repeat()
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.batch(global_batch_size // jax.process_count(), drop_remainder=True)
  return ds.to_iter_dataset()


def _predict(predict_step, params: Any, task: Task, batch_size: int,
             batch_sharding: jax.sharding.Sharding) -> dict[str, np.ndarray]:
  """Model outputs for every eval feature, in order: {name: [F, ...]}."""
  features = {k: task.eval[k] for k in task.model_inputs}
  count = num_rows(features)
  # Pad to whole batches with copies of row 0, marked row -1.
  padded = -(-count // batch_size) * batch_size
  take = np.concatenate([np.arange(count), np.zeros(padded - count, int)])
  features = {k: v[take] for k, v in features.items()}
  features['row'] = np.where(np.arange(padded) < count, take, -1).astype(
      np.int32)
  # Process p feeds its slice of each global batch.
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  rows, outputs = [], []
  for start in range(0, padded, batch_size):
    chunk = {k: v[start + first:start + first + local]
             for k, v in features.items()}
    row, out = jax.device_get(predict_step(
        params, pipeline.make_global_batch(chunk, batch_sharding)))
    rows.append(row)
    outputs.append(out)
  rows = np.concatenate(rows)
  order = np.argsort(np.where(rows < 0, padded, rows), kind='stable')[:count]
  return {k: np.concatenate([o[k] for o in outputs])[order]
          for k in outputs[0]}
