"""Raw text sources, chosen by one string (`config.data.source`).

  builtin                     Python's documentation prose (builtin_corpus.py).
  text:GLOB                   Plain text files in BERT/ALBERT format: one
                              sentence per line, a blank line between
                              documents; `.gz` files are decompressed.
  tfds:NAME[/CONFIG][:SPLIT]  A TFDS dataset read with `tfds.data_source`
                              (random access, no TensorFlow); SPLIT defaults
                              to 'train'. Each record's `text_feature` is one
                              document, split into sentences (sentences.py).
  prepared:DIR                Tokenized documents written by
                              `launch.prepare_data` (read by prepared.py, not
                              here).

A source is read as a list of independent parts (`parts`): one per file, or
one range of records of a tfds split, so that `launch.prepare_data` can
tokenize parts in parallel and resume after the last finished one. Reading
the parts in order (`read_part`) gives the documents of `read_documents`.

Undecodable lines of a mostly-good text file are skipped and counted (one
warning per file); a binary file, a missing path or a corpus without text
raises DataError.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import logging
import os
from collections.abc import Iterator

from albert_jax.data import builtin_corpus
from albert_jax.data.sentences import split_sentences
from albert_jax.errors import DataError

# A file where more than this share of lines is undecodable is binary.
_MAX_BAD_LINE_SHARE = 0.1


# Records of a tfds split per part.
_TFDS_RECORDS_PER_PART = 100_000


@dataclasses.dataclass(frozen=True)
class SourceOptions:
  """How a source's records become documents; each field is a `data.` config key."""

  text_feature: str = 'text'  # The text feature of a tfds record.

  @classmethod
  def of(cls, data) -> SourceOptions:
    """The options set in a data config (DataConfig or its ConfigDict)."""
    return cls(**{f.name: getattr(data, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Part:
  """One independently readable piece of a source: a file or a record range."""

  name: str  # Stable across runs: a file path, or 'NAME:SPLIT[START:STOP]'.
  path: str = ''  # The file, for file-based sources.
  start: int = 0  # Record range [start, stop), for tfds.
  stop: int = 0


def read_documents(source: str, options: SourceOptions = SourceOptions()) -> Iterator[list[str]]:
  """Yields the documents of `source`; raises DataError if there are none."""
  found = False
  for part in parts(source, options):
    for document in read_part(source, part, options):
      found = True
      yield document
  if not found:
    raise DataError(f'source {source!r} has no text')


def read_sentences(source: str, options: SourceOptions = SourceOptions()) -> Iterator[str]:
  """Yields every sentence of `source` (e.g. to train a tokenizer)."""
  for document in read_documents(source, options):
    yield from document


def parts(source: str, options: SourceOptions = SourceOptions()) -> list[Part]:
  """The parts of `source`, in reading order; DataError for a bad source."""
  if source == 'builtin':
    return [Part(name='builtin')]
  if source.startswith('text:'):
    return [Part(name=path, path=path) for path in text_files(source[len('text:') :])]
  if source.startswith('tfds:'):
    spec = source[len('tfds:') :]
    size = len(_tfds_records(spec))
    return [
      Part(
        name=f'{spec}[{start}:{min(start + _TFDS_RECORDS_PER_PART, size)}]',
        start=start,
        stop=min(start + _TFDS_RECORDS_PER_PART, size),
      )
      for start in range(0, size, _TFDS_RECORDS_PER_PART)
    ]
  if source.startswith('prepared:'):
    raise DataError(
      f'{source!r} holds tokenized documents, not text: use the raw source it was prepared from'
    )
  raise DataError(
    f'unknown data source {source!r}: use builtin, text:GLOB, '
    'tfds:NAME[/CONFIG][:SPLIT] or prepared:DIR'
  )


def read_part(
  source: str, part: Part, options: SourceOptions = SourceOptions()
) -> Iterator[list[str]]:
  """Yields the non-empty documents of one part of `source`."""
  if source == 'builtin':
    documents = builtin_corpus.documents()
  elif source.startswith('text:'):
    documents = _text_documents(part.path)
  else:
    documents = _tfds_documents(source[len('tfds:') :], part, options.text_feature)
  for document in documents:
    if document:
      yield document


def text_files(pattern: str) -> list[str]:
  """The files matching `pattern`, sorted; DataError when there are none."""
  files = sorted(f for f in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(f))
  if not files:
    raise DataError(f'text:{pattern} matches no files: check the path')
  return files


def _text_documents(path: str) -> Iterator[list[str]]:
  document = []
  for line in _text_lines(path):
    line = line.strip()
    if line:
      document.append(line)
    elif document:
      yield document
      document = []
  if document:
    yield document


def _text_lines(path: str) -> Iterator[str]:
  opener = gzip.open if path.endswith('.gz') else open
  bad = total = 0
  try:
    with opener(path, 'rb') as f:
      if b'\0' in f.read(8192):
        raise DataError(f'{path} looks binary (NUL bytes): expected UTF-8 text')
      f.seek(0)
      for raw in f:
        total += 1
        try:
          yield raw.decode('utf-8')
        except UnicodeDecodeError:
          bad += 1
  except (OSError, EOFError) as e:  # E.g. a truncated or fake .gz file.
    raise DataError(f'cannot read {path}: {e}') from None
  if bad and bad > _MAX_BAD_LINE_SHARE * total:
    raise DataError(f'{path} looks binary: {bad} of {total} lines are not UTF-8 text')
  if bad:
    logging.warning('%s: skipped %d undecodable lines of %d', path, bad, total)


def parse_tfds(spec: str) -> tuple[str, str]:
  """'NAME[/CONFIG][:SPLIT]' -> (name, split)."""
  name, _, split = spec.partition(':')
  if not name:
    raise DataError(f'tfds:{spec} names no dataset: use tfds:NAME[/CONFIG][:SPLIT]')
  return name, split or 'train'


def _tfds_records(spec: str):
  import tensorflow_datasets as tfds  # Heavy import, only when used.

  name, split = parse_tfds(spec)
  try:
    return tfds.data_source(name, split=split)
  except Exception as e:  # tfds raises many types; all mean "not readable".
    message = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DataError(f'cannot read tfds:{spec}: {message}') from None


def _tfds_documents(spec: str, part: Part, text_feature: str) -> Iterator[list[str]]:
  records = _tfds_records(spec)
  for i in range(part.start, part.stop):
    record = records[i]
    if text_feature not in record:
      raise DataError(
        f'tfds:{spec} has no feature {text_feature!r}: set data.text_feature '
        f'to one of {", ".join(sorted(record))}'
      )
    text = record[text_feature]
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    yield split_sentences(text)
