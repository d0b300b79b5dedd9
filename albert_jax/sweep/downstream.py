"""The downstream accuracy of one finished run: its fine-tuning (by
`launch.finetune`, in RUN/downstream: albert_jax.sweep.plan) scored on the
dev set example by example, kept beside the run's other results so that the
report rebuilds from the sub-workdirs alone.

  downstream_outcomes.npz (compressed), one entry per dev example, in the
    dev set's order:
      example_id  [examples] int64, a hash of the example's text, second
                  text and label (`example_ids`): the report pairs two runs
                  only when their ids agree, as it does the held-out
                  pretraining examples
      correct     [examples] int8, 1 where the fine-tuned model's class is
                  the example's label
      label, predicted  [examples] int32, class ids into `classes`
                  [classes] str, the fine-tuned head's labels: the dev set's
                  majority class (`majority_rate`) and a classifier that
                  answers every example alike (`constant`)
  downstream_result.json: accuracy, examples, the fine-tuning run's final
    step, and the dev set and fine-tuning settings it was scored with;
    written last, it marks the run fine-tuned and scored.

The examples are read and encoded as the fine-tuning run read its own dev
set (its config.json's data settings), and run by launch.predict's own
function (albert_jax.finetune.predict.classify) in the run's batches, so
that the accuracy is the one the fine-tuning run reported at its end.
"""

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from albert_jax import model_path, records
from albert_jax.errors import SweepError
from albert_jax.finetune import classification
from albert_jax.finetune import predict as predict_lib
from albert_jax.sweep import results
from albert_jax.sweep.plan import DOWNSTREAM_SUBDIR
from albert_jax.train import mesh as mesh_lib

OUTCOMES_FILE = 'downstream_outcomes.npz'
RESULT_FILE = 'downstream_result.json'


def example_ids(examples: Sequence[classification.Example]) -> np.ndarray:
  """[examples] int64: the first 8 bytes of the BLAKE2b hash of each
  example's text, second text and label (the same example in any run,
  whatever its tokenizer)."""
  digests = []
  for example in examples:
    fields = (example.text, example.text_b or '', example.label or '')
    text = '\0'.join(fields).encode('utf-8')
    digests.append(hashlib.blake2b(text, digest_size=8).digest())
  return np.frombuffer(b''.join(digests), np.int64).copy()


def read_result(workdir: str) -> dict[str, Any] | None:
  """The run's downstream result; None when it has not been scored."""
  return results.read_result(workdir, RESULT_FILE)


def read_outcomes(workdir: str) -> dict[str, np.ndarray] | None:
  """The run's per-example dev outcomes (module docstring); None when it
  has none, or no result marks them complete."""
  path = os.path.join(workdir, OUTCOMES_FILE)
  if read_result(workdir) is None or not os.path.isfile(path):
    return None
  with np.load(path) as saved:
    return dict(saved)


def constant(outcomes: dict[str, np.ndarray]) -> bool:
  """Whether the fine-tuned classifier gives one class to every dev example."""
  return np.unique(outcomes['predicted']).size == 1


def majority_rate(outcomes: dict[str, np.ndarray]) -> float:
  """The accuracy of always answering the dev set's commonest label: the
  downstream chance."""
  label = outcomes['label']
  return float(np.unique(label, return_counts=True)[1].max() / label.size)


def score(workdir: str) -> dict[str, Any]:
  """Scores the fine-tuning run in `workdir`/downstream (its latest
  checkpoint) on its dev set, example by example; writes
  downstream_outcomes.npz, then downstream_result.json; returns the result.

  Raises SweepError when the fine-tuning run evaluated no dev set.
  """
  loaded = model_path.load(os.path.join(workdir, DOWNSTREAM_SUBDIR))
  settings = loaded.run_config or {}
  data = settings.get('data', {})
  if not data.get('eval'):
    raise SweepError(f'{workdir}/{DOWNSTREAM_SUBDIR} was fine-tuned without a dev set')
  examples = classification.read_examples(
    data['eval'],
    text_feature=data['text_feature'],
    text_b_feature=data['text_b_feature'],
    label_feature=data['label_feature'],
  )
  predictions = predict_lib.classify(
    loaded.pretrained,
    examples,
    max_seq_length=data['max_seq_length'],
    # The run's own: its evaluation's batches, cut to the same lengths.
    batch_size=settings['train']['batch_size'],
    bucket_multiple=data['bucket_multiple'],
    mesh=mesh_lib.make_mesh({'data': -1}),
    rules=mesh_lib.DEFAULT_RULES,
  )
  classes = list(loaded.pretrained.head.labels)
  label = np.asarray([classes.index(e.label) for e in examples], np.int32)
  predicted = np.asarray([classes.index(p['label']) for p in predictions], np.int32)
  correct = (label == predicted).astype(np.int8)
  # Before the result, which marks the run scored.
  np.savez_compressed(
    os.path.join(workdir, OUTCOMES_FILE),
    example_id=example_ids(examples),
    correct=correct,
    label=label,
    predicted=predicted,
    classes=np.asarray(classes),
  )
  result = {
    'accuracy': float(correct.mean()),
    'examples': len(examples),
    'step': loaded.step,
    'dev': data['eval'],
    'train': data['train'],
    'preset': settings.get('preset'),
  }
  records.write_json(os.path.join(workdir, RESULT_FILE), result)
  return result
