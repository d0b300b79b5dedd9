"""Pretraining: `train(config, workdir)`.

Reads top to bottom:
  1. Run                  mesh, model, objective, optimizer, state and steps
                          (train/run.py): every impossible setting is refused
                          here, before anything is written; then the workdir
                          is claimed (train/workdir.py: one writer, same model)
  2. Data                 tokenizer, which sizes the model's vocabulary
                          unless the config sets it (PretrainConfig.sized:
                          the run is assembled again and the workdir's
                          check completed for that size), corpus,
                          per-process train / eval streams
  3. Initial params       random, or those of config.init_from (any model
                          path: albert_jax/model_path.py)
  4. Loop                 resume, step, log, evaluate, checkpoint, preemption
                          (train/loop.py, shared with fine-tuning)
A workdir ends up holding:
  config.json  resumes.jsonl  lock  checkpoints/  metrics.jsonl  tensorboard/
  vocab/ (if trained, or config.init_from's vocabulary when data.vocab is unset)
"""

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.experimental import multihost_utils

from albert_jax import flops, model_path
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
    workdir_lib.claim(workdir, config, unsettled=config.unsettled_keys) as claimed,
  ):
    loop.log(f'mesh {mesh_lib.describe(run.mesh)}; workdir {workdir}')

    # ---------------------------------------------------------------- 2. Data
    data = config.data
    init_model = functools.cache(lambda: model_path.load(config.init_from))
    if config.init_from and not data.vocab:
      data = dataclasses.replace(data, vocab=_own_vocab(init_model, workdir))
    tokenizer, config, run, claimed = _vocabulary(data, config, run, claimed, devices)
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
      loaded = init_model()
      params = _init_from(config, loaded, tokenizer, run.initial.abstract.params)
      loop.log(f'started from the params of {loaded.description}')
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


def _vocabulary(
  data: DataConfig,
  config: PretrainConfig,
  run: run_lib.Run,
  claimed: workdir_lib.Workdir,
  devices: Sequence[jax.Device] | None,
) -> tuple[Tokenizer, PretrainConfig, run_lib.Run, workdir_lib.Workdir]:
  """The run's tokenizer, and the config, run and workdir settled for its
  size (PretrainConfig.sized): `run` was assembled for the provisional size,
  so that an impossible setting is refused before a tokenizer is trained; it
  is assembled again if the size changed, and the workdir's check, which
  left the size out, completed. DataError for a set model.vocab_size that
  leaves ids of the tokenizer without an embedding.

  (With config.init_from, a model whose embeddings have more rows than its
  vocabulary is refused in `_init_from`, naming the size to set: its params
  are not loaded here to find out, as a resumed run needs none.)
  """
  tokenizer = _load_tokenizer(data, config.model.vocab_size, claimed.path)
  sized = config.sized(tokenizer.vocab_size)
  pipeline.check_vocab_fits(tokenizer, sized.model.vocab_size)
  if sized != config:
    run = _run(sized, devices)
  return tokenizer, sized, run, claimed.check(sized)


def _load_tokenizer(data: DataConfig, vocab_size: int, workdir: str) -> Tokenizer:
  """The run's tokenizer, of `vocab_size` pieces if trained for the run;
  process 0 trains it (if needed) before the others load it."""
  if jax.process_index() == 0:
    tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=vocab_size, workdir=workdir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('tokenizer')
  if jax.process_index() != 0:
    tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=vocab_size, workdir=workdir)
  return tokenizer


def _own_vocab(init_model: Callable[[], model_path.Loaded], workdir: str) -> str:
  """WORKDIR/vocab holding the vocabulary of config.init_from's model,
  written by process 0 on the first start: the run keeps its vocabulary
  whatever the model path (a workdir, a hub id) becomes."""
  vocab = os.path.join(workdir, pipeline.WORKDIR_VOCAB)
  if jax.process_index() == 0 and not os.path.isdir(vocab):
    partial = f'{vocab}.partial'
    shutil.rmtree(partial, ignore_errors=True)
    init_model().pretrained.tokenizer.save(partial)
    os.rename(partial, vocab)  # Whole or absent.
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('init_from_vocab')
  return vocab


def _init_from(
  config: PretrainConfig, loaded: model_path.Loaded, tokenizer: Tokenizer, abstract_params: Any
) -> Any:
  """The params of config.init_from's model, checked against this run's
  model config, vocabulary and param shapes (the parts the model lacks, e.g.
  the SOP head of an AlbertForMaskedLM, come initialised from it)."""
  source, pretrained = loaded.description, loaded.pretrained
  pretrained_lib.check_architecture(pretrained.config, config.model, source=source)
  params = pretrained_lib.matching_params(pretrained.params, abstract_params, source=source)
  # A vocabulary copied from the model (data.vocab unset) is the model's.
  if config.data.vocab and pretrained.tokenizer.fingerprint != tokenizer.fingerprint:
    raise UsageError(
      f'data.vocab is not the vocabulary of init_from {config.init_from}: '
      "leave --config.data.vocab empty to use the model's own"
    )
  return params
