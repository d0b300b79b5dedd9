"""The jitted train step (with gradient accumulation) and eval step, generic over
model and loss through an `Objective`; the pretraining objective.

An Objective says what a step optimises: `sums` runs the model on a batch and
returns float32 per-batch sums (losses, hits, counts) that add up over
micro-batches and eval batches; `loss` turns a micro-batch's sums into its
share of the batch loss, normalised by `normalizers` of the whole batch;
`summarize` turns sums into metrics. Pretraining (`PretrainingObjective`):
MLM cross-entropy averaged over the real predictions of the batch
(`masked_lm_weights`) + sentence-order (or next-sentence) cross-entropy
averaged over examples; the sentence term is dropped for objective 'none'.
Fine-tuning objectives live in albert_jax/finetune/.

Gradient accumulation is a `lax.scan` over micro-batches inside one step, not
`optax.MultiSteps`: every call is one optimizer update (so `step`, the learning
rate schedule and checkpoints count updates), the optimizer state carries no
accumulator, and each micro-batch stays sharded over the batch axes. The loss of
each micro-batch is normalised by the totals of the whole batch, so the summed
gradients equal those of the full batch, not a mean of per-micro-batch means.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data iterator."""

  step: jax.Array  # [] int32, optimizer updates done.
  params: Any
  opt_state: Any
  rng: jax.Array  # [2] uint32 raw key; dropout key of step s: fold_in(rng, s).


def apply(
  model: nn.Module,
  params: Any,
  batch: Batch,
  inputs: tuple[str, ...],
  dropout_rng: jax.Array | None,
) -> Metrics:
  """`model`'s outputs on `batch`'s `inputs` (in the model's call order), with
  dropout from `dropout_rng`; none when it is None (evaluation)."""
  return model.apply(
    {'params': params},
    *(batch[name] for name in inputs),
    deterministic=dropout_rng is None,
    rngs=None if dropout_rng is None else {'dropout': dropout_rng},
  )


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


class Objective(Protocol):
  """A model and its loss, as the train and eval steps see them. One may also
  define `outcomes(params, batch)`: `sums(params, batch, None)` and per-example
  [B] outcomes from one forward pass, for `outcome_step`."""

  def sums(self, params: Any, batch: Batch, dropout_rng: jax.Array | None) -> Metrics:
    """Float32 scalar sums over the examples of `batch` (None: no dropout)."""

  def normalizers(self, batch: Batch) -> Metrics:
    """The denominators of the loss, from the whole (global) batch."""

  def loss(self, sums: Metrics, normalizers: Metrics) -> jax.Array:
    """A (micro-)batch's share of the batch loss; linear in `sums`."""

  def summarize(self, sums: Metrics) -> Metrics:
    """Losses and accuracies from sums added over any number of batches."""


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
    return apply(self.model, params, batch, inputs, dropout_rng)

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


def _micro_batches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B / num, ...], micro-batch j = rows j, j + num, ...

  Strided rather than contiguous, so each device's shard of the batch holds
  an equal part of every micro-batch and no data moves between devices.
  """

  def split(x):
    x = x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
    return nn.with_logical_constraint(x, (None, 'batch') + (None,) * (x.ndim - 2))

  return jax.tree.map(split, batch)


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  objective: Objective,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  grad_accum_steps: int,
) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch [B, ...]; metrics are scalars."""
  # Normalisers of the whole batch, so micro-batch gradients simply add up.
  normalizers = objective.normalizers(batch)
  step_rng = jax.random.fold_in(state.rng, state.step)

  def micro_loss(params, micro, rng):
    sums = objective.sums(params, micro, rng)
    return objective.loss(sums, normalizers), sums

  def accumulate(carry, xs):
    grads, sums = carry
    index, micro = xs
    (_, micro_sums), micro_grads = jax.value_and_grad(micro_loss, has_aux=True)(
      state.params, micro, jax.random.fold_in(step_rng, index)
    )
    return (
      jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads),
      jax.tree.map(jnp.add, sums, micro_sums),
    ), None

  micro_batches = _micro_batches(batch, grad_accum_steps)
  # Gradients add up in float32 whatever the parameter dtype.
  zeros = jax.tree.map(
    lambda x: jnp.zeros(x.shape, jnp.float32),
    (
      state.params,
      jax.eval_shape(
        objective.sums, state.params, jax.tree.map(lambda x: x[0], micro_batches), step_rng
      ),
    ),
  )
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_batches))

  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  metrics = objective.summarize(sums)
  metrics['grad_norm'] = optax.tree.norm(grads)
  # Finite iff every parameter is: what the loop checks before a checkpoint.
  metrics['param_norm'] = optax.tree.norm(new_state.params)
  metrics['learning_rate'] = jnp.asarray(schedule(state.step), jnp.float32)
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, objective: Objective) -> Metrics:
  """`objective.sums` of one global eval batch (deterministic, no dropout)."""
  return objective.sums(params, batch, None)


def outcome_step(params: Any, batch: Batch, *, objective: Objective) -> tuple[Metrics, Metrics]:
  """`eval_step`'s sums and the per-example outcomes of one global eval batch,
  for objectives that define `outcomes` (pretraining)."""
  return objective.outcomes(params, batch)
