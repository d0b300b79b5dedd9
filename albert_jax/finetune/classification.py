"""Sequence (pair) classification: data, features, loss and metrics.

Sources (`config.data.train` / `.eval`):
  PATH.tsv | PATH.csv        one example per row. With a header row naming
                             data.label_feature, the columns data.text_feature,
                             data.text_b_feature (optional) and
                             data.label_feature are read (GLUE's TSVs);
                             without one, rows are `text, label` or
                             `text, text_b, label`. Unlabelled data (for
                             prediction): no label column, or rows of
                             `text` alone.
  tfds:NAME[/CONFIG][:SPLIT] a TFDS dataset read with tfds.data_source (no
                             TensorFlow), features named as above.
Labels: when every label is a non-negative integer, it is its own class id
(num_labels = the largest + 1, or data.num_labels); otherwise the sorted
distinct training labels are the classes, in the order of the model's own
head when it has the same ones (a fine-tuned Hugging Face classifier).

Features: [CLS] text [SEP] (text_b [SEP]), the longer text trimmed from its
end until the pair fits data.max_seq_length (BERT's rule); segment ids 0 up to
the first [SEP], 1 after; padded to data.max_seq_length, each batch then cut
to its bucket length (finetune/buckets.py). Metrics: accuracy, and `f1` (of
class 1) with two classes or `macro_f1` (the mean over classes) with more.

Model: AlbertForSequenceClassification, whose backbone keeps the pretrained
model's dropout while the pooled output gets 0.1 dropout before the
classifier, as in the original run_classifier.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from albert_jax.config import ModelConfig
from albert_jax.data import sources
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError
from albert_jax.finetune.task import MODEL_INPUTS, Features, Task
from albert_jax.model import AlbertForSequenceClassification
from albert_jax.train.step import Batch, Metrics, apply


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  text_b: str | None
  label: str | None  # None: unlabelled (prediction input).


def read_examples(
  source: str,
  *,
  text_feature: str = 'text',
  text_b_feature: str = '',
  label_feature: str = 'label',
  labelled: bool = True,
) -> list[Example]:
  """The examples of `source` (see module docstring); DataError if none.

  `labelled`: labels are required; otherwise they are read when present.
  """
  names = (text_feature, text_b_feature, label_feature, labelled)
  if source.startswith('tfds:'):
    examples = _tfds_examples(source[len('tfds:') :], *names)
  elif source.endswith(('.tsv', '.csv')):
    examples = _file_examples(source, *names)
  else:
    raise DataError(
      f'unknown classification source {source!r}: use a .tsv '
      'or .csv file or tfds:NAME[/CONFIG][:SPLIT]'
    )
  if not examples:
    raise DataError(f'{source} has no examples')
  return examples


def _file_examples(
  path: str, text_feature: str, text_b_feature: str, label_feature: str, labelled: bool
) -> list[Example]:
  if not os.path.isfile(path):
    raise DataError(f'{path} not found: check data.train / data.eval')
  with open(path, 'rb') as f:
    raw = f.read()
  if b'\0' in raw[:8192]:
    raise DataError(f'{path} looks binary (NUL bytes): expected UTF-8 text')
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise DataError(f'{path} is not UTF-8 text: {e.reason} at byte {e.start}') from None
  # A cell may be as long as the file, which is in memory already (the csv
  # module's default limit, 128 KiB, would refuse a long document).
  csv.field_size_limit(max(csv.field_size_limit(), len(text)))
  if path.endswith('.tsv'):
    # GLUE's TSVs quote nothing: a quote character is text.
    rows = csv.reader(io.StringIO(text), delimiter='\t', quoting=csv.QUOTE_NONE)
  else:
    rows = csv.reader(io.StringIO(text))
  rows = [row for row in rows if any(cell.strip() for cell in row)]
  if not rows:
    return []
  # Columns of text, label, text_b; None: absent.
  if label_feature in rows[0] or (not labelled and text_feature in rows[0]):
    header = rows[0]
    names = [text_feature, label_feature if labelled else None, text_b_feature or None]
    missing = [n for n in names if n is not None and n not in header]
    if missing:
      raise DataError(
        f'{path} has no column {missing[0]!r}: its header is '
        f'{", ".join(header)}; set data.text_feature / '
        'data.text_b_feature / data.label_feature'
      )
    names[1] = label_feature
    columns = [header.index(n) if n in header else None for n in names]
    rows, first_line = rows[1:], 2
  elif len(rows[0]) in (2, 3) or (not labelled and len(rows[0]) == 1):
    width = len(rows[0])
    columns = [0, width - 1 if width > 1 else None, 1 if width == 3 else None]
    first_line = 1
  else:
    raise DataError(
      f'{path}: the first row has {len(rows[0])} columns and no '
      f'{label_feature!r} header; use rows of text, label or '
      'text, text_b, label'
    )
  examples = []
  needed = max(c for c in columns if c is not None) + 1
  cell = lambda row, column: None if column is None else row[column]
  for line, row in enumerate(rows, start=first_line):
    if len(row) < needed:
      raise DataError(f'{path}: row {line} has {len(row)} columns, expected at least {needed}')
    label = cell(row, columns[1])
    examples.append(
      Example(row[columns[0]], cell(row, columns[2]), None if label is None else label.strip())
    )
  return examples


def _tfds_examples(
  spec: str, text_feature: str, text_b_feature: str, label_feature: str, labelled: bool
) -> list[Example]:
  import tensorflow_datasets as tfds  # Heavy import, only when used.

  name, split = sources.parse_tfds(spec)
  try:
    records = tfds.data_source(name, split=split)
  except Exception as e:  # tfds raises many types; all mean "not readable".
    message = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DataError(f'cannot read tfds:{spec}: {message}') from None
  examples = []
  for i in range(len(records)):
    record = records[i]
    names = [text_feature] + [label_feature] * labelled + [text_b_feature] * bool(text_b_feature)
    for feature in names:
      if feature not in record:
        raise DataError(
          f'tfds:{spec} has no feature {feature!r}: set '
          'data.text_feature / data.text_b_feature / '
          f'data.label_feature to some of '
          f'{", ".join(sorted(record))}'
        )
    text_b = _text(record[text_b_feature]) if text_b_feature else None
    label = str(int(record[label_feature])) if label_feature in record else None
    examples.append(Example(_text(record[text_feature]), text_b, label))
  return examples


def _text(value) -> str:
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


def label_classes(
  train: Sequence[Example],
  evaluation: Sequence[Example],
  num_labels: int = 0,
  known: Sequence[str] = (),
) -> list[str]:
  """The class names, in class-id order (see module docstring); `known`:
  the classes of the model's head, whose order is kept when they are the
  data's."""
  labels = {e.label for e in train}
  everything = labels | {e.label for e in evaluation}
  if all(label.isdigit() for label in everything):
    count = max(int(label) for label in everything) + 1
    if num_labels and count > num_labels:
      raise DataError(f'label {count - 1} needs more classes than data.num_labels={num_labels}')
    return [str(i) for i in range(max(count, num_labels, 2))]
  unseen = sorted(everything - labels)
  if unseen:
    raise DataError(f'eval label {unseen[0]!r} never occurs in the training data')
  classes = sorted(labels)
  if num_labels and num_labels != len(classes):
    raise DataError(
      f'the training data has {len(classes)} labels '
      f'({", ".join(classes)}) but data.num_labels={num_labels}'
    )
  return list(known) if sorted(known) == classes else classes


def encode(
  examples: Sequence[Example], tokenizer: Tokenizer, classes: Sequence[str], max_seq_length: int
) -> Features:
  """Features [N, max_seq_length] and, when every example has one, labels
  [N], int32."""
  class_id = {label: i for i, label in enumerate(classes)}
  texts_a = tokenizer.encode_batch([e.text for e in examples])
  texts_b = tokenizer.encode_batch([e.text_b or '' for e in examples])
  n = len(examples)
  features = {
    name: np.zeros((n, max_seq_length), np.int32)
    for name in ('input_ids', 'input_mask', 'segment_ids')
  }
  if all(e.label is not None for e in examples):
    features['label'] = np.asarray([class_id[e.label] for e in examples], np.int32)
  for row, (example, a, b) in enumerate(zip(examples, texts_a, texts_b)):
    pair = example.text_b is not None
    a, b = truncate_pair(a, b if pair else [], max_seq_length - 3 if pair else max_seq_length - 2)
    ids = [tokenizer.cls_id, *a, tokenizer.sep_id] + ([*b, tokenizer.sep_id] if pair else [])
    features['input_ids'][row, : len(ids)] = ids
    features['input_mask'][row, : len(ids)] = 1
    features['segment_ids'][row, len(a) + 2 : len(ids)] = 1
  return features


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
  """Trims the longer of `a`, `b` (b on ties) from its end until they fit."""
  a, b = list(a), list(b)
  while len(a) + len(b) > max_tokens:
    (a if len(a) > len(b) else b).pop()
  return a, b


@dataclasses.dataclass(frozen=True)
class ClassificationObjective:
  """Softmax cross-entropy of AlbertForSequenceClassification, mean over
  examples; reports accuracy."""

  model: AlbertForSequenceClassification

  def sums(self, params, batch: Batch, dropout_rng) -> Metrics:
    logits = apply(self.model, params, batch, MODEL_INPUTS, dropout_rng)['logits']
    labels = batch['label']
    return {
      'loss': jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels)),
      'correct': jnp.sum((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
      'examples': jnp.asarray(labels.shape[0], jnp.float32),
    }

  def normalizers(self, batch: Batch) -> Metrics:
    return {'examples': jnp.asarray(batch['label'].shape[0], jnp.float32)}

  def loss(self, sums: Metrics, normalizers: Metrics) -> jax.Array:
    return sums['loss'] / normalizers['examples']

  def summarize(self, sums: Metrics) -> Metrics:
    return {'loss': sums['loss'] / sums['examples'], 'accuracy': sums['correct'] / sums['examples']}


def classification_metrics(
  predictions: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, float]:
  """Accuracy, and 'f1' of class 1 (two classes) or 'macro_f1', the mean F1
  over classes (more): the name says which."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  f1s = []
  for c in range(num_classes):
    true_positive = np.sum((predictions == c) & (labels == c))
    predicted, actual = np.sum(predictions == c), np.sum(labels == c)
    f1s.append(2 * true_positive / (predicted + actual) if predicted + actual else 0.0)
  accuracy = float(np.mean(predictions == labels))
  if num_classes == 2:
    return {'accuracy': accuracy, 'f1': float(f1s[1])}
  return {'accuracy': accuracy, 'macro_f1': float(np.mean(f1s))}


def model_and_objective(
  config: ModelConfig, num_labels: int
) -> tuple[AlbertForSequenceClassification, ClassificationObjective]:
  model = AlbertForSequenceClassification(config, num_labels)
  return model, ClassificationObjective(model)


def make_task(
  data: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  model_config: ModelConfig,
  known_labels: Sequence[str] = (),
) -> Task:
  """The classification task of `config.data` (see module docstring);
  `known_labels`: the classes of the model's own head, if any."""
  read = lambda source: read_examples(
    source,
    text_feature=data.text_feature,
    text_b_feature=data.text_b_feature,
    label_feature=data.label_feature,
  )
  if not data.train:
    raise DataError('no training data: set --config.data.train=PATH.tsv|PATH.csv|tfds:NAME[:SPLIT]')
  train = read(data.train)
  evaluation = read(data.eval) if data.eval else []
  classes = label_classes(train, evaluation, data.num_labels, known_labels)
  model, objective = model_and_objective(model_config, len(classes))
  eval_features = (
    encode(evaluation, tokenizer, classes, data.max_seq_length) if evaluation else None
  )

  def score(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    return classification_metrics(
      np.argmax(outputs['logits'], -1), eval_features['label'], len(classes)
    )

  return Task(
    model=model,
    objective=objective,
    train=encode(train, tokenizer, classes, data.max_seq_length),
    eval=eval_features,
    score=score,
    labels=tuple(classes),
  )
