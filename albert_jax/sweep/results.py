"""The result of one finished run, kept in its sub-workdir as
sweep_result.json so that reports rebuild from the sub-workdirs alone.

  params         backbone parameters (albert_jax.param_count)
  eval           held-out metrics of albert_jax.evaluate, on SOP examples and
                 on NSP examples, whatever the run trained on
  step_time, tokens_per_sec   medians over the run's logged training records

and beside it sweep_outcomes.npz (compressed), the per-example outcomes of
that evaluation, OBJECTIVE_KEY for each objective (sop, nsp) and key of
train_step.example_outcomes: mlm_correct, mlm_weight and sentence_correct
[examples], from which the report's paired differences are computed;
example_id, by which it checks that two runs measured the same examples;
mlm_predicted, mlm_target [examples, predictions] and sentence_label, by which
it tells a run stuck at constant predictions (`untrained`) and draws chance
at the eval set's majority class (`majority_rate`). Together with
sweep_result.json and the sweep's sweep.json they are all that
`launch.sweep --report` reads to rebuild results.md.

The held-out MLM accuracy of a run is the final evaluation's, on the SOP
examples: the report's table and the last point of its curve both read it
(`mlm_curve`). By default the evaluation takes the run's train.eval_steps
batches, the examples of the trainer's own evaluation, so that for a SOP run
the curve's earlier points (the trainer's eval_ records) measure the same
examples.
"""

import json
import os
import statistics
from typing import Any

import numpy as np

from albert_jax import evaluate, model_path, records
from albert_jax.data import pipeline
from albert_jax.errors import SweepError
from albert_jax.param_count import count_params
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig

RESULT_FILE = 'sweep_result.json'
OUTCOMES_FILE = 'sweep_outcomes.npz'
METRICS_FILE = 'metrics.jsonl'
# The share of a run's masked predictions that one token may take before the
# run counts as stuck at a constant prediction (`untrained`).
COLLAPSED = 0.9


def final_step(workdir: str) -> int | None:
  """The step of the run's latest complete checkpoint; None when none."""
  steps = checkpoint_lib.checkpoint_steps(os.path.join(workdir, checkpoint_lib.WORKDIR_SUBDIR))
  return steps[-1] if steps else None


def run_config(workdir: str) -> PretrainConfig | None:
  """The config the trainer saved in the run's config.json; None when none."""
  path = os.path.join(workdir, model_path.RUN_CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return PretrainConfig.from_config(json.load(f))


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of the run's metrics.jsonl ([] when none)."""
  return records.read_jsonl(os.path.join(workdir, METRICS_FILE))  # A torn last line skipped.


def read_result(workdir: str, name: str = RESULT_FILE) -> dict[str, Any] | None:
  """The JSON result `name` of the run in `workdir` (its evaluation's by
  default); None when it has none."""
  path = os.path.join(workdir, name)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_outcomes(workdir: str) -> dict[str, np.ndarray] | None:
  """The per-example outcomes of the run's final evaluation; None when the
  run has none (not evaluated, or evaluated before they were kept with their
  example ids: `launch.sweep --report` evaluates such a run again)."""
  path = os.path.join(workdir, OUTCOMES_FILE)
  if not os.path.isfile(path):
    return None
  with np.load(path) as saved:
    outcomes = dict(saved)
  if not all(f'{objective}_example_id' in outcomes for objective in evaluate.OBJECTIVES):
    return None
  return outcomes


def untrained(outcomes: dict[str, np.ndarray]) -> str | None:
  """Why the run's MLM never left constant predictions on the held-out SOP
  examples (the table's MLM examples), or None when it did: one token takes
  COLLAPSED of its masked predictions, or its accuracy is no better than
  always answering the commonest masked token."""
  predicted, target = outcomes['sop_mlm_predicted'], outcomes['sop_mlm_target']
  real = target >= 0
  if not real.any():
    return None  # No masked token to judge by.
  counts = np.unique(predicted[real], return_counts=True)[1]
  share = counts.max() / real.sum()
  if share >= COLLAPSED:
    return f'{share:.0%} of its masked predictions are one token'
  accuracy = (predicted[real] == target[real]).mean()
  commonest = np.unique(target[real], return_counts=True)[1].max() / real.sum()
  if accuracy <= commonest:
    return (
      f'MLM accuracy {accuracy:.2%}, no better than always the commonest token ({commonest:.2%})'
    )
  return None


def constant_head(outcomes: dict[str, np.ndarray], objective: str) -> bool:
  """Whether the sentence head gives one answer to every held-out example of
  `objective` (sop or nsp)."""
  correct = outcomes[f'{objective}_sentence_correct'] > 0
  label = outcomes[f'{objective}_sentence_label']
  return np.unique(np.where(correct, label, 1 - label)).size == 1


def majority_rate(outcomes: dict[str, np.ndarray], objective: str) -> float:
  """The accuracy of always answering the commonest label of `objective`'s
  held-out examples: a sentence head's chance on them."""
  label = outcomes[f'{objective}_sentence_label']
  return float(np.unique(label, return_counts=True)[1].max() / label.size)


def mlm_accuracy(result: dict[str, Any]) -> float:
  """The run's held-out MLM accuracy: the final evaluation's, on the SOP
  examples (those of every run, whatever its objective)."""
  return result['eval']['sop']['mlm_accuracy']


def mlm_curve(workdir: str, result: dict[str, Any]) -> list[tuple[int, float]]:
  """(step, held-out MLM accuracy) of every evaluation of the run: the
  trainer's eval_ records before the final step, then `mlm_accuracy` at it."""
  return _curve(workdir, result, 'eval_mlm_accuracy', mlm_accuracy(result))


def sentence_curve(workdir: str, result: dict[str, Any]) -> list[tuple[int, float]]:
  """(step, held-out accuracy of the sentence head on the objective the run
  trained) of every evaluation, as `mlm_curve`; [] for objective 'none'."""
  objective = result['objective']
  if objective == 'none':
    return []
  key = f'{objective}_accuracy'
  return _curve(workdir, result, f'eval_{key}', result['eval'][objective][key])


def _curve(workdir: str, result: dict[str, Any], key: str, final: float) -> list[tuple[int, float]]:
  curve = [
    (r['step'], r[key]) for r in read_metrics(workdir) if key in r and r['step'] < result['step']
  ]
  return [*dict(curve).items(), (result['step'], final)]


def evaluate_run(workdir: str, *, num_batches: int) -> dict[str, Any]:
  """Evaluates the latest checkpoint of the run in `workdir` on its held-out
  documents (`num_batches` per objective, 0: the run's train.eval_steps) and
  writes sweep_outcomes.npz and sweep_result.json; returns the result."""
  restored = model_path.restore_run(workdir)
  pretrained, config = restored.pretrained, restored.run_config
  held_out = pipeline.load_corpus(config.data, pretrained.tokenizer).eval
  if held_out is None:
    raise SweepError(
      f'{workdir} holds no held-out documents to evaluate on: '
      'keep data.eval_documents > 0 or set data.eval_source'
    )
  outcomes = {}
  metrics = evaluate.evaluate(
    pretrained,
    held_out,
    config.data,
    batch_size=config.train.batch_size,
    num_batches=num_batches or config.train.eval_steps,
    mesh=mesh_lib.make_mesh({'data': -1}),
    rules=config.sharding_rules,
    outcomes=outcomes,
  )
  # Before the result, which marks the run evaluated.
  np.savez_compressed(
    os.path.join(workdir, OUTCOMES_FILE),
    **{f'{objective}_{key}': v for objective, o in outcomes.items() for key, v in o.items()},
  )
  timed = [r for r in read_metrics(workdir) if r.get('step_time')]
  result = {
    'step': restored.step,
    'objective': config.data.sentence_objective,
    'params': count_params(pretrained.config)['backbone'],
    'eval': metrics,
    'step_time': _median(timed, 'step_time'),
    'tokens_per_sec': _median(timed, 'tokens_per_sec'),
  }
  records.write_json(os.path.join(workdir, RESULT_FILE), result)
  return result


def _median(logged: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in logged if r.get(key) is not None]
  return statistics.median(values) if values else None
