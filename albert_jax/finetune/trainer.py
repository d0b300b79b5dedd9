"""Fine-tuning: `finetune(config, model_dir, workdir)`.

Reads top to bottom, like pretraining (albert_jax/train/trainer.py), whose
parts it runs: the run assembly (train/run.py: mesh, optimizer, state, steps)
and the loop (train/loop.py: checkpoints, metrics, preemption).
  1. Model and data      the exported model in `model_dir`, its tokenizer,
                         the task's features (finetune/classification.py,
                         finetune/span_qa.py)
  2. Run                 the task's model and objective on the mesh
  3. Initial params      the exported backbone, a freshly initialised head
  4. Loop                step, log, evaluate (the task's metrics), checkpoint
A workdir ends up holding:
  config.json  checkpoints/  metrics.jsonl  tensorboard/
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax import flops
from albert_jax import pretrained as pretrained_lib
from albert_jax.config import ModelConfig, check_sequence_fits
from albert_jax.data import pipeline
from albert_jax.errors import DataError
from albert_jax.finetune import classification, span_qa
from albert_jax.finetune.config import FinetuneConfig
from albert_jax.finetune.task import Features, Task, num_rows
from albert_jax.train import distributed, loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import run as run_lib
from albert_jax.train import train_step as step_lib
from albert_jax.train import workdir as workdir_lib

TASKS = {'classification': classification.make_task, 'span_qa': span_qa.make_task}


def finetune(
  config: FinetuneConfig,
  model_dir: str,
  workdir: str,
  *,
  devices: Sequence[jax.Device] | None = None,
) -> loop.RunResult:
  """Fine-tunes the exported model in `model_dir` on `config.task` in
  `workdir`, resuming from its latest checkpoint; evaluates at the end.

  Args:
    config: e.g. `FinetuneConfig.from_config(finetune.get_config('sst2'))`.
    model_dir: a flax-format model written by `launch.export`.
    workdir: run directory, shared by all processes.
    devices: the mesh's devices (default: all devices of all processes).
  Raises:
    AlbertError: an impossible config or model, unusable task data, a workdir
      holding another run's checkpoint, or a non-finite loss.
  """
  with distributed.PreemptionWatcher() as preemption:
    # ---------------------------------------------------------------- 1. Model and data
    pretrained = pretrained_lib.load_pretrained(model_dir)
    model_config = config.model_config(pretrained.config)
    check_sequence_fits(config.data.max_seq_length, model_config)
    task = TASKS[config.task](config.data, pretrained.tokenizer, model_config)
    loop.log(
      f'{config.task}: {num_rows(task.train):,} training features, '
      f'{num_rows(task.eval) if task.eval else 0:,} eval features'
    )

    # ---------------------------------------------------------------- 2. Run
    run = _run(config, task, model_config, devices)
    loop.log(f'mesh {mesh_lib.describe(run.mesh)}; workdir {workdir}')
    loop.log(f'model from {model_dir}: {run.num_params:,} parameters')
    train_iter = iter(_train_dataset(task.train, config.train.batch_size, config.data.seed))

    # ---------------------------------------------------------------- 3. Initial params
    def fresh() -> step_lib.TrainState:
      """The exported backbone, a freshly initialised head."""
      backbone = pretrained_lib.matching_params(
        pretrained.params['albert'], run.initial.abstract.params['albert'], source=model_dir
      )
      return run.initial.materialize({'albert': backbone})

    predict = _predict_step(run, task)
    evaluate = lambda params: task.score(
      _predict(predict, params, task, config.train.batch_size, run.batch_sharding)
    )

    # ---------------------------------------------------------------- 4. Loop
    with workdir_lib.claim(workdir, config) as claimed:
      return loop.train(
        run,
        config,
        claimed,
        train_iter=train_iter,
        fresh=fresh,
        evaluate=None if task.eval is None else evaluate,
        preemption=preemption,
      )


def _run(
  config: FinetuneConfig,
  task: Task,
  model_config: ModelConfig,
  devices: Sequence[jax.Device] | None,
) -> run_lib.Run:
  """The task's model and objective on the mesh; each process feeds an equal
  share of every micro-batch."""
  return run_lib.assemble(
    task.model,
    [jnp.zeros((1,) + task.train[k].shape[1:], task.train[k].dtype) for k in task.model_inputs],
    task.objective,
    mesh=mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices),
    rules=config.sharding_rules,
    train=config.train,
    batch_factor=jax.process_count(),
    flops_per_example=flops.train_flops_per_example(model_config, config.data.max_seq_length, 0),
    tokens_per_example=config.data.max_seq_length,
  )


def _predict_step(run: run_lib.Run, task: Task) -> Callable[..., Any]:
  """(params, batch) -> (batch['row'], the model's outputs), on the mesh."""
  return jax.jit(
    lambda params, batch: (
      batch['row'],
      task.model.apply({'params': params}, *(batch[k] for k in task.model_inputs)),
    ),
    in_shardings=(run.initial.shardings.params, run.batch_sharding),
    out_shardings=mesh_lib.replicated(run.mesh),
  )


class _Rows:
  """Random access to feature rows: {name: array row i}."""

  def __init__(self, features: Features):
    self._features = features
    self._len = num_rows(features)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._features.items()}


def _train_dataset(features: Features, global_batch_size: int, seed: int) -> grain.IterDataset:
  """Endless, reshuffled every epoch; this process's share of each global
  batch. Checkpointable through grain's iterator state."""
  if num_rows(features) < global_batch_size:
    raise DataError(
      f'the training data has {num_rows(features)} features, '
      f'fewer than one batch of {global_batch_size}: lower '
      '--config.train.batch_size'
    )
  ds = grain.MapDataset.source(_Rows(features)).shuffle(seed=seed).repeat()
  ds = ds[jax.process_index() :: jax.process_count()]
  ds = ds.batch(global_batch_size // jax.process_count(), drop_remainder=True)
  return ds.to_iter_dataset()


def _predict(
  predict_step, params: Any, task: Task, batch_size: int, batch_sharding: jax.sharding.Sharding
) -> dict[str, np.ndarray]:
  """Model outputs for every eval feature, in order: {name: [F, ...]}."""
  features = {k: task.eval[k] for k in task.model_inputs}
  count = num_rows(features)
  # Pad to whole batches with copies of row 0, marked row -1.
  padded = -(-count // batch_size) * batch_size
  take = np.concatenate([np.arange(count), np.zeros(padded - count, int)])
  features = {k: v[take] for k, v in features.items()}
  features['row'] = np.where(np.arange(padded) < count, take, -1).astype(np.int32)
  # Process p feeds its slice of each global batch.
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  rows, outputs = [], []
  for start in range(0, padded, batch_size):
    chunk = {k: v[start + first : start + first + local] for k, v in features.items()}
    row, out = jax.device_get(
      predict_step(params, pipeline.make_global_batch(chunk, batch_sharding))
    )
    rows.append(row)
    outputs.append(out)
  rows = np.concatenate(rows)
  order = np.argsort(np.where(rows < 0, padded, rows), kind='stable')[:count]
  return {k: np.concatenate([o[k] for o in outputs])[order] for k in outputs[0]}
