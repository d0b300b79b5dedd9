"""Extractive question answering in SQuAD format: data, features, loss,
decoding and exact match / F1.

Data (`config.data.train` / `.eval`): SQuAD v1.1 JSON files,
  {"data": [{"paragraphs": [{"context": str, "qas": [{"id": str,
    "question": str, "answers": [{"text": str, "answer_start": int}]}]}]}]}
Questions without answers (SQuAD 2.0's unanswerable ones) are skipped for
training and evaluation; prediction reads every question, answers optional.

Features, as BERT / ALBERT's run_squad: the context is split into words at
whitespace, each word into pieces; windows of the pieces, data.doc_stride
apart, each fill [CLS] question [SEP] window [SEP] (segment 1 from the
window on). A training window that does not hold the whole answer points at
[CLS] (position 0). Decoding takes the best start + end logit over every
window's context tokens with start <= end < start + data.max_answer_length,
a span starting where the window gives the token its most context; the
answer is the span's words joined by spaces. Metrics: exact match and F1
over answer words after SQuAD's normalisation (lowercase, no punctuation,
no articles a / an / the, single spaces), the best over the gold answers,
on SQuAD's 0-100 scale (percent), as the official evaluation script reports
them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import string
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from albert_jax.config import ModelConfig
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError
from albert_jax.finetune.task import MODEL_INPUTS, Features, Task
from albert_jax.model import AlbertForQuestionAnswering
from albert_jax.train.step import Batch, Metrics, apply


@dataclasses.dataclass(frozen=True)
class QAExample:
  id: str
  question: str
  words: tuple[str, ...]  # The context, split at whitespace.
  answers: tuple[str, ...]  # Gold answer texts; () when unknown.
  # Word span [start, end] of the first answer in `words`; None without one.
  answer_words: tuple[int, int] | None


def read_squad(path: str, *, answered: bool = True) -> list[QAExample]:
  """The answerable questions of a SQuAD-format JSON file; every question,
  answers optional, when not `answered` (prediction input)."""
  if not os.path.isfile(path):
    raise DataError(f'{path} not found: check data.train / data.eval')
  try:
    with open(path, encoding='utf-8') as f:
      articles = json.load(f)['data']
  except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(
      f'{path} is not SQuAD-format JSON ({{"data": [...]}}): '
      f'{type(e).__name__}: {str(e).splitlines()[0]}'
    ) from None
  examples, skipped = [], 0
  for article in articles:
    for paragraph in article['paragraphs']:
      words, char_to_word = _split_words(paragraph['context'])
      for qa in paragraph['qas']:
        answers = qa.get('answers') or []
        if not answered:
          examples.append(
            QAExample(str(qa['id']), qa['question'], tuple(words), _texts(answers), None)
          )
          continue
        if qa.get('is_impossible') or not answers:
          skipped += 1
          continue
        first = answers[0]
        start = char_to_word[first['answer_start']]
        end = char_to_word[first['answer_start'] + len(first['text']) - 1]
        # As run_squad: skip answers the whitespace words cannot recover.
        if (
          normalize_answer(' '.join(words[start : end + 1])).find(normalize_answer(first['text']))
          == -1
        ):
          skipped += 1
          continue
        examples.append(
          QAExample(
            id=str(qa['id']),
            question=qa['question'],
            words=tuple(words),
            answers=_texts(answers),
            answer_words=(start, end),
          )
        )
  if skipped:
    logging.warning('%s: skipped %d questions without a usable answer', path, skipped)
  if not examples:
    raise DataError(f'{path} has no answerable questions')
  return examples


def _texts(answers: Sequence[Mapping[str, str]]) -> tuple[str, ...]:
  return tuple(a['text'] for a in answers)


def _split_words(context: str) -> tuple[list[str], list[int]]:
  """Whitespace-separated words and each character's word index."""
  words, char_to_word, new_word = [], [], True
  for char in context:
    if char.isspace():
      new_word = True
    else:
      if new_word:
        words.append(char)
      else:
        words[-1] += char
      new_word = False
    char_to_word.append(max(len(words) - 1, 0))
  return words, char_to_word


@dataclasses.dataclass(frozen=True)
class WindowMap:
  """Where each eval feature's tokens come from, for decoding."""

  example: np.ndarray  # [F] example index of each feature.
  word: np.ndarray  # [F, S] context word of each token, -1 elsewhere.
  max_context: np.ndarray  # [F, S] bool: this window centres the token most.


def encode(
  examples: Sequence[QAExample],
  tokenizer: Tokenizer,
  *,
  max_seq_length: int,
  doc_stride: int,
  max_query_length: int,
) -> tuple[Features, WindowMap]:
  """Windowed features [F, max_seq_length] (with start_positions and
  end_positions [F]) and the map back to the examples' words."""
  rows = collections.defaultdict(list)
  for index, example in enumerate(examples):
    query = tokenizer.encode(example.question)[:max_query_length]
    pieces = tokenizer.encode_batch(list(example.words))
    token_word = np.asarray([w for w, p in enumerate(pieces) for _ in p], np.int32)
    tokens = [t for p in pieces for t in p]
    word_start = np.cumsum([0] + [len(p) for p in pieces])
    first, last = example.answer_words or (0, -1)  # No answer: no window holds it.
    answer_start, answer_end = word_start[first], word_start[last + 1] - 1
    window = max_seq_length - len(query) - 3
    if window < 1:
      raise DataError(
        f'data.max_seq_length={max_seq_length} leaves no room '
        f'for the context after a {len(query)}-token question: '
        'raise it or lower data.max_query_length'
      )
    starts = [0]
    while starts[-1] + window < len(tokens):
      starts.append(starts[-1] + min(window, doc_stride))
    offset = len(query) + 2  # [CLS] question [SEP]
    for start in starts:
      end = min(start + window, len(tokens))
      ids = [tokenizer.cls_id, *query, tokenizer.sep_id, *tokens[start:end], tokenizer.sep_id]
      input_ids = np.zeros(max_seq_length, np.int32)
      input_ids[: len(ids)] = ids
      segment_ids = np.zeros(max_seq_length, np.int32)
      segment_ids[offset : len(ids)] = 1
      words = np.full(max_seq_length, -1, np.int32)
      words[offset : offset + end - start] = token_word[start:end]
      inside = example.answer_words is not None and start <= answer_start and answer_end < end
      rows['input_ids'].append(input_ids)
      rows['input_mask'].append((np.arange(max_seq_length) < len(ids)).astype(np.int32))
      rows['segment_ids'].append(segment_ids)
      rows['start_positions'].append(offset + answer_start - start if inside else 0)
      rows['end_positions'].append(offset + answer_end - start if inside else 0)
      rows['example'].append(index)
      rows['word'].append(words)
      rows['max_context'].append(
        _max_context(starts, start, end - start, len(tokens), offset, max_seq_length)
      )
  mapping = WindowMap(
    example=np.asarray(rows.pop('example'), np.int32),
    word=np.stack(rows.pop('word')),
    max_context=np.stack(rows.pop('max_context')),
  )
  features = {k: np.asarray(v, np.int32) for k, v in rows.items()}
  return features, mapping


def _max_context(
  starts: Sequence[int], start: int, length: int, num_tokens: int, offset: int, max_seq_length: int
) -> np.ndarray:
  """[S] bool: tokens of this window that no other window centres better
  (score min(left, right) context + 0.01 length, as run_squad)."""
  positions = np.arange(start, start + length)
  best = np.full(length, True)
  score = lambda s, n: np.minimum(positions - s, s + n - 1 - positions) + 0.01 * n
  mine = score(start, length)
  for other in starts:
    if other == start:
      continue
    n = min(other + length, num_tokens) - other
    covered = (positions >= other) & (positions < other + n)
    best &= ~covered | (mine >= score(other, n))
  out = np.zeros(max_seq_length, bool)
  out[offset : offset + length] = best
  return out


@dataclasses.dataclass(frozen=True)
class SpanObjective:
  """Mean of the start and end cross-entropies of AlbertForQuestionAnswering;
  reports how often both ends are right."""

  model: AlbertForQuestionAnswering

  def sums(self, params, batch: Batch, dropout_rng) -> Metrics:
    outputs = apply(self.model, params, batch, MODEL_INPUTS, dropout_rng)
    start, end = batch['start_positions'], batch['end_positions']
    ce = optax.softmax_cross_entropy_with_integer_labels
    hit = (jnp.argmax(outputs['start_logits'], -1) == start) & (
      jnp.argmax(outputs['end_logits'], -1) == end
    )
    return {
      'loss': 0.5 * jnp.sum(ce(outputs['start_logits'], start) + ce(outputs['end_logits'], end)),
      'span_correct': jnp.sum(hit.astype(jnp.float32)),
      'examples': jnp.asarray(start.shape[0], jnp.float32),
    }

  def normalizers(self, batch: Batch) -> Metrics:
    return {'examples': jnp.asarray(batch['start_positions'].shape[0], jnp.float32)}

  def loss(self, sums: Metrics, normalizers: Metrics) -> jax.Array:
    return sums['loss'] / normalizers['examples']

  def summarize(self, sums: Metrics) -> Metrics:
    return {
      'loss': sums['loss'] / sums['examples'],
      'span_accuracy': sums['span_correct'] / sums['examples'],
    }


def decode(
  examples: Sequence[QAExample],
  mapping: WindowMap,
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  *,
  max_answer_length: int,
) -> dict[str, str]:
  """{example id: predicted answer text} from [F, S] logits."""
  best: dict[int, tuple[float, int, int]] = {}
  for feature in range(len(mapping.example)):
    words = mapping.word[feature]
    valid_start = (words >= 0) & mapping.max_context[feature]
    valid_end = words >= 0
    start, end = start_logits[feature], end_logits[feature]
    for length in range(max_answer_length):
      # Spans [i, i + length]: start i, end i + length.
      n = len(start) - length
      scores = np.where(valid_start[:n] & valid_end[length:], start[:n] + end[length:], -np.inf)
      i = int(np.argmax(scores))
      example = int(mapping.example[feature])
      if scores[i] > best.get(example, (-np.inf,))[0]:
        best[example] = (float(scores[i]), int(words[i]), int(words[i + length]))
  return {
    examples[i].id: ' '.join(examples[i].words[first : last + 1])
    for i, (_, first, last) in best.items()
  }


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lowercase, no punctuation, no articles."""
  text = ''.join(c for c in text.lower() if c not in _PUNCTUATION)
  return ' '.join(re.sub(r'\b(a|an|the)\b', ' ', text).split())


_PUNCTUATION = frozenset(string.punctuation)


def squad_metrics(
  examples: Sequence[QAExample], predictions: Mapping[str, str]
) -> dict[str, float]:
  """Mean exact match and F1 (best over gold answers), in percent (0-100),
  as SQuAD's evaluation script reports them."""
  exact, f1 = [], []
  for example in examples:
    prediction = predictions.get(example.id, '')
    exact.append(
      max(float(normalize_answer(prediction) == normalize_answer(gold)) for gold in example.answers)
    )
    f1.append(max(_f1(prediction, gold) for gold in example.answers))
  return {'exact_match': 100.0 * float(np.mean(exact)), 'f1': 100.0 * float(np.mean(f1))}


def _f1(prediction: str, gold: str) -> float:
  predicted = normalize_answer(prediction).split()
  truth = normalize_answer(gold).split()
  common = sum((collections.Counter(predicted) & collections.Counter(truth)).values())
  if not common:
    return float(predicted == truth)
  precision, recall = common / len(predicted), common / len(truth)
  return 2 * precision * recall / (precision + recall)


def model_and_objective(config: ModelConfig) -> tuple[AlbertForQuestionAnswering, SpanObjective]:
  model = AlbertForQuestionAnswering(config)
  return model, SpanObjective(model)


def make_task(
  data: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  model_config: ModelConfig,
  known_labels: Sequence[str] = (),
) -> Task:
  """The span QA task of `config.data` (see module docstring); a span head
  has no classes (`known_labels` is for classification)."""
  del known_labels
  if not data.train:
    raise DataError('no training data: set --config.data.train=PATH.json (SQuAD format)')
  windows = dict(
    max_seq_length=data.max_seq_length,
    doc_stride=data.doc_stride,
    max_query_length=data.max_query_length,
  )
  train, _ = encode(read_squad(data.train), tokenizer, **windows)
  evaluation = read_squad(data.eval) if data.eval else []
  eval_features, mapping = encode(evaluation, tokenizer, **windows) if evaluation else (None, None)
  model, objective = model_and_objective(model_config)

  def score(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    predictions = decode(
      evaluation,
      mapping,
      outputs['start_logits'],
      outputs['end_logits'],
      max_answer_length=data.max_answer_length,
    )
    return squad_metrics(evaluation, predictions)

  return Task(model=model, objective=objective, train=train, eval=eval_features, score=score)
