"""The result of one finished run, kept in its sub-workdir as
sweep_result.json so that reports rebuild from the sub-workdirs alone.

  params         backbone parameters (albert_jax.param_count)
  eval           held-out metrics of albert_jax.evaluate, on SOP examples and
                 on NSP examples, whatever the run trained on
  step_time, tokens_per_sec   medians over the run's logged training records
"""

import json
import os
import statistics
from typing import Any

from albert_jax import evaluate, model_path
from albert_jax.data import pipeline
from albert_jax.errors import SweepError
from albert_jax.param_count import count_params
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig

RESULT_FILE = 'sweep_result.json'
METRICS_FILE = 'metrics.jsonl'


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
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_result(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, RESULT_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def evaluate_run(workdir: str, *, num_batches: int) -> dict[str, Any]:
  """Evaluates the latest checkpoint of the run in `workdir` on its held-out
  documents (`num_batches` per objective, 0: one pass) and writes
  sweep_result.json; returns the result."""
  restored = model_path.restore_run(workdir)
  pretrained, config = restored.pretrained, restored.run_config
  held_out = pipeline.load_corpus(config.data, pretrained.tokenizer).eval
  if held_out is None:
    raise SweepError(
      f'{workdir} holds no held-out documents to evaluate on: '
      'keep data.eval_documents > 0 or set data.eval_source'
    )
  metrics = evaluate.evaluate(
    pretrained,
    held_out,
    config.data,
    batch_size=config.train.batch_size,
    num_batches=num_batches,
    mesh=mesh_lib.make_mesh({'data': -1}),
    rules=config.sharding_rules,
  )
  records = [r for r in read_metrics(workdir) if r.get('step_time')]
  result = {
    'step': restored.step,
    'objective': config.data.sentence_objective,
    'params': count_params(pretrained.config)['backbone'],
    'eval': metrics,
    'step_time': _median(records, 'step_time'),
    'tokens_per_sec': _median(records, 'tokens_per_sec'),
  }
  with open(os.path.join(workdir, RESULT_FILE), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def _median(records: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in records if r.get(key) is not None]
  return statistics.median(values) if values else None
