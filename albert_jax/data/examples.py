"""Pretraining examples: segment pairs (SOP/NSP) with n-gram masking.

Follows ALBERT's create_pretraining_data.py, split in two so masks are fresh
every epoch:

1. `plan_instances` (once, seeded): each document is cut into chunks of
   consecutive segments (sentences) holding at least `target_length` tokens
   or ending the document; the target is max_seq_length - 3, or with
   probability short_seq_prob uniform in [2, max_seq_length - 3], drawn once
   per document as the original (`short_seq_per_document=False`: per chunk).
   Chunks of fewer than 2 tokens are dropped.
2. `ExampleBuilder(epoch, index)` (on the fly, from an RNG seeded with
   (seed, epoch, index), never a global one):
   - A = the chunk's first k segments, B = the rest, k uniform in [1, m - 1]
     for a chunk of m segments. A one-segment chunk is cut at a uniform
     token boundary instead, so every example carries a true label (the
     original took B from a random document and labelled it "swapped",
     google-research/albert#234).
   - 'sop': A and B swapped with p 0.5, label 1 = swapped. 'nsp': with
     p 0.5, A keeps the first k segments (the whole one-segment chunk) and B
     is read from a random other document, starting at a random segment,
     for target_length - len(A) tokens, label 1 = random. 'none': original
     order, label 0.
   - The pair is cut to max_seq_length - 3 tokens by trimming the longer
     side (B on ties) one token at a time from a random end; the counts are
     drawn in closed form (binomial) rather than token by token.
   - [CLS] A [SEP] B [SEP], segment ids 0 up to the first [SEP], 1 after.
   - Masking: num_to_predict = min(max_predictions_per_seq,
     max(1, round(n * masked_lm_prob))) for the n tokens of the example,
     [CLS] and both [SEP] included as the original counts them
     (`num_to_predict_counts_specials=False`: A and B only); only A and B
     are masked. N-grams of n <= max_ngram whole words
     (`Tokenizer.word_starts`; A's and B's first tokens also start words),
     p(n) ∝ 1/n, are placed without overlap until the budget is spent
     (`select_ngram_spans`). Each chosen token becomes [MASK] (80%), a random
     token of the whole vocabulary as the original (10%;
     `random_token_includes_specials=False`: `Tokenizer.special_ids`
     excluded) or stays (10%).

Features, fixed shapes, int32 (S = max_seq_length, P = max_predictions_per_seq):
  input_ids [S], input_mask [S], segment_ids [S], masked_lm_positions [P],
  masked_lm_ids [P], masked_lm_weights [P], sentence_order_label [].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from albert_jax.data.corpus import Documents
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError

OBJECTIVES = ('sop', 'nsp', 'none')
FEATURES = (
  'input_ids',
  'input_mask',
  'segment_ids',
  'masked_lm_positions',
  'masked_lm_ids',
  'masked_lm_weights',
  'sentence_order_label',
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExampleConfig:
  """How examples are cut from documents; each field is a `data.` config key
  (DataConfig, data/config.py, is one)."""

  max_seq_length: int = 512
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  max_ngram: int = 3
  sentence_objective: str = 'sop'  # 'sop' | 'nsp' | 'none'
  # Where the original's create_pretraining_data differs from earlier
  # versions of this code, the original by default (module docstring):
  # short-sequence target drawn once per document (False: per chunk);
  short_seq_per_document: bool = True
  # the masking budget counts [CLS] and [SEP] (False: A and B only);
  num_to_predict_counts_specials: bool = True
  # the 10 % random token from the whole vocabulary (False: no special token);
  random_token_includes_specials: bool = True
  # SentencePiece pieces such as 's and n't start a word (True: they continue
  # the previous one).
  apostrophe_joins_word: bool = False

  def __post_init__(self):
    if self.max_seq_length < 5:
      raise DataError(
        f'data.max_seq_length={self.max_seq_length} is too short: an '
        'example needs [CLS] A [SEP] B [SEP], use at least 5'
      )
    if self.max_predictions_per_seq < 1:
      raise DataError(
        f'data.max_predictions_per_seq must be at least 1, got {self.max_predictions_per_seq}'
      )
    if not 0.0 < self.masked_lm_prob < 1.0:
      raise DataError(f'data.masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}')
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise DataError(f'data.short_seq_prob must be in [0, 1], got {self.short_seq_prob}')
    if self.max_ngram < 1:
      raise DataError(f'data.max_ngram must be at least 1, got {self.max_ngram}')
    if self.sentence_objective not in OBJECTIVES:
      raise DataError(
        f'data.sentence_objective={self.sentence_objective!r}: use one of {", ".join(OBJECTIVES)}'
      )


def plan_instances(documents: Documents, config: ExampleConfig, seed: int) -> np.ndarray:
  """Cuts documents into chunks; int64 [N, 4] (doc, first, end, target)."""
  rng = np.random.default_rng((seed, 0x5E9))
  max_tokens = config.max_seq_length - 3
  token_ends = np.concatenate([[0], np.cumsum(documents.segment_lengths, dtype=np.int64)])
  offsets = documents.document_offsets.tolist()
  instances = []

  def draw_target():
    if rng.random() < config.short_seq_prob:
      return int(rng.integers(2, max_tokens + 1))
    return max_tokens

  for doc in range(len(offsets) - 1):
    first, doc_end = offsets[doc], offsets[doc + 1]
    if config.short_seq_per_document:
      target = draw_target()
    while first < doc_end:
      if not config.short_seq_per_document:
        target = draw_target()
      base = token_ends[first]
      end = int(np.searchsorted(token_ends, base + target))
      end = min(max(end, first + 1), doc_end)
      if token_ends[end] - base >= 2:
        instances.append((doc, first, end, target))
      first = end
  if not instances:
    raise DataError(
      'no document is long enough for an example (2 tokens needed): the corpus is too small'
    )
  return np.asarray(instances, np.int64).reshape(-1, 4)


def select_ngram_spans(
  rng: np.random.Generator,
  word_starts: list[int],
  word_ends: list[int],
  num_to_predict: int,
  max_ngram: int,
  max_tries: int = 10,
) -> list[tuple[int, int]]:
  """Chooses non-overlapping n-grams of whole words to mask.

  Each n-gram's size n is drawn first, p(n) ∝ 1/n, then placed at a uniformly
  random position where it overlaps no chosen word and fits the token budget
  (rejection sampling, `max_tries` draws); when none is found n shrinks by
  one. The original instead visited starts in random order and skipped
  overlapping n-grams, which under-represents long ones (about 58:26:16
  instead of 55:27:18 for n = 1:2:3); here only an n-gram shortened to fit
  the end of the budget departs from p(n). When every word is longer than
  the budget (a very short pair of long words) nothing is chosen.

  Args:
    rng: the example's generator.
    word_starts, word_ends: token index range [start, end) of each word.
    num_to_predict: most tokens to cover.
    max_ngram: longest n-gram, in words.

  Returns:
    (first word, number of words) of each chosen n-gram, in choice order.
  """
  num_words = len(word_starts)
  p = 1.0 / np.arange(1, max_ngram + 1)
  cdf = np.cumsum(p / p.sum())
  sizes = (np.searchsorted(cdf, rng.random(num_to_predict), side='right') + 1).tolist()
  uniforms = rng.random(num_to_predict * max_tries).tolist()
  covered = bytearray(num_words)
  spans, count, draw = [], 0, 0
  for n in sizes:
    n = min(n, num_words)
    placed = False
    while not placed and n >= 1:
      for _ in range(max_tries):
        if draw == len(uniforms):
          uniforms = rng.random(len(uniforms)).tolist()
          draw = 0
        w = int(uniforms[draw] * (num_words - n + 1))
        draw += 1
        length = word_ends[w + n - 1] - word_starts[w]
        if count + length <= num_to_predict and not any(covered[w : w + n]):
          placed = True
          break
      else:
        n -= 1
    if not placed:
      break
    covered[w : w + n] = b'\1' * n
    count += length
    spans.append((w, n))
    if count == num_to_predict:
      break
  return spans


class ExampleBuilder:
  """Builds example `index` of epoch `epoch` (see module docstring)."""

  def __init__(
    self,
    documents: Documents,
    instances: np.ndarray,
    config: ExampleConfig,
    *,
    tokenizer: Tokenizer,
    seed: int,
  ):
    if config.sentence_objective == 'nsp' and documents.num_documents < 2:
      raise DataError(
        'sentence_objective=nsp needs at least 2 documents, '
        f'the corpus has {documents.num_documents}'
      )
    self.documents = documents
    self.instances = instances
    self.config = config
    # Only ids and arrays are kept: the builder is pickled into grain's workers.
    self.cls_id, self.sep_id, self.mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id
    self.is_word_start = tokenizer.word_starts(apostrophe_joins_word=config.apostrophe_joins_word)
    self.replacement_ids = np.arange(tokenizer.vocab_size, dtype=np.int32)
    if not config.random_token_includes_specials:
      self.replacement_ids = np.setdiff1d(self.replacement_ids, tokenizer.special_ids)
    self.seed = seed
    lengths = documents.segment_lengths.astype(np.int64)
    token_starts = np.cumsum(lengths) - lengths
    segments_per_doc = np.diff(documents.document_offsets)
    doc_starts = token_starts[documents.document_offsets[:-1]]
    # Token range of each segment within its document.
    self._segment_starts = token_starts - np.repeat(doc_starts, segments_per_doc)
    self._segment_ends = self._segment_starts + lengths

  def __len__(self) -> int:
    return len(self.instances)

  def __call__(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, epoch, index))
    a, b, label = self._segment_pair(rng, *self.instances[index].tolist())
    a, b = self._truncate(rng, a, b)
    return self._features(rng, a, b, label)

  def _segment_pair(self, rng, doc, first, end, target):
    """(A tokens, B tokens, label) of one instance."""
    starts = self._segment_starts
    tokens = self.documents.tokens(doc)
    chunk = tokens[starts[first] : self._segment_ends[end - 1]]
    if end - first >= 2:
      cut = starts[first + rng.integers(1, end - first)] - starts[first]
    else:
      cut = rng.integers(1, len(chunk))
    objective = self.config.sentence_objective
    if objective == 'nsp' and rng.random() < 0.5:
      a = chunk if end - first == 1 else chunk[:cut]
      return a, self._random_segments(rng, doc, target - len(a)), 1
    a, b = chunk[:cut], chunk[cut:]
    if objective == 'sop' and rng.random() < 0.5:
      return b, a, 1
    return a, b, 0

  def _random_segments(self, rng, doc, length):
    """At least `length` tokens of whole segments of another document."""
    other = int(rng.integers(self.documents.num_documents - 1))
    other += other >= doc
    first, end = self.documents.document_offsets[other : other + 2]
    start_segment = first + rng.integers(end - first)
    start = self._segment_starts[start_segment]
    ends = self._segment_ends[start_segment:end]
    last = min(np.searchsorted(ends, start + max(length, 1)), len(ends) - 1)
    stop = ends[last]
    return self.documents.tokens(other)[start:stop]

  def _truncate(self, rng, a, b):
    """Trims the longer side (B on ties) from random ends to fit."""
    excess = len(a) + len(b) - (self.config.max_seq_length - 3)
    if excess <= 0:
      return a, b
    gap = abs(len(a) - len(b))
    longer = min(excess, gap)
    rest = excess - longer
    cut_a = rest // 2 + (longer if len(a) > len(b) else 0)
    cut_b = rest - rest // 2 + (0 if len(a) > len(b) else longer)
    front_a, front_b = rng.binomial([cut_a, cut_b], 0.5).tolist()
    return (a[front_a : len(a) - cut_a + front_a], b[front_b : len(b) - cut_b + front_b])

  def _features(self, rng, a, b, label):
    cfg = self.config
    seq_len, max_pred = cfg.max_seq_length, cfg.max_predictions_per_seq
    la, lb = len(a), len(b)
    input_ids = np.zeros(seq_len, np.int32)
    input_ids[0] = self.cls_id
    input_ids[1 : 1 + la] = a
    input_ids[1 + la] = self.sep_id
    input_ids[2 + la : 2 + la + lb] = b
    input_ids[2 + la + lb] = self.sep_id
    input_mask = np.zeros(seq_len, np.int32)
    input_mask[: 3 + la + lb] = 1
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[2 + la : 3 + la + lb] = 1

    # Maskable tokens: A then B, without [CLS]/[SEP].
    n = la + lb
    positions = np.arange(1, n + 1)
    positions[la:] += 1
    starts = self.is_word_start[input_ids[positions]]
    starts[0] = starts[la] = True
    word_starts = np.flatnonzero(starts)
    word_ends = np.append(word_starts[1:], n)
    counted = n + 3 if cfg.num_to_predict_counts_specials else n
    num_to_predict = min(max_pred, max(1, round(counted * cfg.masked_lm_prob)))
    spans = select_ngram_spans(
      rng, word_starts.tolist(), word_ends.tolist(), num_to_predict, cfg.max_ngram
    )
    chosen = np.zeros(n, bool)
    for w, length in spans:
      chosen[word_starts[w] : word_ends[w + length - 1]] = True
    masked = positions[chosen]
    count = len(masked)

    masked_lm_positions = np.zeros(max_pred, np.int32)
    masked_lm_ids = np.zeros(max_pred, np.int32)
    masked_lm_weights = np.zeros(max_pred, np.int32)
    masked_lm_positions[:count] = masked
    masked_lm_ids[:count] = input_ids[masked]
    masked_lm_weights[:count] = 1
    u = rng.random(count)
    replacements = self.replacement_ids
    random_ids = replacements[rng.integers(0, len(replacements), count)]
    input_ids[masked] = np.where(
      u < 0.8, self.mask_id, np.where(u < 0.9, input_ids[masked], random_ids)
    )
    return dict(
      input_ids=input_ids,
      input_mask=input_mask,
      segment_ids=segment_ids,
      masked_lm_positions=masked_lm_positions,
      masked_lm_ids=masked_lm_ids,
      masked_lm_weights=masked_lm_weights,
      sentence_order_label=np.int32(label),
    )
