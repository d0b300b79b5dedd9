"""The fine-tuning loop: `finetune(config, model_dir, workdir)`.

Reads top to bottom, like the pretraining loop (albert_jax/train/trainer.py),
whose parts it runs: the sharded train step with the task's Objective, the
optimizer, mesh and logical sharding rules, orbax checkpoints (state + grain
iterator), the metrics writer and preemption handling.
  1. Config and mesh
  2. Model and data      the exported model in `model_dir`, its tokenizer,
                         the task's features (finetune/classification.py,
                         finetune/span_qa.py)
  3. State               the exported backbone, a freshly initialised head
  4. Start or resume
  5. Compiled steps      train step (donated state), predict step
  6. Loop                step, log, evaluate (the task's metrics), checkpoint
A workdir ends up holding:
  config.json  checkpoints/  metrics.jsonl  tensorboard/
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import export
from albert_jax import flops
from albert_jax.data import pipeline
from albert_jax.data.errors import DataError
from albert_jax.finetune import classification, span_qa
from albert_jax.finetune.task import Features, Task, num_rows
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import distributed
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import optimizer as optimizer_lib
from albert_jax.train import train_step as step_lib
from albert_jax.train.errors import UsageError

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
  shards = mesh_lib.batch_shards(mesh, rules)
  batch_split = shards * train_config.grad_accum_steps * jax.process_count()
  if train_config.batch_size % batch_split:
    raise UsageError(
        f'train.batch_size={train_config.batch_size} does not split into '
        f'{train_config.grad_accum_steps} micro-batches over the {shards} '
        f'batch shards of mesh {mesh_lib.describe(mesh)}: use a multiple of '
        f'{batch_split}')
  os.makedirs(workdir, exist_ok=True)
  _log(f'mesh {mesh_lib.describe(mesh)}; workdir {workdir}')

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
  _log(f'{config.task}: {num_rows(task.train):,} training features, '
       f'{num_rows(task.eval) if task.eval else 0:,} eval features')
  train_iter = iter(_train_dataset(task.train, train_config.batch_size,
                                   data_config.seed))
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)

  # ---------------------------------------------------------------- 3. State
  schedule = optimizer_lib.learning_rate_schedule(
      train_config.learning_rate, train_config.warmup_steps,
      train_config.num_steps)
  optimizer = optimizer_lib.make_optimizer(train_config, schedule)
  example = {k: jnp.zeros((1,) + v.shape[1:], v.dtype)
             for k, v in task.train.items() if k in task.model_inputs}

  def init_state(rng: jax.Array, backbone: Any = None) -> step_lib.TrainState:
    """A fresh state, boxed with logical axes; `backbone` (unboxed) replaces
    the random 'albert' params."""
    params_rng, dropout_rng = jax.random.split(rng)
    params = task.model.init(
        params_rng, *(example[k] for k in task.model_inputs))['params']
    if backbone is not None:
      params = {**params, 'albert': jax.tree.map(
          lambda box, value: box.replace_boxed(value), params['albert'],
          backbone, is_leaf=lambda x: isinstance(x, nn.Partitioned))}
    return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=optimizer.init(params),
                               rng=dropout_rng)

  seed = jax.random.PRNGKey(train_config.seed)
  boxed = jax.eval_shape(init_state, seed)
  abstract_state, state_shardings = mesh_lib.sharded_abstract(boxed, mesh, rules)

  # ---------------------------------------------------------------- 4. Start or resume
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      every_steps=config.checkpoint.every_steps, keep=config.checkpoint.keep)
  latest = checkpointer.latest_step()
  if latest is not None:
    checkpointer.check_compatible(latest, abstract_state)
    state = checkpointer.restore(latest, abstract_state, train_iter)
    _log(f'resumed from {checkpointer.directory} at step {latest}')
  else:
    try:
      backbone = export.matching_params(
          pretrained.params['albert'], abstract_state.params['albert'],
          source=model_dir)
    except export.ExportError as e:
      raise UsageError(str(e)) from None
    # Created in place, each device computing only its own shards.
    state = jax.jit(lambda rng, albert: nn.unbox(init_state(rng, albert)),
                    out_shardings=state_shardings)(seed, backbone)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  num_params = sum(math.prod(x.shape)
                   for x in jax.tree.leaves(abstract_state.params))
  _log(f'model from {model_dir}: {num_params:,} parameters')

  # ---------------------------------------------------------------- 5. Compiled steps
  train_step = step_lib.jit_train_step(
      mesh, rules, state_shardings, objective=task.objective,
      optimizer=optimizer, schedule=schedule,
      grad_accum_steps=train_config.grad_accum_steps)
  predict_step = jax.jit(
      lambda params, batch: (batch['row'], task.model.apply(
          {'params': params}, *(batch[k] for k in task.model_inputs))),
      in_shardings=(state_shardings.params, batch_sharding),
      out_shardings=mesh_lib.replicated(mesh))

  def evaluate(params: Any) -> dict[str, float]:
    """The task's metrics on the eval features."""
    outputs = _predict(predict_step, params, task, train_config.batch_size,
                       batch_sharding)
    return task.score(outputs)

  # ---------------------------------------------------------------- 6. Loop
  num_steps = train_config.num_steps
  writer = metrics_lib.MetricsWriter(workdir, total_steps=num_steps)
  seq_len = data_config.max_seq_length
  peak = metrics_lib.peak_flops_per_device(
      mesh.devices.flat[0].device_kind, train_config.peak_flops_per_device)
  throughput = metrics_lib.Throughput(
      flops_per_step=train_config.batch_size * flops.train_flops_per_example(
          model_config, seq_len, 0),
      tokens_per_step=train_config.batch_size * seq_len,
      peak_flops=None if peak is None else peak * mesh.size,
      total_steps=num_steps)
  first_step = int(state.step)
  pending: list[dict[str, jax.Array]] = []  # Metrics of the steps not yet logged.
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
          writer.write(step, {**_mean_checked(pending, step),
                              **throughput.measure(step)})
          pending = []

        if task.eval is not None and (step % train_config.eval_every == 0
                                      or step == num_steps):
          scores = evaluate(state.params)
          writer.write(step, {f'eval_{k}': v for k, v in scores.items()})
          throughput.restart(step)

        preempted = preemption.should_stop(step)
        if checkpointer.should_save(step) or step == num_steps or preempted:
          _mean_checked(pending, step)  # Never save a diverged state.
          checkpointer.save(step, state, train_iter)
          throughput.restart(step)
      if not scores and task.eval is not None and not preempted:
        scores = evaluate(state.params)  # Resumed at the end: report anyway.
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  if preempted:
    _log(f'preempted: saved a checkpoint at step {step}; rerun to resume')
  return FinetuneResult(
      step=step, preempted=preempted, eval_metrics=scores, workdir=workdir,
      checkpoint_dir=checkpointer.directory, metrics_path=writer.jsonl_path)


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


def _mean_checked(pending: list[Mapping[str, jax.Array]],
                  step: int) -> dict[str, float]:
  """Mean of per-step metrics; UsageError naming the first step whose loss
  is not finite."""
  if not pending:
    return {}
  values = jax.device_get(pending)
  for offset, metrics in enumerate(values):
    if not np.isfinite(metrics['loss']):
      raise UsageError(
          f'loss is {metrics["loss"]} at step {step - len(values) + 1 + offset}'
          ': fine-tuning diverged; lower --config.train.learning_rate (the '
          'last checkpoint before it is kept)')
  return {k: float(np.mean([m[k] for m in values])) for k in values[-1]}


def _log(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)
