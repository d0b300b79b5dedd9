"""Sentence splitting of prose, by sentencex (Wikimedia's splitter, made for
Wikipedia's languages: abbreviations such as 'Dr.' and 'p.m.', CJK full
stops '。！？' with no space after them).

Every line is a hard break (a paragraph of a record, or a joined paragraph
of a document), split further by the library. One correction: a boundary with
no space after it is kept only after a non-ASCII character (a CJK stop), since
sentencex also splits identifiers such as 'object.__slots__' after the dot.
A quoted or bracketed span is never split, so an unbalanced quote can keep a
paragraph whole. Empty pieces are dropped.
"""

from collections.abc import Iterator

import sentencex


def split_sentences(text: str, language: str = 'en') -> list[str]:
  """Returns the sentences of `text`, stripped, in order.

  `language` is an ISO 639 code choosing sentencex's abbreviation rules
  (e.g. German's 'z.B.' and '3. Mai'); unknown codes fall back to English's.
  """
  sentences = []
  for line in text.splitlines():
    sentences.extend(piece.strip() for piece in _pieces(line, language))
  return [s for s in sentences if s]


def _pieces(line: str, language: str) -> Iterator[str]:
  piece = ''
  for segment in sentencex.segment(language, line):
    piece += segment
    last = segment[-1:]
    if last.isspace() or not last.isascii():
      yield piece
      piece = ''
  if piece:
    yield piece
