"""A task model's outputs for every feature row, batched and sharded over a
mesh: fine-tuning's evaluation and `launch.predict` both use it.

  Predictor   (params, features [N, ...]) -> model outputs [N, ...], in
              row order. Rows are run in order of length, each batch padded
              to its bucket length (finetune/buckets.py), so that a few
              shapes are compiled and little padding computed; the last batch
              is filled with copies of the shortest row whose outputs are
              dropped; process p feeds its slice of each global batch.
  classify    a model with a classification head: label and class
              probabilities of each example.
  answer      a model with a span QA head: the answer text of each question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax import pretrained as pretrained_lib
from albert_jax.data import pipeline
from albert_jax.errors import ExportError, UsageError
from albert_jax.finetune import buckets, classification, span_qa
from albert_jax.finetune.task import MODEL_INPUTS, Features, num_rows
from albert_jax.pretrained import Pretrained
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import step as step_lib


class Predictor:
  """The outputs of `model` on a run's mesh, for feature rows."""

  def __init__(
    self,
    run: step_lib.Run,
    model: nn.Module,
    model_inputs: Sequence[str] = MODEL_INPUTS,
    *,
    bucket_multiple: int,
  ):
    """`bucket_multiple`: batches padded to multiples of it; 0: not cut."""
    self._run = run
    self._model_inputs = tuple(model_inputs)
    self._multiple = bucket_multiple
    self.lengths: set[int] = set()  # The sequence lengths compiled so far.
    # (params, batch) -> (batch['row'], the model's outputs).
    self._step = jax.jit(
      lambda params, batch: (
        batch['row'],
        model.apply({'params': params}, *(batch[k] for k in self._model_inputs)),
      ),
      in_shardings=(run.initial.shardings.params, run.batch_sharding),
      out_shardings=mesh_lib.replicated(run.mesh),
    )

  def __call__(self, params: Any, features: Features, batch_size: int) -> dict[str, np.ndarray]:
    """Model outputs for every row of `features`, in order: {name: [N, ...]}.

    `batch_size` is global: a multiple of the mesh's batch shards.
    """
    shards = mesh_lib.batch_shards(self._run.mesh, self._run.rules)
    if batch_size % (shards * jax.process_count()):
      raise UsageError(
        f'batch size {batch_size} does not split over the {shards} devices: '
        f'use a multiple of {shards * jax.process_count()}'
      )
    features = {k: features[k] for k in self._model_inputs}
    count = num_rows(features)
    max_seq_length = features['input_mask'].shape[1]
    # Shortest first; whole batches filled with copies of the shortest row,
    # marked row -1.
    by_length = np.argsort(buckets.lengths(features), kind='stable')
    padded = -(-count // batch_size) * batch_size
    take = np.concatenate([by_length, np.full(padded - count, by_length[0])])
    features = {k: v[take] for k, v in features.items()}
    features['row'] = np.where(np.arange(padded) < count, take, -1).astype(np.int32)
    local = batch_size // jax.process_count()
    first = jax.process_index() * local
    rows, outputs, compiled = [], [], len(self.lengths)
    with mesh_lib.activate(self._run.mesh, self._run.rules):
      for start in range(0, padded, batch_size):
        batch = buckets.trim(
          {k: v[start : start + batch_size] for k, v in features.items()}, self._multiple
        )
        self.lengths.add(batch['input_mask'].shape[1])
        chunk = {k: v[first : first + local] for k, v in batch.items()}
        row, out = jax.device_get(
          self._step(params, pipeline.make_global_batch(chunk, self._run.batch_sharding))
        )
        rows.append(row)
        outputs.append(out)
    if len(self.lengths) > compiled:
      metrics_lib.console(
        f'prediction batches of {batch_size}: {len(self.lengths)} compiled shapes '
        f'(seq {", ".join(map(str, sorted(self.lengths)))})'
      )
    rows = np.concatenate(rows)
    order = np.argsort(np.where(rows < 0, padded, rows), kind='stable')[:count]
    # Per-position outputs ([batch, seq, ...]: span logits) padded back to
    # the features' length, as fixed padding gives them.
    return {
      k: np.concatenate([_padded(k, o[k], max_seq_length) for o in outputs])[order]
      for k in outputs[0]
    }


# Outputs with a sequence axis (span QA's [batch, seq]); others are per example.
SEQUENCE_OUTPUTS = ('start_logits', 'end_logits')


def _padded(name: str, output: np.ndarray, max_seq_length: int) -> np.ndarray:
  """A per-position output [B, S] of a cut batch padded back to
  [B, max_seq_length] with its lowest value (a position never chosen)."""
  if name not in SEQUENCE_OUTPUTS or output.shape[1] >= max_seq_length:
    return output
  pad = [(0, 0), (0, max_seq_length - output.shape[1])] + [(0, 0)] * (output.ndim - 2)
  return np.pad(output, pad, constant_values=np.finfo(output.dtype).min)


def task_outputs(
  pretrained: Pretrained,
  task: str,
  features: Features,
  *,
  batch_size: int,
  bucket_multiple: int,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
) -> dict[str, np.ndarray]:
  """The outputs of `pretrained`'s `task` head for every feature row, in
  batches padded to multiples of `bucket_multiple` (0: not cut).

  Raises ExportError when the model has no head for `task`.
  """
  head = pretrained.head
  if head is None or head.task != task:
    has = 'no fine-tuning head' if head is None else f'a {head.task} head'
    raise ExportError(
      f'the model has {has}, not a {task} one: fine-tune it first '
      f'(launch.finetune --task={task}) or pass a fine-tuned model'
    )
  if task == 'classification':
    model, objective = classification.model_and_objective(pretrained.config, len(head.labels))
  else:
    model, objective = span_qa.model_and_objective(pretrained.config)
  inputs = [jnp.zeros((1,) + features[k].shape[1:], features[k].dtype) for k in MODEL_INPUTS]
  run = step_lib.assemble(model, inputs, objective, mesh=mesh, rules=rules, train=None)
  params = pretrained_lib.matching_params(
    pretrained_lib.task_params(pretrained), run.initial.abstract.params, source=f'the {task} model'
  )
  predictor = Predictor(run, model, bucket_multiple=bucket_multiple)
  return predictor(run.place_params(params), features, batch_size)


def classify(
  pretrained: Pretrained,
  examples: Sequence[classification.Example],
  *,
  max_seq_length: int,
  batch_size: int,
  bucket_multiple: int,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
) -> list[dict[str, Any]]:
  """{'label': class, 'probabilities': {class: p}} for each example."""
  labels = pretrained.head.labels if pretrained.head else ()
  unlabelled = [classification.Example(e.text, e.text_b, None) for e in examples]
  features = classification.encode(unlabelled, pretrained.tokenizer, labels, max_seq_length)
  logits = task_outputs(
    pretrained,
    'classification',
    features,
    batch_size=batch_size,
    bucket_multiple=bucket_multiple,
    mesh=mesh,
    rules=rules,
  )['logits']
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities = shifted / shifted.sum(-1, keepdims=True)
  return [
    {
      'label': labels[int(np.argmax(row))],
      'probabilities': {label: float(p) for label, p in zip(labels, row)},
    }
    for row in probabilities
  ]


def answer(
  pretrained: Pretrained,
  examples: Sequence[span_qa.QAExample],
  *,
  max_seq_length: int,
  doc_stride: int,
  max_query_length: int,
  max_answer_length: int,
  batch_size: int,
  bucket_multiple: int,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
) -> dict[str, str]:
  """{question id: answer text}, as SQuAD's predictions.json."""
  features, mapping = span_qa.encode(
    examples,
    pretrained.tokenizer,
    max_seq_length=max_seq_length,
    doc_stride=doc_stride,
    max_query_length=max_query_length,
  )
  outputs = task_outputs(
    pretrained,
    'span_qa',
    features,
    batch_size=batch_size,
    bucket_multiple=bucket_multiple,
    mesh=mesh,
    rules=rules,
  )
  predictions = span_qa.decode(
    examples,
    mapping,
    outputs['start_logits'],
    outputs['end_logits'],
    max_answer_length=max_answer_length,
  )
  return {e.id: predictions.get(e.id, '') for e in examples}
