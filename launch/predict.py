r"""Predictions of a fine-tuned model: class labels, or answers to questions.

  python -m launch.predict --model=runs/finetune_sst2 --input=test.tsv --output=preds.jsonl
  python -m launch.predict --model=path/to/hf_albert_squad --task=span_qa \
      --input=dev-v1.1.json --output=predictions.json

--model is any model path with a fine-tuning head (albert_jax/model_path.py):
a fine-tuning workdir (latest checkpoint, or --step), or its export, or a
Hugging Face AlbertForSequenceClassification / AlbertForQuestionAnswering
directory or cached hub id. --task defaults to the head's.

  classification  --input: .tsv / .csv as fine-tuning reads them, labels
                  optional (a header naming --text_feature, or rows of
                  text [, label] / text, text_b, label). --output: JSON
                  lines, one per row: {"label": ..., "probabilities":
                  {label: p, ...}}.
  span_qa         --input: SQuAD-format JSON, answers optional. --output:
                  SQuAD's predictions.json, {question id: answer text}.

Examples are encoded as fine-tuning encodes them, with a fine-tuning run's
data settings as defaults (max_seq_length, doc_stride, ...), and run in
batches sharded over all devices, as evaluation: in order of length, each
batch padded to the next multiple of --bucket_multiple (the log says how many
shapes were compiled), with the outputs of fixed-length padding. The output is written
whole or not at all, and never over an existing file.
"""

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from absl import flags

from albert_jax import model_path
from albert_jax.config import check_sequence_fits
from albert_jax.errors import UsageError
from albert_jax.finetune import classification, span_qa
from albert_jax.finetune import predict as predict_lib
from albert_jax.finetune.config import TASKS
from albert_jax.train import mesh as mesh_lib
from experiments.configs import finetune as finetune_presets
from launch import command_line

_MODEL = flags.DEFINE_string(
  'model', None, 'A fine-tuned model: fine-tuning workdir, export, Hugging Face directory or id.'
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir; default: the latest.')
_TASK = flags.DEFINE_enum('task', None, list(TASKS), "Default: the model's head's task.")
_INPUT = flags.DEFINE_string('input', None, '.tsv / .csv (classification) or SQuAD JSON.')
_OUTPUT = flags.DEFINE_string('output', None, 'New file: JSON lines, or predictions.json.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Examples (windows) per batch.', lower_bound=1)
# Defaults: a fine-tuning run's config, else the task's fine-tuning preset.
_MAX_SEQ_LENGTH = flags.DEFINE_integer('max_seq_length', None, 'Tokens per example.')
_BUCKET_MULTIPLE = flags.DEFINE_integer(
  'bucket_multiple', None, 'Batches padded to multiples of this; 0: to --max_seq_length.'
)
_DOC_STRIDE = flags.DEFINE_integer('doc_stride', None, 'Span QA: tokens between windows.')
_MAX_QUERY_LENGTH = flags.DEFINE_integer('max_query_length', None, 'Span QA: question tokens.')
_MAX_ANSWER_LENGTH = flags.DEFINE_integer('max_answer_length', None, 'Span QA: answer tokens.')
_TEXT_FEATURE = flags.DEFINE_string('text_feature', None, 'Classification: text column.')
_TEXT_B_FEATURE = flags.DEFINE_string('text_b_feature', None, 'Classification: second text.')
_LABEL_FEATURE = flags.DEFINE_string('label_feature', None, 'Classification: label column.')


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  if not (_MODEL.value and _INPUT.value and _OUTPUT.value):
    raise UsageError('pass --model=PATH (a fine-tuned model), --input=FILE and --output=FILE')
  if os.path.exists(_OUTPUT.value):
    raise UsageError(f'{_OUTPUT.value} exists: choose a new --output (nothing was written)')
  loaded = model_path.load(_MODEL.value, step=_STEP.value)
  head = loaded.pretrained.head
  task = _TASK.value or (head.task if head else 'classification')
  settings = _settings(loaded, task)
  mesh = dict(mesh=mesh_lib.make_mesh({'data': -1}), rules=mesh_lib.DEFAULT_RULES)
  check_sequence_fits(settings['max_seq_length'], loaded.pretrained.config)
  if task == 'classification':
    examples = classification.read_examples(
      _INPUT.value,
      text_feature=settings['text_feature'],
      text_b_feature=settings['text_b_feature'],
      label_feature=settings['label_feature'],
      labelled=False,
    )
    rows = predict_lib.classify(
      loaded.pretrained,
      examples,
      max_seq_length=settings['max_seq_length'],
      batch_size=_BATCH_SIZE.value,
      bucket_multiple=settings['bucket_multiple'],
      **mesh,
    )
    text = ''.join(json.dumps(row, ensure_ascii=False) + '\n' for row in rows)
  else:
    examples = span_qa.read_squad(_INPUT.value, answered=False)
    rows = predict_lib.answer(
      loaded.pretrained,
      examples,
      max_seq_length=settings['max_seq_length'],
      doc_stride=settings['doc_stride'],
      max_query_length=settings['max_query_length'],
      max_answer_length=settings['max_answer_length'],
      batch_size=_BATCH_SIZE.value,
      bucket_multiple=settings['bucket_multiple'],
      **mesh,
    )
    text = json.dumps(rows, ensure_ascii=False, indent=2) + '\n'
  _write_new(_OUTPUT.value, text)
  print(f'wrote {len(rows)} predictions of {loaded.description} to {_OUTPUT.value}')


def _settings(loaded: model_path.Loaded, task: str) -> dict[str, Any]:
  """Each encoding setting: its flag, else the fine-tuning run's, else the default."""
  data = (loaded.run_config or {}).get('data', {}) if loaded.kind == 'finetuning_run' else {}
  flag_values = {
    'max_seq_length': _MAX_SEQ_LENGTH.value,
    'bucket_multiple': _BUCKET_MULTIPLE.value,
    'doc_stride': _DOC_STRIDE.value,
    'max_query_length': _MAX_QUERY_LENGTH.value,
    'max_answer_length': _MAX_ANSWER_LENGTH.value,
    'text_feature': _TEXT_FEATURE.value,
    'text_b_feature': _TEXT_B_FEATURE.value,
    'label_feature': _LABEL_FEATURE.value,
  }
  preset = finetune_presets.get_config(task).data
  settings = {}
  for name, value in flag_values.items():
    default = preset[name]
    if name == 'max_seq_length':
      default = min(default, loaded.pretrained.config.max_position_embeddings)
    settings[name] = value if value is not None else data.get(name, default)
  return settings


def _write_new(path: str, text: str) -> None:
  """Writes `path` whole, never over an existing file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, partial = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', dir=directory)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    os.chmod(partial, 0o644)
    try:
      os.link(partial, path)  # Fails, rather than replaces, when `path` appeared meanwhile.
    except FileExistsError:
      raise UsageError(f'{path} exists: choose a new --output (nothing was written)') from None
  finally:
    os.remove(partial)


if __name__ == '__main__':
  command_line.run(main)
