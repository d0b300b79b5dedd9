"""Fine-tuning: `finetune(config, pretrained, workdir)`.

Reads top to bottom, like pretraining (albert_jax/pretraining.py), whose
parts it runs: the run assembly (train/step.py: mesh, optimizer, state, steps)
and the loop (train/loop.py: checkpoints, metrics, preemption).
  1. Model and data      the loaded model (albert_jax/model_path.py), its
                         tokenizer, the task's features and classes
                         (finetune/classification.py, finetune/span_qa.py);
                         the training batches, each padded to its bucket
                         length, rows grouped by length (finetune/buckets.py)
  2. Run                 the task's model and objective on the mesh
  3. Initial params      the model's backbone; its head when it is one for
                         this task and these classes, else a fresh one
  (`prepare` runs steps 1-3: the benchmark times what it returns.)
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
from albert_jax.finetune import buckets, classification, span_qa
from albert_jax.finetune.config import FinetuneConfig, TaskDataConfig, describe_optimizer
from albert_jax.finetune.predict import Predictor
from albert_jax.finetune.task import Features, Task, num_rows
from albert_jax.model_path import MODEL_SUBDIR
from albert_jax.pretrained import Definition, Head, Pretrained
from albert_jax.train import distributed, loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import step as step_lib
from albert_jax.train import workdir as workdir_lib
from albert_jax.train.state import TrainState

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
    # ------------------------------------------------- 1.-3. Model and data, run, initial params
    prepared = prepare(config, pretrained, devices=devices, source=source)
    config, task, run = prepared.config, prepared.task, prepared.run
    loop.log(f'workdir {workdir}')
    train_iter = iter(grain.MapDataset.source(prepared.batches).to_iter_dataset())
    predictor = Predictor(
      run, task.model, task.model_inputs, bucket_multiple=config.data.bucket_multiple
    )

    # ---------------------------------------------------------------- 4. Loop
    with (
      workdir_lib.claim(workdir, config) as claimed,
      loop.Training(run, config, claimed, train_iter, preemption) as training,
    ):
      _record_model(
        workdir, Definition(prepared.model_config, pretrained.tokenizer, config.task, task.labels)
      )
      state = training.resumed if training.resumed is not None else prepared.fresh()
      for params in training.steps(state):
        if task.eval is not None:
          training.record_eval(task.score(predictor(params, task.eval, config.train.batch_size)))
    return training.result


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A fine-tuning run before its loop: what `finetune` trains, and what the
  benchmark (albert_jax/benchmark.py) times."""

  config: FinetuneConfig  # Its epochs turned into steps.
  model_config: ModelConfig
  task: Task
  batches: '_Batches'  # The training batches, by index.
  run: step_lib.Run
  pretrained: Pretrained
  source: str  # The model's name in log lines.

  def fresh(self) -> TrainState:
    """The initial state: the model's backbone, and its head or a fresh one."""
    initial = _initial_params(self.pretrained, self.config.task, self.task, self.run, self.source)
    return self.run.initial.materialize(initial)


def prepare(
  config: FinetuneConfig,
  pretrained: Pretrained,
  *,
  devices: Sequence[jax.Device] | None = None,
  source: str = 'the pretrained model',
) -> Prepared:
  """The task's data and model, the run on the mesh and its initial state
  (steps 1-3 of `finetune`, each said in a log line)."""
  # ---------------------------------------------------------------- 1. Model and data
  model_config = config.model_config(pretrained.config)
  task = _task(config, pretrained, model_config)
  config = _fitted(config, num_rows(task.train))
  config = dataclasses.replace(config, train=config.train.learning_rate_for(model_config))
  loop.log(f'optimizer: {describe_optimizer(config.train)}')
  batches = _train_batches(task.train, config)

  # ---------------------------------------------------------------- 2. Run
  run = _run(config, task, model_config, devices, batches.mean_length)
  loop.log(f'mesh {mesh_lib.describe(run.mesh)}')
  loop.log(f'model from {source}: {run.num_params:,} parameters')

  return Prepared(config, model_config, task, batches, run, pretrained, source)


def _bucketing(data: TaskDataConfig) -> str:
  """How batches are padded, e.g. 'multiples of 16 up to 128, rows grouped by
  length in groups of 50 batches'."""
  if not data.bucket_multiple:
    return f'max_seq_length {data.max_seq_length}'
  grouped = (
    f', rows grouped by length in groups of {data.group_batches} batches'
    if data.group_batches > 1
    else ''
  )
  return f'multiples of {data.bucket_multiple} up to {data.max_seq_length}{grouped}'


def _fitted(config: FinetuneConfig, num_examples: int) -> FinetuneConfig:
  """`config` with its epochs turned into steps, now that the data size is
  known (said in one log line), and its log cadence at most a tenth of the
  run, so that a short run still shows its progress."""
  train = config.train.fitted(num_examples)
  log_every = min(train.log_every, max(1, train.num_steps // 10))
  if log_every != train.log_every:
    loop.log(f'logging every {log_every} steps (a tenth of the run)')
    train = dataclasses.replace(train, log_every=log_every)
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
  mean_length: float,
) -> step_lib.Run:
  """The task's model and objective on the mesh; each process feeds an equal
  share of every micro-batch. Throughput and the backend's micro-batches
  follow the batches' mean padded length `mean_length`."""
  return step_lib.assemble(
    task.model,
    [jnp.zeros((1,) + task.train[k].shape[1:], task.train[k].dtype) for k in task.model_inputs],
    task.objective,
    mesh=mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices),
    rules=config.sharding_rules,
    train=config.train,
    batch_factor=jax.process_count(),
    flops_per_example=flops.train_flops_per_example(model_config, round(mean_length), 0),
    tokens_per_example=round(mean_length),
  )


class _Batches:
  """Random access to the endless stream of training batches, each cut to its
  bucket length (finetune/buckets.py): batch i is batch i % P of epoch i // P
  (P batches an epoch), this process's share of its rows. Checkpointable
  through grain's iterator state (the index), so a resumed run goes on with
  the same batches."""

  def __init__(self, features: Features, batch_size: int, data: TaskDataConfig):
    self._features, self._batch_size, self._data = features, batch_size, data
    self._lengths = buckets.lengths(features)
    self.per_epoch = num_rows(features) // batch_size
    self._epoch: tuple[int, np.ndarray] | None = None
    self.mean_length = float(data.max_seq_length)  # Of the run's batches, padded.

  def __len__(self) -> int:
    return self.per_epoch * _MAX_EPOCHS

  def rows(self, index: int) -> np.ndarray:
    """The rows [batch_size] of batch `index`."""
    epoch, i = divmod(index, self.per_epoch)
    cached = self._epoch
    if cached is None or cached[0] != epoch:
      cached = self._epoch = (
        epoch,
        buckets.grouped_batches(
          self._lengths,
          self._batch_size,
          seed=self._data.seed,
          epoch=epoch,
          group_batches=self._data.group_batches,
        ),
      )
    return cached[1][i]

  def padded_lengths(self, first: int, stop: int) -> np.ndarray:
    """The padded length of each of batches first..stop-1 [stop - first]."""
    multiple, max_seq_length = self._data.bucket_multiple, self._data.max_seq_length
    longest = [self._lengths[self.rows(i)].max() for i in range(first, stop)]
    return np.asarray([buckets.bucket_length(int(n), multiple, max_seq_length) for n in longest])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    rows = self.rows(index)
    batch = buckets.trim(
      {k: v[rows] for k, v in self._features.items()}, self._data.bucket_multiple
    )
    local = self._batch_size // jax.process_count()
    first = jax.process_index() * local
    return {k: v[first : first + local] for k, v in batch.items()}


# Epochs the stream holds: more than any run takes.
_MAX_EPOCHS = 10**9


def _train_batches(features: Features, config: FinetuneConfig) -> _Batches:
  """The training batches, with the mean padded length of the run's; says in
  one line how they are padded and how many shapes the run compiles.
  DataError when the data hold less than one batch."""
  batch_size = config.train.batch_size
  if num_rows(features) < batch_size:
    raise DataError(
      f'the training data has {num_rows(features)} features, '
      f'fewer than one batch of {batch_size}: lower --config.train.batch_size'
    )
  batches = _Batches(features, batch_size, config.data)
  lengths = batches.padded_lengths(0, config.train.num_steps)
  batches.mean_length = float(lengths.mean())
  shapes = sorted(set(lengths.tolist()))
  loop.log(
    f'batches padded to {_bucketing(config.data)}: {len(shapes)} compiled train shapes '
    f'(seq {", ".join(map(str, shapes))}), {batches.mean_length:.1f} tokens a row on average'
  )
  return batches
