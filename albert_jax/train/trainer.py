"""Pretraining: `train(config, workdir)`.

Reads top to bottom:
  1. Run                  mesh, model, objective, optimizer, state and steps
                          (train/run.py): every impossible setting is refused
                          here, before anything is written; then the workdir
                          is claimed (train/workdir.py: one writer, same model)
  2. Data                 tokenizer, corpus, per-process train / eval streams
  3. Initial params       random, or config.init_from's exported params
  4. Loop                 resume, step, log, evaluate, checkpoint, preemption
                          (train/loop.py, shared with fine-tuning)
A workdir ends up holding:
  config.json  resumes.jsonl  lock  checkpoints/  metrics.jsonl  tensorboard/
  vocab/ (if trained)
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
from jax.experimental import multihost_utils

from albert_jax import flops
from albert_jax import pretrained as pretrained_lib
from albert_jax.data import pipeline
from albert_jax.data.config import DataConfig
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import UsageError
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import distributed, loop
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import run as run_lib
from albert_jax.train import state as state_lib
from albert_jax.train import train_step as step_lib
from albert_jax.train import workdir as workdir_lib
from albert_jax.train.config import PretrainConfig


def train(
  config: PretrainConfig, workdir: str, *, devices: Sequence[jax.Device] | None = None
) -> loop.RunResult:
  """Pretrains `config` in `workdir`, resuming from its latest checkpoint.

  A preemption notice (SIGTERM) stops it after the next step, checkpointed.

  Args:
    config: the run, e.g. `PretrainConfig.from_config(pretrain.get_config('tiny'))`.
    workdir: run directory, shared by all processes.
    devices: the mesh's devices (default: all devices of all processes).
  Raises:
    AlbertError: an impossible config, unusable data, a workdir holding
      another model's checkpoint, or a non-finite loss.
  """
  # ---------------------------------------------------------------- 1. Run
  run = _run(config, devices)
  with (
    distributed.PreemptionWatcher() as preemption,
    workdir_lib.claim(workdir, config) as claimed,
  ):
    loop.log(f'mesh {mesh_lib.describe(run.mesh)}; workdir {workdir}')

    # ---------------------------------------------------------------- 2. Data
    data = config.data
    if config.init_from and not data.vocab:
      data = dataclasses.replace(data, vocab=config.init_from)  # Its own vocabulary.
    tokenizer = _tokenizer(data, config.model.vocab_size, workdir)
    corpus = pipeline.load_corpus(data, tokenizer)
    batches = lambda documents, shuffle: pipeline.make_pretraining_dataset(
      documents, data, tokenizer, global_batch_size=config.train.batch_size, shuffle=shuffle
    )
    train_iter = iter(batches(corpus.train, True))
    loop.log(f'model {config.preset}: {run.num_params:,} parameters')

    # ---------------------------------------------------------------- 3. Initial params
    def fresh() -> step_lib.TrainState:
      if not config.init_from:
        return run.initial.materialize()
      params = _init_from(config, tokenizer, run.initial.abstract.params)
      loop.log(f'started from the params of {config.init_from}')
      return run.initial.materialize(params)

    def evaluate(params: Any) -> dict[str, float]:
      """Mean metrics over the first eval_steps batches of the held-out split."""
      eval_iter = iter(batches(corpus.eval, False))
      return run.evaluate(params, (next(eval_iter) for _ in range(config.train.eval_steps)))

    # ---------------------------------------------------------------- 4. Loop
    return loop.train(
      run,
      config,
      claimed,
      train_iter=train_iter,
      fresh=fresh,
      evaluate=None if corpus.eval is None else evaluate,
      preemption=preemption,
    )


def _run(config: PretrainConfig, devices: Sequence[jax.Device] | None) -> run_lib.Run:
  """AlbertForPreTraining and its MLM + sentence objective on the mesh."""
  data = config.data
  mesh = mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices)
  model = AlbertForPreTraining(config.model)
  return run_lib.assemble(
    model,
    state_lib.pretraining_inputs(data.max_seq_length, data.max_predictions_per_seq),
    step_lib.PretrainingObjective(model, data.sentence_objective),
    mesh=mesh,
    rules=config.sharding_rules,
    train=config.train,
    flops_per_example=flops.train_flops_per_example(
      config.model, data.max_seq_length, data.max_predictions_per_seq
    ),
    tokens_per_example=data.max_seq_length,
  )


def _tokenizer(data: DataConfig, vocab_size: int, workdir: str) -> Tokenizer:
  """The run's tokenizer; process 0 trains it (if needed) before the others
  load it."""
  if jax.process_index() == 0:
    tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=vocab_size, workdir=workdir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('tokenizer')
  if jax.process_index() != 0:
    tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=vocab_size, workdir=workdir)
  return tokenizer


def _init_from(config: PretrainConfig, tokenizer: Tokenizer, abstract_params: Any) -> Any:
  """The params of the exported model config.init_from, checked against
  this run's model config, vocabulary and param shapes."""
  source = config.init_from
  pretrained = pretrained_lib.load_pretrained(source)
  pretrained_lib.check_architecture(pretrained.config, config.model, source=source)
  params = pretrained_lib.matching_params(pretrained.params, abstract_params, source=source)
  if pretrained.tokenizer.fingerprint != tokenizer.fingerprint:
    raise UsageError(
      f'data.vocab is not the vocabulary of init_from {source}: '
      "leave --config.data.vocab empty to use the model's own"
    )
  return params
