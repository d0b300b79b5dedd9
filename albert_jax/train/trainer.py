"""Pretraining: `train(config, workdir)`.

Reads top to bottom:
  1. Config and mesh      validate, build the device mesh
  2. Data                 tokenizer, corpus, per-process train / eval streams
  3. Model and optimizer  abstract state, its shardings from the logical rules
                          (train/state.py)
  4. Start or resume      refuse another model's checkpoint, restore, or init
                          (random, or config.init_from's exported params)
  5. Compiled steps       train step (donated state) and eval step
  6. Loop                 step, log, evaluate, checkpoint, preemption
                          (train/loop.py, shared with fine-tuning)
A workdir ends up holding:
  config.json  checkpoints/  metrics.jsonl  tensorboard/  vocab/ (if trained)
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import multihost_utils

from albert_jax import export
from albert_jax import flops
from albert_jax.config import ModelConfig
from albert_jax.data import pipeline
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import distributed
from albert_jax.train import loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import optimizer as optimizer_lib
from albert_jax.train import state as state_lib
from albert_jax.train import train_step as step_lib
from albert_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """Where a run stopped and where its outputs are."""
  step: int
  preempted: bool
  metrics: dict[str, float | None]  # The last logged training record.
  workdir: str
  checkpoint_dir: str
  metrics_path: str
  tensorboard_dir: str


def train(config: ml_collections.ConfigDict, workdir: str, *,
          devices: Sequence[jax.Device] | None = None) -> TrainResult:
  """Pretrains `config` in `workdir`, resuming from its latest checkpoint.

  A preemption notice (SIGTERM) from the start on stops the run after the next
  step, with a checkpoint.

  Args:
    config: a config of experiments/configs/pretrain.py.
    workdir: run directory, shared by all processes.
    devices: the mesh's devices (default: all devices of all processes).
  Raises:
    UsageError: an impossible config, a workdir holding another model's
      checkpoint, or a non-finite loss.
  """
  preemption = distributed.PreemptionWatcher()
  try:
    return _train(config, workdir, devices, preemption)
  finally:
    preemption.close()


def _train(config: ml_collections.ConfigDict, workdir: str,
           devices: Sequence[jax.Device] | None,
           preemption: distributed.PreemptionWatcher) -> TrainResult:
  # ---------------------------------------------------------------- 1. Config and mesh
  try:
    model_config = ModelConfig.from_config(config.model)
  except ValueError as e:
    raise UsageError(str(e)) from e
  train_config, data_config = config.train, config.data
  _check_train_config(config, model_config)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  rules = tuple(config.sharding_rules)
  mesh_lib.check_batch_split(train_config.batch_size,
                             train_config.grad_accum_steps, mesh, rules)
  os.makedirs(workdir, exist_ok=True)
  loop.log(f'mesh {mesh_lib.describe(mesh)}; workdir {workdir}')

  # ---------------------------------------------------------------- 2. Data
  init_from = config.get('init_from', '')
  if init_from and not data_config.vocab:
    # A model to start from brings its vocabulary.
    data_config = data_config.copy_and_resolve_references()
    data_config.vocab = init_from
  # Process 0 trains the tokenizer (if needed) before the others load it.
  if jax.process_index() == 0:
    tokenizer = pipeline.load_or_train_tokenizer(
        data_config, vocab_size=model_config.vocab_size, workdir=workdir)
  _barrier('tokenizer')
  if jax.process_index() != 0:
    tokenizer = pipeline.load_or_train_tokenizer(
        data_config, vocab_size=model_config.vocab_size, workdir=workdir)
  corpus = pipeline.load_corpus(data_config, tokenizer)
  train_data = pipeline.make_pretraining_dataset(
      corpus.train, data_config, tokenizer,
      global_batch_size=train_config.batch_size, shuffle=True)
  eval_data = None if corpus.eval is None else pipeline.make_pretraining_dataset(
      corpus.eval, data_config, tokenizer,
      global_batch_size=train_config.batch_size, shuffle=False)
  train_iter = iter(train_data)
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)

  # ---------------------------------------------------------------- 3. Model and optimizer
  model = AlbertForPreTraining(model_config)
  optimizer, schedule = optimizer_lib.optimizer_and_schedule(train_config)
  initial = state_lib.initial_state(
      model, state_lib.pretraining_inputs(data_config.max_seq_length,
                                          data_config.max_predictions_per_seq),
      optimizer=optimizer, seed=train_config.seed, mesh=mesh, rules=rules)

  # ---------------------------------------------------------------- 4. Start or resume
  def fresh() -> step_lib.TrainState:
    state = initial.materialize(_initial_params(
        init_from, model_config, tokenizer, initial.abstract.params))
    if init_from:
      loop.log(f'started from the params of {init_from}')
    return state

  config_path = os.path.join(workdir, 'config.json')
  checkpointer, state = loop.start_or_resume(
      config, workdir, initial, train_iter, fresh,
      model_changes=lambda: _model_changes(config_path, config))
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(initial.abstract.params))
  loop.log(f'model {config.get("preset", "")}: {num_params:,} parameters')

  # ---------------------------------------------------------------- 5. Compiled steps
  objective = step_lib.PretrainingObjective(model, data_config.sentence_objective)
  train_step = step_lib.jit_train_step(
      mesh, rules, initial.shardings, objective=objective, optimizer=optimizer,
      schedule=schedule, grad_accum_steps=train_config.grad_accum_steps)
  eval_step = step_lib.jit_eval_step(mesh, rules, initial.shardings.params,
                                     objective=objective)

  def evaluate(params: Any) -> dict[str, float]:
    """Mean metrics over the first eval_steps batches of the held-out split."""
    eval_iter, sums = iter(eval_data), None
    for _ in range(train_config.eval_steps):
      batch_sums = eval_step(params, pipeline.make_global_batch(next(eval_iter),
                                                                batch_sharding))
      sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
    return _floats(objective.summarize(sums))

  # ---------------------------------------------------------------- 6. Loop
  result = loop.run(
      state, train_step, train_config=train_config, workdir=workdir,
      mesh=mesh, rules=rules, train_iter=train_iter, checkpointer=checkpointer,
      preemption=preemption,
      flops_per_example=flops.train_flops_per_example(
          model_config, data_config.max_seq_length,
          data_config.max_predictions_per_seq),
      tokens_per_example=data_config.max_seq_length,
      evaluate=None if eval_data is None else evaluate, eval_at_end=False,
      diverged='training diverged; lower --config.train.learning_rate or '
               'raise --config.train.warmup_steps')
  if not result.preempted and result.step == result.first_step:
    loop.log(f'nothing to do: the checkpoint is at step {result.step} of '
             f'{train_config.num_steps}; raise --config.train.num_steps to train on')
  return TrainResult(
      step=result.step, preempted=result.preempted, metrics=result.train_metrics,
      workdir=workdir, checkpoint_dir=os.path.join(workdir, 'checkpoints'),
      metrics_path=result.metrics_path, tensorboard_dir=result.tensorboard_dir)


def _check_train_config(config: ml_collections.ConfigDict,
                        model_config: ModelConfig) -> None:
  train, data = config.train, config.data
  for key in ('batch_size', 'grad_accum_steps', 'num_steps', 'log_every',
              'eval_every', 'eval_steps'):
    if train[key] < 1:
      raise UsageError(f'train.{key} must be >= 1, got {train[key]}')
  if train.optimizer not in ('lamb', 'adamw'):
    raise UsageError(f"unknown train.optimizer {train.optimizer!r}: "
                     "choose 'lamb' or 'adamw'")
  if data.sentence_objective not in ('sop', 'nsp', 'none'):
    raise UsageError(f'unknown data.sentence_objective {data.sentence_objective!r}: '
                     "choose 'sop', 'nsp' or 'none'")
  if data.max_seq_length > model_config.max_position_embeddings:
    raise UsageError(
        f'data.max_seq_length={data.max_seq_length} exceeds '
        f'model.max_position_embeddings={model_config.max_position_embeddings}')
  if train.batch_size % jax.process_count():
    raise UsageError(f'train.batch_size={train.batch_size} does not split over '
                     f'{jax.process_count()} processes')


def _initial_params(init_from: str, model_config: ModelConfig,
                    tokenizer: Tokenizer, abstract_params: Any) -> Any:
  """The params of the exported model `init_from` (None when empty), checked
  against this run's model config, vocabulary and param shapes."""
  if not init_from:
    return None
  try:
    pretrained = export.load_pretrained(init_from)
    export.check_architecture(pretrained.config, model_config, source=init_from)
    params = export.matching_params(pretrained.params, abstract_params,
                                    source=init_from)
  except export.ExportError as e:
    raise UsageError(str(e)) from None
  if pretrained.tokenizer.fingerprint != tokenizer.fingerprint:
    raise UsageError(f'data.vocab is not the vocabulary of init_from {init_from}: '
                     'leave --config.data.vocab empty to use the model\'s own')
  return params


def _model_changes(saved_config_path: str, config: ml_collections.ConfigDict) -> str:
  """'model.hidden_size 64 -> 32, ...': model keys changed since the saved config."""
  if not os.path.exists(saved_config_path):
    return ''
  with open(saved_config_path) as f:
    saved = json.load(f).get('model', {})
  return ', '.join(f'model.{k} {saved[k]} -> {v}' for k, v in config.model.items()
                   if k in saved and saved[k] != v)


def _floats(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
