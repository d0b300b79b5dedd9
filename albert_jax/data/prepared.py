"""Offline-tokenized documents in ArrayRecord shards (`prepared:DIR`).

`prepare(...)` (run by `python -m launch.prepare_data`) tokenizes a source
in parallel worker processes and writes DIR/:
  documents-NNNNN.array_record  one record per document, little-endian int32
                                [num_segments, segment lengths..., tokens...],
                                group_size 1 so any record reads on its own;
  index.npz                     segment_lengths int32 [S], document_offsets
                                int64 [D + 1] (to plan examples unread);
  vocab/                        the tokenizer used (its vocabulary files);
  metadata.json                 shard list, counts, source, vocab fingerprint.
Documents keep the source's order. Masks are not stored: they are drawn on
the fly, fresh each epoch. `PreparedCorpus(DIR, tokenizer)` reads them back
with random access (grain's ArrayRecordDataSource).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil

import grain
import numpy as np
import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from albert_jax.data import sources
from albert_jax.data.corpus import tokenize_document
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError

METADATA_FILE = 'metadata.json'
INDEX_FILE = 'index.npz'
VOCAB_DIR = 'vocab'
_WRITER_OPTIONS = 'group_size:1,zstd:1'
_DOCUMENTS_PER_TASK = 64


def prepare(
  source: str,
  tokenizer_dir: str,
  output_dir: str,
  *,
  options: sources.SourceOptions | None = None,
  num_workers: int | None = None,
  documents_per_shard: int = 100_000,
  progress: bool = False,
) -> dict:
  """Tokenizes `source` into `output_dir`; returns its metadata.

  Writes into a temporary sibling directory renamed on success, so an
  existing `output_dir` is never touched (DataError instead).
  """
  if os.path.exists(output_dir) and os.listdir(output_dir):
    raise DataError(f'{output_dir} exists and is not empty: choose a new output directory')
  tokenizer = Tokenizer.load(tokenizer_dir)
  num_workers = num_workers or os.cpu_count() or 1
  partial = f'{output_dir.rstrip("/")}.partial-{os.getpid()}'
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    metadata = _write(
      source,
      tokenizer,
      tokenizer_dir,
      partial,
      options=options or sources.SourceOptions(),
      num_workers=num_workers,
      documents_per_shard=documents_per_shard,
      progress=progress,
    )
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if os.path.isdir(output_dir):
    os.rmdir(output_dir)  # Empty, checked above.
  os.rename(partial, output_dir)
  return metadata


def _write(
  source,
  tokenizer,
  tokenizer_dir,
  directory,
  *,
  options,
  num_workers,
  documents_per_shard,
  progress,
) -> dict:
  tokenizer.save(os.path.join(directory, VOCAB_DIR))
  documents = sources.read_documents(source, options)
  # Fail on a bad source here, before starting workers.
  documents = itertools.chain([next(documents)], documents)
  tasks = iter(lambda: list(itertools.islice(documents, _DOCUMENTS_PER_TASK)), [])
  shards, lengths, doc_sizes = [], [], []
  writer = None
  with (
    multiprocessing.get_context('spawn').Pool(
      num_workers, initializer=_init_worker, initargs=(tokenizer_dir,)
    ) as pool,
    tqdm.tqdm(desc='documents', unit=' documents', disable=not progress) as bar,
  ):
    for records in pool.imap(_tokenize_records, tasks):
      for record, segment_lengths in records:
        if writer is None or len(doc_sizes) % documents_per_shard == 0:
          if writer is not None:
            writer.close()
          shards.append(f'documents-{len(shards):05d}.array_record')
          writer = ArrayRecordWriter(os.path.join(directory, shards[-1]), _WRITER_OPTIONS)
        writer.write(record)
        lengths.extend(segment_lengths)
        doc_sizes.append(len(segment_lengths))
      bar.update(len(records))
  if writer is not None:
    writer.close()
  if not doc_sizes:
    raise DataError(f'source {source!r} has no text left after tokenization')
  np.savez(
    os.path.join(directory, INDEX_FILE),
    segment_lengths=np.asarray(lengths, np.int32),
    document_offsets=np.concatenate([[0], np.cumsum(doc_sizes)]).astype(np.int64),
  )
  metadata = dict(
    source=source,
    shards=shards,
    num_documents=len(doc_sizes),
    num_segments=len(lengths),
    num_tokens=int(sum(lengths)),
    vocab_fingerprint=tokenizer.fingerprint,
  )
  with open(os.path.join(directory, METADATA_FILE), 'w') as f:
    json.dump(metadata, f, indent=2)
  return metadata


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
  global _worker_tokenizer
  _worker_tokenizer = Tokenizer.load(tokenizer_dir)


def _tokenize_records(documents: list[list[str]]) -> list[tuple[bytes, list[int]]]:
  """(record bytes, segment lengths) of each non-empty document."""
  records = []
  for sentences in documents:
    segments = tokenize_document(_worker_tokenizer, sentences)
    if segments:
      lengths = [len(s) for s in segments]
      record = np.fromiter(itertools.chain([len(segments)], lengths, *segments), '<i4')
      records.append((record.tobytes(), lengths))
  return records


def _read_metadata(directory: str) -> dict:
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise DataError(
      f'prepared:{directory} is not prepared data '
      f'({METADATA_FILE} missing): make it with '
      '`python -m launch.prepare_data`'
    )
  with open(path) as f:
    return json.load(f)


def load_tokenizer(directory: str) -> Tokenizer:
  """The tokenizer prepared data in `directory` was made with."""
  _read_metadata(directory)
  return Tokenizer.load(os.path.join(directory, VOCAB_DIR))


class PreparedCorpus:
  """Documents [start, stop) of prepared data, read with random access."""

  def __init__(
    self, directory: str, tokenizer: Tokenizer, *, start: int = 0, stop: int | None = None
  ):
    metadata = _read_metadata(directory)
    if metadata['vocab_fingerprint'] != tokenizer.fingerprint:
      raise DataError(
        f'prepared:{directory} was tokenized with another '
        f'vocabulary: use data.vocab={directory}/{VOCAB_DIR} '
        'or prepare it again'
      )
    self.directory = directory
    self._tokenizer = tokenizer
    self._start = start
    self._stop = metadata['num_documents'] if stop is None else stop
    with np.load(os.path.join(directory, INDEX_FILE)) as index:
      offsets = index['document_offsets']
      first, end = offsets[self._start], offsets[self._stop]
      self.segment_lengths = index['segment_lengths'][first:end]
      self.document_offsets = offsets[self._start : self._stop + 1] - first
    self._records = grain.sources.ArrayRecordDataSource(
      [os.path.join(directory, s) for s in metadata['shards']]
    )

  @property
  def num_documents(self) -> int:
    return self._stop - self._start

  def tokens(self, document: int) -> np.ndarray:
    record = np.frombuffer(self._records[self._start + document], '<i4')
    return record[1 + record[0] :]

  def select(self, start: int, stop: int) -> PreparedCorpus:
    return PreparedCorpus(
      self.directory, self._tokenizer, start=self._start + start, stop=self._start + stop
    )
