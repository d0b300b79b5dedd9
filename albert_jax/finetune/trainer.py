"""Fine-tuning: `finetune(config, pretrained, workdir)`.

Reads top to bottom, like pretraining (albert_jax/pretraining.py), whose
parts it runs: the run assembly (train/step.py: mesh, optimizer, state, steps)
and the loop (train/loop.py: checkpoints, metrics, preemption).
  1. Model and data      the loaded model (albert_jax/model_path.py), its
                         tokenizer, the task's features and classes
                         (finetune/classification.py, finetune/span_qa.py)
  2. Run                 the task's model and objective on the mesh
  3. Initial params      the model's backbone; its head when it is one for
                         this task and these classes, else a fresh one
  4. Loop                step, log, evaluate (the task's metrics through
                         finetune/predict.py), checkpoint
A workdir ends up holding:
  config.json  model/  checkpoints/  metrics.jsonl  tensorboard/
where model/ records the model without params (config, tokenizer, task,
classes: pretrained.save_definition), so that a checkpoint reads back as a
model (albert_jax/model_path.py).
"""

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax import flops
from albert_jax import pretrained as pretrained_lib
from albert_jax.config import ModelConfig, check_sequence_fits
from albert_jax.errors import DataError, UsageError
from albert_jax.finetune import classification, span_qa
from albert_jax.finetune.config import FinetuneConfig
from albert_jax.finetune.predict import Predictor
from albert_jax.finetune.task import Features, Task, num_rows
from albert_jax.model_path import MODEL_SUBDIR
from albert_jax.pretrained import Definition, Head, Pretrained
from albert_jax.train import distributed, loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import step as step_lib
from albert_jax.train import workdir as workdir_lib

TASKS = {'classification': classification.make_task, 'span_qa': span_qa.make_task}


def finetune(
  config: FinetuneConfig,
  pretrained: Pretrained,
  workdir: str,
  *,
  devices: Sequence[jax.Device] | None = None,
  source: str = 'the pretrained model',
) -> loop.RunResult:
  """Fine-tunes `pretrained` on `config.task` in `workdir`, resuming from
  its latest checkpoint; evaluates at the end.

  Args:
    config: e.g. `FinetuneConfig.from_config(finetune.get_config('sst2'))`.
    pretrained: the model, e.g. `model_path.load(path).pretrained`.
    workdir: run directory, shared by all processes.
    devices: the mesh's devices (default: all devices of all processes).
    source: the model's name in log lines (model_path.Loaded.description).
  Raises:
    AlbertError: an impossible config or model, unusable task data, a workdir
      holding another run's checkpoint, or a non-finite loss.
  """
  with distributed.PreemptionWatcher() as preemption:
    # ---------------------------------------------------------------- 1. Model and data
    model_config = config.model_config(pretrained.config)
    task = _task(config, pretrained, model_config)
    config = _fitted(config, num_rows(task.train))

    # ---------------------------------------------------------------- 2. Run
    run = _run(config, task, model_config, devices)
    loop.log(f'mesh {mesh_lib.describe(run.mesh)}; workdir {workdir}')
    loop.log(f'model from {source}: {run.num_params:,} parameters')
    train_iter = iter(_train_dataset(task.train, config.train.batch_size, config.data.seed))

    # ---------------------------------------------------------------- 3. Initial params
    with (
      workdir_lib.claim(workdir, config) as claimed,
      loop.Training(run, config, claimed, train_iter, preemption) as training,
    ):
      _record_model(
        workdir, Definition(model_config, pretrained.tokenizer, config.task, task.labels)
      )
      state = training.resumed
      if state is None:  # The model's backbone, and its head or a fresh one.
        initial = _initial_params(pretrained, config.task, task, run, source)
        state = run.initial.materialize(initial)

      # ---------------------------------------------------------------- 4. Loop
      predictor = Predictor(run, task.model, task.model_inputs)
      for params in training.steps(state):
        if task.eval is not None:
          training.record_eval(task.score(predictor(params, task.eval, config.train.batch_size)))
    return training.result


def _fitted(config: FinetuneConfig, num_examples: int) -> FinetuneConfig:
  """`config` with its epochs turned into steps, now that the data size is
  known (said in one log line)."""
  train = config.train.fitted(num_examples)
  if config.train.num_epochs or config.train.warmup_fraction:
    loop.log(
      f'{config.train.num_epochs or train.num_steps * train.batch_size / num_examples:g} '
      f'epochs of {num_examples:,} features in batches of {train.batch_size}: '
      f'{train.num_steps:,} steps, {train.warmup_steps:,} of warmup'
    )
  return dataclasses.replace(config, train=train)


def _task(config: FinetuneConfig, pretrained: Pretrained, model_config: ModelConfig) -> Task:
  """The task's features and model; the classes in the order of the
  model's own head for this task, if it has one with the same classes."""
  check_sequence_fits(config.data.max_seq_length, model_config)
  head = pretrained.head
  known = head.labels if head is not None and head.task == config.task else ()
  task = TASKS[config.task](config.data, pretrained.tokenizer, model_config, known)
  loop.log(
    f'{config.task}: {num_rows(task.train):,} training features, '
    f'{num_rows(task.eval) if task.eval else 0:,} eval features'
  )
  return task


def _initial_params(
  pretrained: Pretrained, task_name: str, task: Task, run: step_lib.Run, source: str
) -> dict[str, Any]:
  """{'albert': the backbone} and, when it fits the task, the model's head
  (says which in one log line)."""
  abstract = run.initial.abstract.params
  params = {
    'albert': pretrained_lib.matching_params(
      pretrained.params['albert'], abstract['albert'], source=source
    )
  }
  head, classes = pretrained.head, ', '.join(task.labels)
  what = f'{task_name} head' + (f' ({classes})' if classes else '')
  if _head_fits(head, task_name, task.labels):
    params.update(
      pretrained_lib.matching_params(
        head.params, {k: v for k, v in abstract.items() if k != 'albert'}, source=source
      )
    )
    loop.log(f'starting from the {what} of {source}')
    return params
  if head is None:
    why = 'it has none'
  elif head.task != task_name:
    why = f'it has a {head.task} head'
  else:
    why = f'its head is for other classes ({", ".join(head.labels)})'
  loop.log(f'a fresh {what}: {source} has no head for this task ({why})')
  return params


def _head_fits(head: Head | None, task_name: str, labels: Sequence[str]) -> bool:
  """Whether `head` predicts `task_name` with classes `labels`; Hugging
  Face's default names LABEL_0, LABEL_1, ... match any classes by count."""
  if head is None or head.task != task_name:
    return False
  if tuple(head.labels) == tuple(labels):
    return True
  return len(head.labels) == len(labels) and all(
    re.fullmatch(f'LABEL_{i}', label) for i, label in enumerate(head.labels)
  )


def _record_model(workdir: str, definition: Definition) -> None:
  """Writes WORKDIR/model (process 0) on the first start; a rerun with
  another model or other classes is refused."""
  path = os.path.join(workdir, MODEL_SUBDIR)
  if jax.process_index() != 0:
    return
  if not os.path.isdir(path):
    pretrained_lib.save_definition(definition, path)
    return
  recorded = pretrained_lib.load_definition(path)
  if (
    recorded.tokenizer.fingerprint != definition.tokenizer.fingerprint
    or recorded.task != definition.task
    or tuple(recorded.labels) != tuple(definition.labels)
  ):
    raise UsageError(
      f'{workdir} fine-tunes another model, task or classes ({path}: {recorded.task}, '
      f'classes {", ".join(recorded.labels) or "none"}): use a new --workdir'
    )


def _run(
  config: FinetuneConfig,
  task: Task,
  model_config: ModelConfig,
  devices: Sequence[jax.Device] | None,
) -> step_lib.Run:
  """The task's model and objective on the mesh; each process feeds an equal
  share of every micro-batch."""
  return step_lib.assemble(
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
