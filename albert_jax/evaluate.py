"""Held-out evaluation of a pretrained model: MLM loss, accuracy and
perplexity, and the accuracy of the sentence head on SOP and on NSP examples.

The examples are those the trainer's evaluation builds (albert_jax.data:
unshuffled, masks drawn from `data.seed`), once with sentence_objective
'sop' and once with 'nsp'; the sums come from the train step's eval step.
So a model exported at step s, evaluated on a run's held-out documents with
the run's data settings and as many batches as train.eval_steps, reports the
trainer's eval_ numbers of step s.
"""

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from albert_jax import pretraining
from albert_jax.config import check_sequence_fits
from albert_jax.data import examples, pipeline
from albert_jax.data.config import DataConfig
from albert_jax.data.corpus import Documents
from albert_jax.errors import DataError
from albert_jax.finetune import buckets
from albert_jax.model import AlbertForPreTraining
from albert_jax.pretrained import Pretrained
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import state as state_lib
from albert_jax.train import step as step_lib

OBJECTIVES = ('sop', 'nsp')


def evaluate(
  pretrained: Pretrained,
  documents: Documents,
  data: DataConfig,
  *,
  batch_size: int,
  num_batches: int,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
  objectives: Sequence[str] = OBJECTIVES,
  outcomes: dict[str, dict[str, np.ndarray]] | None = None,
  bucket_multiple: int = 0,
) -> dict[str, dict[str, float]]:
  """Metrics per sentence objective over `num_batches` batches.

  Args:
    pretrained: the model.
    documents: held-out tokenized documents.
    data: example settings and seed; its sentence_objective is replaced by
      each of `objectives`.
    batch_size: global batch size, a multiple of the mesh's batch shards.
    num_batches: batches per objective; 0: one pass over the examples
      (at least one batch).
    mesh, rules: where to run; params are placed by the logical rules.
    bucket_multiple: each batch cut to the next multiple of this that holds
      its longest example (finetune/buckets.py: the same numbers, less
      padding computed); 0: every batch at data.max_seq_length.
    outcomes: a dict to fill with each objective's per-example outcomes
      (train_step.example_outcomes: mlm_correct, mlm_weight,
      sentence_correct, each [examples]), for resampling examples.
  """
  check_sequence_fits(data.max_seq_length, pretrained.config)
  shards = mesh_lib.batch_shards(mesh, rules)
  if batch_size % shards:
    raise DataError(
      f'batch size {batch_size} does not split over the '
      f'{shards} devices: use a multiple of {shards}'
    )
  if not num_batches:
    instances = examples.plan_instances(documents, data, data.seed)
    num_batches = max(1, len(instances) // batch_size)
  model = AlbertForPreTraining(pretrained.config)
  inputs = state_lib.pretraining_inputs(data.max_seq_length, data.max_predictions_per_seq)
  results, params = {}, None
  for objective in objectives:
    run = step_lib.assemble(
      model,
      inputs,
      pretraining.PretrainingObjective(model, objective),
      mesh=mesh,
      rules=rules,
      train=None,
    )
    params = run.place_params(pretrained.params) if params is None else params
    dataset = pipeline.make_pretraining_dataset(
      documents,
      dataclasses.replace(data, sentence_objective=objective),
      pretrained.tokenizer,
      global_batch_size=batch_size,
      shuffle=False,
    )
    batches = iter(dataset)
    per_example = None if outcomes is None else {}
    cut = (_cut(next(batches), bucket_multiple) for _ in range(num_batches))
    metrics = run.evaluate(params, cut, per_example)
    if outcomes is not None:
      outcomes[objective] = {k: np.concatenate(v) for k, v in per_example.items()}
    metrics['mlm_perplexity'] = math.exp(min(metrics['mlm_loss'], 700.0))
    results[objective] = metrics
  return results


def _cut(batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
  """This process's share of a batch cut to the bucket of the global batch's
  longest example (every process cuts to the same length)."""
  longest = int(buckets.lengths(batch).max(initial=1))
  if jax.process_count() > 1:
    longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
  return buckets.trim(batch, multiple, longest=longest)
