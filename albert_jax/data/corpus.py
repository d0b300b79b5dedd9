"""Tokenized documents: what example creation reads.

A corpus is a sequence of documents, each a sequence of segments (sentences)
of token ids. Two implementations share the `Documents` interface:
  TokenizedCorpus  everything in memory (builtin, text:, tfds: sources);
  PreparedCorpus   ArrayRecord shards read with random access (prepared.py).

Layout, in both:
  document_offsets  int64 [num_documents + 1]  first segment of each document
  segment_lengths   int32 [num_segments]       tokens per segment
  tokens(d)         int32 [tokens of d]        segments of document d, joined
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np
import tqdm

from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError


class Documents(Protocol):
  document_offsets: np.ndarray
  segment_lengths: np.ndarray

  @property
  def num_documents(self) -> int: ...

  def tokens(self, document: int) -> np.ndarray: ...

  def take(self, documents: np.ndarray) -> Documents:
    """These documents (ascending indices) as a corpus of their own."""
    ...


class TokenizedCorpus:
  """Documents held in memory as flat arrays (see module docstring)."""

  def __init__(
    self, token_ids: np.ndarray, segment_lengths: np.ndarray, document_offsets: np.ndarray
  ):
    self.token_ids = token_ids  # int32 [num_tokens]
    self.segment_lengths = segment_lengths  # int32 [num_segments]
    self.document_offsets = document_offsets  # int64 [num_documents + 1]
    self._token_offsets = np.concatenate([[0], np.cumsum(segment_lengths, dtype=np.int64)])

  @property
  def num_documents(self) -> int:
    return len(self.document_offsets) - 1

  def tokens(self, document: int) -> np.ndarray:
    offsets = self._token_offsets
    first, end = self.document_offsets[document : document + 2]
    return self.token_ids[offsets[first] : offsets[end]]

  def take(self, documents: np.ndarray) -> TokenizedCorpus:
    first, end = self.document_offsets[documents], self.document_offsets[documents + 1]
    tokens = ranges(self._token_offsets[first], self._token_offsets[end])
    return TokenizedCorpus(
      token_ids=self.token_ids[tokens],
      segment_lengths=self.segment_lengths[ranges(first, end)],
      document_offsets=offsets_of(end - first),
    )


def ranges(starts: np.ndarray, stops: np.ndarray) -> slice | np.ndarray:
  """An index of [starts[0], stops[0]) + [starts[1], stops[1]) + ...: a slice
  (a view, no copy) where each range starts where the one before stops.
  At least one range."""
  if np.array_equal(starts[1:], stops[:-1]):
    return slice(int(starts[0]), int(stops[-1]))
  lengths = stops - starts
  ends = np.cumsum(lengths)
  return np.arange(ends[-1]) + np.repeat(starts - (ends - lengths), lengths)


def offsets_of(counts: np.ndarray) -> np.ndarray:
  """int64 [len(counts) + 1] offsets of consecutive groups of `counts` items."""
  return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def tokenize_document(tokenizer: Tokenizer, sentences: list[str]) -> list[list[int]]:
  """The non-empty segments of one document."""
  return [ids for ids in tokenizer.encode_batch(sentences) if ids]


def tokenize(
  documents: Iterable[list[str]], tokenizer: Tokenizer, *, progress: bool = False
) -> TokenizedCorpus:
  """Tokenizes documents (lists of sentences) into memory.

  Empty sentences and documents are dropped. Raises DataError when nothing
  is left.
  """
  token_chunks, lengths, doc_sizes = [], [], []
  for sentences in tqdm.tqdm(documents, desc='tokenizing', unit=' documents', disable=not progress):
    segments = tokenize_document(tokenizer, sentences)
    if segments:
      token_chunks.extend(segments)
      lengths.extend(len(s) for s in segments)
      doc_sizes.append(len(segments))
  if not doc_sizes:
    raise DataError('the corpus has no text left after tokenization')
  return TokenizedCorpus(
    token_ids=np.fromiter((t for s in token_chunks for t in s), np.int32, count=sum(lengths)),
    segment_lengths=np.asarray(lengths, np.int32),
    document_offsets=np.concatenate([[0], np.cumsum(doc_sizes)]).astype(np.int64),
  )
