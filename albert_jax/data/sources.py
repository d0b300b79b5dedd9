"""Raw text sources, chosen by one string (`config.data.source`).

  builtin                     Python's documentation prose (builtin_corpus.py).
  text:GLOB                   Plain text files (`.gz` decompressed), as
                              `data.text_format` says: 'lines' (BERT/ALBERT
                              format: one sentence per line, a blank line
                              between documents) or 'document' (each file one
                              document of blank-line-separated paragraphs,
                              whose lines are joined and split into sentences).
  parquet:GLOB                Parquet files (e.g. a Hugging Face dataset's
                              export), read in batches of rows.
  jsonl:GLOB                  JSON Lines files (`.gz` decompressed), one JSON
                              object a line, read in blocks.
  tfds:NAME[/CONFIG][:SPLIT]  A TFDS dataset read with `tfds.data_source`
                              (random access, no TensorFlow); SPLIT defaults
                              to 'train'.
  prepared:DIR                Tokenized documents written by
                              `launch.prepare_data` (read by prepared.py, not
                              here).

A record of parquet:, jsonl: or tfds: is one document: its `data.text_feature`
column, field or feature holds the text, each line of which is a paragraph
split into sentences (sentences.py). With `data.drop_markup`, markup-heavy
lines (code, tables: markup.py) of text:, parquet:, jsonl: and tfds: are
dropped before that.

A source is read as a list of independent parts (`parts`): consecutive files
up to PART_BYTES, or one range of records of a tfds split, so that `launch.prepare_data` can
tokenize parts in parallel and resume after the last finished one. Reading
the parts in order (`read_part`) gives the documents of `read_documents`;
files are streamed, never held whole.

Undecodable lines of a mostly-good text file are skipped and counted (one
warning per file); a binary or corrupt file, a missing path, column or field,
a jsonl line that is not a JSON object, or a corpus without text raises
DataError.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator

from albert_jax.data import builtin_corpus
from albert_jax.data.markup import drop_markup
from albert_jax.data.sentences import split_sentences
from albert_jax.errors import DataError

# A file where more than this share of lines is undecodable is binary.
_MAX_BAD_LINE_SHARE = 0.1

# Records of a tfds split per part.
_TFDS_RECORDS_PER_PART = 100_000

# Streaming granularity: rows of a parquet batch, bytes of a jsonl block. A
# Wikipedia article is ~3 kB on average, so either is a few MB in memory.
# pyarrow reads on one thread: prepare_data runs a process per core.
_PARQUET_BATCH_ROWS = 1024
_JSONL_BLOCK_BYTES = 1 << 20

TEXT_FORMATS = ('lines', 'document')

# Source prefixes read from files matched by a glob.
_FILE_KINDS = ('text', 'parquet', 'jsonl')


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceOptions:
  """How a source's records become documents; each field is a `data.` config
  key (DataConfig, data/config.py, is one)."""

  # The text column, field or feature of a parquet, jsonl or tfds record.
  text_feature: str = 'text'
  # text: files: 'lines' (a sentence per line, a blank line between
  # documents) | 'document' (each file one document of prose paragraphs).
  text_format: str = 'lines'
  drop_markup: bool = False  # Drop code and table lines (markup.py).
  language: str = 'en'  # ISO 639 code: the sentence splitter's rules.

  def __post_init__(self):
    if self.text_format not in TEXT_FORMATS:
      raise DataError(
        f'data.text_format must be one of {", ".join(TEXT_FORMATS)}, got {self.text_format!r}'
      )


# Consecutive files are read as one part up to this many bytes: a corpus of
# thousands of small files (documentation, one document a file) becomes a
# few parts, hence a few shards, while a large export keeps a part per file.
PART_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Part:
  """One independently readable piece of a source: files or a record range."""

  name: str  # Stable across runs: the first file's path, or 'NAME:SPLIT[START:STOP]'.
  paths: tuple[str, ...] = ()  # Consecutive files, for file-based sources.
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


def parts(
  source: str, options: SourceOptions = SourceOptions(), *, part_bytes: int = PART_BYTES
) -> list[Part]:
  """The parts of `source`, in reading order; DataError for a bad source.

  Files are grouped into parts of consecutive files up to `part_bytes`
  (a larger file is a part of its own).
  """
  kind, _, spec = source.partition(':')
  if source == 'builtin':
    return [Part(name='builtin')]
  if kind in _FILE_KINDS:
    return [Part(name=group[0], paths=group) for group in _grouped(files(kind, spec), part_bytes)]
  if kind == 'tfds':
    size = len(_tfds_records(spec))
    return [
      Part(
        name=f'{spec}[{start}:{min(start + _TFDS_RECORDS_PER_PART, size)}]',
        start=start,
        stop=min(start + _TFDS_RECORDS_PER_PART, size),
      )
      for start in range(0, size, _TFDS_RECORDS_PER_PART)
    ]
  if kind == 'prepared':
    raise DataError(
      f'{source!r} holds tokenized documents, not text: use the raw source it was prepared from'
    )
  raise DataError(
    f'unknown data source {source!r}: use builtin, text:GLOB, parquet:GLOB, jsonl:GLOB, '
    'tfds:NAME[/CONFIG][:SPLIT] or prepared:DIR'
  )


def _grouped(paths: list[str], part_bytes: int) -> list[tuple[str, ...]]:
  groups, group, size = [], [], 0
  for path in paths:
    length = os.path.getsize(path)
    if group and size + length > part_bytes:
      groups.append(tuple(group))
      group, size = [], 0
    group.append(path)
    size += length
  return groups + [tuple(group)] if group else groups


def read_part(
  source: str, part: Part, options: SourceOptions = SourceOptions()
) -> Iterator[list[str]]:
  """Yields the non-empty documents of one part of `source`."""
  kind, _, spec = source.partition(':')
  if source == 'builtin':
    documents = builtin_corpus.documents()
  elif kind in _FILE_KINDS:
    documents = itertools.chain.from_iterable(_file_documents(kind, p, options) for p in part.paths)
  else:
    documents = _record_documents(_tfds_texts(spec, part, options.text_feature), options)
  for document in documents:
    if document:
      yield document


def _file_documents(kind: str, path: str, options: SourceOptions) -> Iterable[list[str]]:
  if kind == 'text' and options.text_format == 'document':
    return [_prose_document(_text_lines(path), options)]
  if kind == 'text':
    return _lines_documents(_text_lines(path), options)
  if kind == 'parquet':
    return _record_documents(_parquet_texts(path, options.text_feature), options)
  return _record_documents(_jsonl_texts(path, options.text_feature), options)


def files(kind: str, pattern: str) -> list[str]:
  """The files matching `pattern`, sorted; DataError when there are none."""
  matches = glob.glob(os.path.expanduser(pattern), recursive=True)  # '**': any depth.
  found = sorted(f for f in matches if os.path.isfile(f))
  if not found:
    raise DataError(f'{kind}:{pattern} matches no files: check the path')
  return found


def _lines_documents(lines: Iterable[str], options: SourceOptions) -> Iterator[list[str]]:
  """BERT format: a sentence per line, documents separated by blank lines."""
  if options.drop_markup:
    lines = drop_markup(lines)
  document = []
  for line in lines:
    line = line.strip()
    if line:
      document.append(line)
    elif document:
      yield document
      document = []
  if document:
    yield document


def _prose_document(lines: Iterable[str], options: SourceOptions) -> list[str]:
  """The sentences of wrapped prose: blank-line-separated paragraphs."""
  if options.drop_markup:
    lines = drop_markup(lines)
  sentences, paragraph = [], []
  for line in [*lines, '']:
    if line.strip():
      paragraph.append(line.strip())
    elif paragraph:
      sentences.extend(split_sentences(' '.join(paragraph), options.language))
      paragraph = []
  return sentences


def _record_documents(texts: Iterable[str], options: SourceOptions) -> Iterator[list[str]]:
  """The sentences of each record's text, each line a paragraph (as Wikipedia's)."""
  for text in texts:
    if options.drop_markup:
      text = '\n'.join(drop_markup(text.splitlines()))
    yield split_sentences(text, options.language)


def _open(path: str):
  """`path` opened for reading bytes, `.gz` decompressed; DataError if binary."""
  opener = gzip.open if path.endswith('.gz') else open
  try:
    f = opener(path, 'rb')
    if b'\0' in f.read(8192):
      f.close()
      raise DataError(f'{path} looks binary (NUL bytes): expected UTF-8 text')
    f.seek(0)
  except (OSError, EOFError) as e:  # E.g. a truncated or fake .gz file.
    raise DataError(f'cannot read {path}: {e}') from None
  return f


def _text_lines(path: str) -> Iterator[str]:
  bad = total = 0
  try:
    with _open(path) as f:
      for raw in f:
        total += 1
        try:
          yield raw.decode('utf-8')
        except UnicodeDecodeError:
          bad += 1
  except (OSError, EOFError) as e:  # E.g. a .gz file truncated further on.
    raise DataError(f'cannot read {path}: {e}') from None
  if bad and bad > _MAX_BAD_LINE_SHARE * total:
    raise DataError(f'{path} looks binary: {bad} of {total} lines are not UTF-8 text')
  if bad:
    logging.warning('%s: skipped %d undecodable lines of %d', path, bad, total)


def _parquet_texts(path: str, column: str) -> Iterator[str]:
  import pyarrow as pa  # Imported only when used, as tfds.
  import pyarrow.parquet as pq

  try:
    with pq.ParquetFile(path) as f:
      names = f.schema_arrow.names
      if column not in names:
        raise DataError(
          f'{path} has no column {column!r}: set data.text_feature to one of {", ".join(names)}'
        )
      kind = f.schema_arrow.field(column).type
      if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f'{path}: column {column!r} holds {kind}, not text')
      batches = f.iter_batches(_PARQUET_BATCH_ROWS, columns=[column], use_threads=False)
      for batch in batches:
        yield from (text for text in batch.column(0).to_pylist() if text)
  except (pa.ArrowException, OSError) as e:
    raise DataError(f'cannot read {path} as parquet: {_first_line(e)}') from None


def _jsonl_texts(path: str, field: str) -> Iterator[str]:
  import pyarrow as pa
  import pyarrow.json as pj

  # Only the text field is parsed: other fields may vary in type.
  options = pj.ParseOptions(
    explicit_schema=pa.schema([(field, pa.string())]), unexpected_field_behavior='ignore'
  )
  line = 1  # The file's line number of the block's first line.
  with _open(path) as f:
    for block in _line_blocks(path, f):
      try:
        # Blocks parsed one at a time: pyarrow's own streaming reader
        # (open_json) reads ahead of the batches taken without bound.
        table = pj.read_json(pa.BufferReader(block), pj.ReadOptions(use_threads=False), options)
      except pa.ArrowException as e:
        raise DataError(_bad_jsonl(path, block, line, field, e)) from None
      texts = table.column(0).to_pylist()
      if line == 1 and all(text is None for text in texts):
        raise DataError(_missing_field(path, field))
      line += block.count(b'\n')
      yield from (text for text in texts if text)


def _line_blocks(path: str, f) -> Iterator[bytes]:
  """Blocks of whole lines of `f`, about _JSONL_BLOCK_BYTES each."""
  try:
    while block := f.read(_JSONL_BLOCK_BYTES):
      block += f.readline()
      if block.strip():
        yield block
  except (OSError, EOFError) as e:  # E.g. a truncated .gz file.
    raise DataError(f'cannot read {path}: {e}') from None


def _missing_field(path: str, field: str) -> str:
  """The error for a field that no record of a file's first block has."""
  with _open(path) as f:
    first = next(line for line in f if line.strip())
  record = json.loads(first)  # pyarrow has parsed it: a JSON object.
  names = ', '.join(sorted(record)) or '(none)'
  return f'{path} has no field {field!r}: set data.text_feature to one of {names}'


def _bad_jsonl(path: str, block: bytes, line: int, field: str, error: Exception) -> str:
  """The error for a block of lines, from `line` on, that pyarrow cannot read."""
  for number, raw in enumerate(block.split(b'\n'), line):
    if not raw.strip():
      continue
    try:
      record = json.loads(raw)
    except ValueError:
      return f'{path}: line {number} is not JSON: expected one JSON object a line'
    if not isinstance(record, dict):
      return f'{path}: line {number} is not a JSON object: expected one a line'
    if not isinstance(record.get(field, ''), str):
      return f'{path}: line {number} has a {field!r} that is not a string'
  return f'cannot read {path} as JSON Lines: {_first_line(error)}'


def _first_line(error: Exception) -> str:
  return (str(error).strip() or type(error).__name__).splitlines()[0]


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
    raise DataError(f'cannot read tfds:{spec}: {_first_line(e)}') from None


def _tfds_texts(spec: str, part: Part, text_feature: str) -> Iterator[str]:
  records = _tfds_records(spec)
  for i in range(part.start, part.stop):
    record = records[i]
    if text_feature not in record:
      raise DataError(
        f'tfds:{spec} has no feature {text_feature!r}: set data.text_feature '
        f'to one of {", ".join(sorted(record))}'
      )
    text = record[text_feature]
    yield text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text
