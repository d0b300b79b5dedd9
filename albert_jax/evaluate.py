"""Held-out evaluation of a pretrained model: MLM loss, accuracy and
perplexity, and the accuracy of the sentence head on SOP and on NSP examples.

The examples are those the trainer's evaluation builds (albert_jax.data:
unshuffled, masks drawn from `data.seed`), once with sentence_objective
'sop' and once with 'nsp'; the sums come from the train step's eval step.
So a model exported at step s, evaluated on a run's held-out documents with
the run's data settings and as many batches as train.eval_steps, reports the
trainer's eval_ numbers of step s.

  results = evaluate(pretrained, documents, data, batch_size=32,
                     num_batches=10, mesh=mesh, rules=rules)
  results['sop']  # {'mlm_loss', 'mlm_accuracy', 'mlm_perplexity',
                  #  'sop_loss', 'sop_accuracy', 'loss'}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from albert_jax.data import examples, pipeline
from albert_jax.data.corpus import Documents
from albert_jax.errors import DataError
from albert_jax.export import Pretrained
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import state as state_lib
from albert_jax.train import train_step as step_lib

OBJECTIVES = ('sop', 'nsp')


def evaluate(pretrained: Pretrained, documents: Documents,
             data: ml_collections.ConfigDict, *, batch_size: int,
             num_batches: int, mesh: jax.sharding.Mesh,
             rules: mesh_lib.LogicalRules,
             objectives: Sequence[str] = OBJECTIVES
             ) -> dict[str, dict[str, float]]:
  """Metrics per sentence objective over `num_batches` batches.

  Args:
    pretrained: the model.
    documents: held-out tokenized documents.
    data: a pretraining `config.data` (example settings, seed); its
      sentence_objective is replaced by each of `objectives`.
    batch_size: global batch size, a multiple of the mesh's batch shards.
    num_batches: batches per objective; 0: one pass over the examples
      (at least one batch).
    mesh, rules: where to run; params are placed by the logical rules.
  """
  max_length = pretrained.config.max_position_embeddings
  if data.max_seq_length > max_length:
    raise DataError(f'max_seq_length {data.max_seq_length} exceeds the '
                    f"model's max_position_embeddings {max_length}")
  model = AlbertForPreTraining(pretrained.config)
  params = _place(model, pretrained, data, mesh, rules)
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  shards = mesh_lib.batch_shards(mesh, rules)
  if batch_size % shards:
    raise DataError(f'batch size {batch_size} does not split over the '
                    f'{shards} devices: use a multiple of {shards}')
  if not num_batches:
    instances = examples.plan_instances(
        documents, examples.ExampleConfig.from_config(data), data.seed)
    num_batches = max(1, len(instances) // batch_size)
  results = {}
  for objective in objectives:
    objective_data = data.copy_and_resolve_references()
    objective_data.sentence_objective = objective
    step = step_lib.PretrainingObjective(model, objective)
    eval_step = step_lib.jit_eval_step(
        mesh, rules, jax.tree.map(lambda x: x.sharding, params),
        objective=step)
    dataset = pipeline.make_pretraining_dataset(
        documents, objective_data, pretrained.tokenizer,
        global_batch_size=batch_size, shuffle=False)
    batches, sums = iter(dataset), None
    with mesh_lib.activate(mesh, rules):
      for _ in range(num_batches):
        batch = pipeline.make_global_batch(next(batches), batch_sharding)
        batch_sums = eval_step(params, batch)
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums,
                                                            batch_sums)
    metrics = {k: float(v) for k, v in
               jax.device_get(step.summarize(sums)).items()}
    metrics['mlm_perplexity'] = math.exp(min(metrics['mlm_loss'], 700.0))
    metrics['examples'] = float(sums['examples'])
    results[objective] = metrics
  return results


def _place(model: nn.Module, pretrained: Pretrained,
           data: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
           rules: mesh_lib.LogicalRules):
  """The params on `mesh`, laid out by the logical axis rules."""
  inputs = state_lib.pretraining_inputs(data.max_seq_length,
                                        data.max_predictions_per_seq)
  boxed = jax.eval_shape(
      lambda: model.init(jax.random.key(0), *inputs))['params']
  return jax.device_put(pretrained.params,
                        mesh_lib.tree_shardings(boxed, mesh, rules))
