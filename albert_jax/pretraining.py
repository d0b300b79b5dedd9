"""Pretraining: `train(config, workdir)`.

Reads top to bottom (the jitted step it runs: train/step.py):
  1. Run                  the mesh, and the batch checked against it: an
                          impossible setting is refused before anything is
                          written; then the workdir is claimed
                          (train/workdir.py: one writer, same model)
  2. Data                 the tokenizer, which sizes the model's vocabulary
                          unless the config sets it; then the run assembled
                          once (train/step.py: model, objective, optimizer,
                          state, jitted steps), its settled values checked
                          against the workdir's; corpus, train / eval streams
  3. Initial params       resumed, or random, or config.init_from's (any
                          model path: albert_jax/model_path.py)
  4. Loop                 step, log, checkpoint, preemption (train/loop.py,
                          shared with fine-tuning), evaluating where it
                          hands the params back
The pretraining objective (MLM + SOP / NSP) closes the module.
A workdir ends up holding:
  config.json  resumes.jsonl  lock  checkpoints/  metrics.jsonl  tensorboard/
  vocab/ (if trained, or config.init_from's vocabulary when data.vocab is unset)
"""

import dataclasses
import functools
import itertools
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
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
from albert_jax.train import state as state_lib
from albert_jax.train import step as step_lib
from albert_jax.train import workdir as workdir_lib
from albert_jax.train.config import PretrainConfig
from albert_jax.train.step import Batch, Metrics


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
  # An impossible mesh or batch is refused before anything is written.
  mesh = mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices)
  sizes = dict(tokens_per_example=config.data.max_seq_length, hidden_size=config.model.hidden_size)
  step_lib.settle_train(config.train, mesh, config.sharding_rules, **sizes)
  with (
    distributed.PreemptionWatcher() as preemption,
    workdir_lib.claim(workdir, config, unsettled=config.unsettled_keys) as claimed,
  ):
    loop.log(f'mesh {mesh_lib.describe(mesh)}; workdir {workdir}')

    # ---------------------------------------------------------------- 2. Data
    data = config.data
    init_model = functools.cache(lambda: model_path.load(config.init_from))
    if config.init_from and not data.vocab:
      data = dataclasses.replace(data, vocab=_own_vocab(init_model, workdir))
    tokenizer, config = _vocabulary(data, config, claimed.path)
    # Assembled once the vocabulary is known; its settled values are what the
    # workdir records and a resume compares.
    run = _run(config, mesh)
    config = config.settled(run.train, run.layer_unroll)
    claimed = claimed.check(config)
    corpus = pipeline.load_corpus(data, tokenizer)
    batches = lambda documents, shuffle: pipeline.make_pretraining_dataset(
      documents, data, tokenizer, global_batch_size=config.train.batch_size, shuffle=shuffle
    )
    train_iter = iter(batches(corpus.train, True))
    loop.log(f'model {config.preset}: {run.num_params:,} parameters')

    # ---------------------------------------------------------------- 3. Initial params
    with loop.Training(run, config, claimed, train_iter, preemption) as training:
      state = training.resumed
      if state is None:  # A first start: random params, or config.init_from's.
        initial = _init_from(config, init_model(), tokenizer, run) if config.init_from else None
        state = run.initial.materialize(initial)

      # ---------------------------------------------------------------- 4. Loop
      for params in training.steps(state):
        if corpus.eval is not None:  # The first eval_steps held-out batches.
          held_out = itertools.islice(batches(corpus.eval, False), config.train.eval_steps)
          training.record_eval(run.evaluate(params, held_out))
    return training.result


def _run(config: PretrainConfig, mesh: jax.sharding.Mesh) -> step_lib.Run:
  """AlbertForPreTraining and its MLM + sentence objective on the mesh."""
  data = config.data
  model = AlbertForPreTraining(config.model)
  return step_lib.assemble(
    model,
    state_lib.pretraining_inputs(data.max_seq_length, data.max_predictions_per_seq),
    PretrainingObjective(model, data.sentence_objective),
    mesh=mesh,
    rules=config.sharding_rules,
    train=config.train,
    flops_per_example=flops.train_flops_per_example(
      config.model, data.max_seq_length, data.max_predictions_per_seq
    ),
    tokens_per_example=data.max_seq_length,
  )


def _vocabulary(
  data: DataConfig, config: PretrainConfig, workdir: str
) -> tuple[Tokenizer, PretrainConfig]:
  """The run's tokenizer, and the config sized for it (PretrainConfig.sized).
  DataError for a set model.vocab_size that leaves ids of the tokenizer
  without an embedding. (With config.init_from, a model whose embeddings
  have more rows than its vocabulary is refused in `_init_from`.)"""
  tokenizer = _load_tokenizer(data, config.model.vocab_size, workdir)
  config = config.sized(tokenizer.vocab_size)
  pipeline.check_vocab_fits(tokenizer, config.model.vocab_size)
  return tokenizer, config


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
  config: PretrainConfig, loaded: model_path.Loaded, tokenizer: Tokenizer, run: step_lib.Run
) -> Any:
  """The params of config.init_from's model, checked against this run's
  model config, vocabulary and param shapes (the parts the model lacks, e.g.
  the SOP head of an AlbertForMaskedLM, come initialised from it)."""
  source, pretrained = loaded.description, loaded.pretrained
  pretrained_lib.check_architecture(pretrained.config, config.model, source=source)
  params = pretrained_lib.matching_params(
    pretrained.params, run.initial.abstract.params, source=source
  )
  # A vocabulary copied from the model (data.vocab unset) is the model's.
  if config.data.vocab and pretrained.tokenizer.fingerprint != tokenizer.fingerprint:
    raise UsageError(
      f'data.vocab is not the vocabulary of init_from {config.init_from}: '
      "leave --config.data.vocab empty to use the model's own"
    )
  loop.log(f'started from the params of {source}')
  return params


# ---------------------------------------------------------------- The objective


@dataclasses.dataclass(frozen=True)
class PretrainingObjective:
  """MLM + sentence objective ('sop' | 'nsp' | 'none') of AlbertForPreTraining."""

  model: nn.Module
  sentence_objective: str

  def sums(self, params: Any, batch: Batch, dropout_rng: jax.Array | None) -> Metrics:
    return loss_sums(self._outputs(params, batch, dropout_rng), batch)

  def outcomes(self, params: Any, batch: Batch) -> tuple[Metrics, Metrics]:
    outputs = self._outputs(params, batch, None)
    return loss_sums(outputs, batch), example_outcomes(outputs, batch)

  def _outputs(self, params: Any, batch: Batch, dropout_rng: jax.Array | None) -> Metrics:
    inputs = ('input_ids', 'input_mask', 'segment_ids', 'masked_lm_positions')
    return step_lib.apply(self.model, params, batch, inputs, dropout_rng)

  def normalizers(self, batch: Batch) -> Metrics:
    return {
      'mlm_weight': jnp.maximum(jnp.sum(batch['masked_lm_weights'].astype(jnp.float32)), 1.0),
      'examples': jnp.asarray(batch['input_ids'].shape[0], jnp.float32),
    }

  def loss(self, sums: Metrics, normalizers: Metrics) -> jax.Array:
    loss = sums['mlm_loss'] / normalizers['mlm_weight']
    if self.sentence_objective != 'none':
      loss += sums['sentence_loss'] / normalizers['examples']
    return loss

  def summarize(self, sums: Metrics) -> Metrics:
    return summarize(sums, self.sentence_objective)


def loss_sums(outputs: Mapping[str, jax.Array], batch: Batch) -> Metrics:
  """Per-batch float32 sums from which losses and accuracies are ratios.

  Args:
    outputs: the model's 'mlm_logits' [B, P, V] and 'sentence_logits' [B, 2].
    batch: masked_lm_ids / masked_lm_weights [B, P], sentence_order_label [B].
  Returns:
    mlm_loss, mlm_correct, mlm_weight: sums over the real predictions;
    sentence_loss, sentence_correct, examples: sums over examples.
  """
  weights = batch['masked_lm_weights'].astype(jnp.float32)
  mlm_logits = outputs['mlm_logits'].astype(jnp.float32)
  mlm_ce = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, batch['masked_lm_ids'])
  mlm_hit = jnp.argmax(mlm_logits, -1) == batch['masked_lm_ids']
  sentence_logits = outputs['sentence_logits'].astype(jnp.float32)
  labels = batch['sentence_order_label']
  sentence_ce = optax.softmax_cross_entropy_with_integer_labels(sentence_logits, labels)
  sentence_hit = jnp.argmax(sentence_logits, -1) == labels
  return {
    'mlm_loss': jnp.sum(weights * mlm_ce),
    'mlm_correct': jnp.sum(weights * mlm_hit),
    'mlm_weight': jnp.sum(weights),
    'sentence_loss': jnp.sum(sentence_ce),
    'sentence_correct': jnp.sum(sentence_hit.astype(jnp.float32)),
    'examples': jnp.asarray(labels.shape[0], jnp.float32),
  }


def example_outcomes(outputs: Mapping[str, jax.Array], batch: Batch) -> Metrics:
  """Per-example outcomes of `loss_sums`' hits, for a sweep report
  (albert_jax.sweep): float32 [B] mlm_correct and mlm_weight (its real
  predictions) and sentence_correct (0 or 1); int32 mlm_predicted and
  mlm_target [B, P] (-1 where no real prediction) and sentence_label [B], to
  tell a model stuck at constant predictions; uint32 example_id [B], to check
  that two runs measured the same examples."""
  weights = batch['masked_lm_weights'].astype(jnp.float32)
  predicted = jnp.argmax(outputs['mlm_logits'], -1)
  mlm_hit = predicted == batch['masked_lm_ids']
  labels = batch['sentence_order_label']
  sentence_hit = jnp.argmax(outputs['sentence_logits'], -1) == labels
  real = weights > 0
  return {
    'mlm_correct': jnp.sum(weights * mlm_hit, -1),
    'mlm_weight': jnp.sum(weights, -1),
    'sentence_correct': sentence_hit.astype(jnp.float32),
    'mlm_predicted': jnp.where(real, predicted, -1).astype(jnp.int32),
    'mlm_target': jnp.where(real, batch['masked_lm_ids'], -1).astype(jnp.int32),
    'sentence_label': labels.astype(jnp.int32),
    'example_id': example_id(batch),
  }


def example_id(batch: Batch) -> jax.Array:
  """[B] uint32 hash of each example's input_ids, segment_ids, masked
  positions, masked ids and sentence label: equal ids, the same example
  (a collision between two given examples has chance 2^-32)."""
  keys = ('input_ids', 'segment_ids', 'masked_lm_positions', 'masked_lm_ids')
  size = batch['sentence_order_label'].shape[0]
  fields = [batch[key].reshape(size, -1) for key in keys]
  values = jnp.concatenate([*fields, batch['sentence_order_label'][:, None]], 1)
  position = jnp.arange(values.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
  # Each value mixed with its position (murmur3's finalizer), then summed:
  # any changed value or order changes the sum.
  return jnp.sum(_mix(values.astype(jnp.uint32) ^ position), 1, dtype=jnp.uint32)


def _mix(x: jax.Array) -> jax.Array:
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def summarize(sums: Mapping[str, jax.Array], sentence_objective: str) -> Metrics:
  """Losses and accuracies from `loss_sums` (summed over any number of batches).

  The sentence metrics are named after the objective ('sop_accuracy',
  'nsp_accuracy') and absent for objective 'none'; 'loss' is the training loss.
  """
  mlm_weight = jnp.maximum(sums['mlm_weight'], 1.0)
  metrics = {
    'mlm_loss': sums['mlm_loss'] / mlm_weight,
    'mlm_accuracy': sums['mlm_correct'] / mlm_weight,
  }
  loss = metrics['mlm_loss']
  if sentence_objective != 'none':
    metrics[f'{sentence_objective}_loss'] = sums['sentence_loss'] / sums['examples']
    metrics[f'{sentence_objective}_accuracy'] = sums['sentence_correct'] / sums['examples']
    loss = loss + metrics[f'{sentence_objective}_loss']
  metrics['loss'] = loss
  return metrics
