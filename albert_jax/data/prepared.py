"""Offline-tokenized documents in ArrayRecord shards (`prepared:DIR`).

`prepare(...)` (run by `python -m launch.prepare_data`) tokenizes a source
part by part (sources.parts: consecutive files up to 64 MiB, or a range of
tfds records): each worker process reads, splits, tokenizes and writes one
whole part at a time. DIR/:
  documents-PPPPP-KKKKK.array_record  part P's documents, a new shard K
                                every documents_per_shard; one record per
                                document, little-endian int32
                                [num_segments, segment lengths..., tokens...],
                                group_size 1 so any record reads on its own;
  index.npz                     segment_lengths int32 [S], document_offsets
                                int64 [D + 1] (to plan examples unread);
  vocab/                        the tokenizer used (its vocabulary files);
  metadata.json                 shard list, counts, source, vocab fingerprint.
Documents keep the source's order: parts in order, then documents within each.
Masks are not stored: they are drawn on the fly, fresh each epoch.
`PreparedCorpus(DIR, tokenizer)` reads them back with random access (grain's
ArrayRecordDataSource, which joins the shards into one sequence).

Writing goes into DIR.partial/, renamed to DIR at the end. It holds
manifest.json (what is being prepared), a lock file (one run at a time) and,
for each finished part P, part-PPPPP.npz: its index, renamed into place once
its shards are closed, so its presence means "part P is done". Rerunning the
same command after a crash keeps the finished parts and redoes the others.
Memory stays bounded: a worker holds one document plus 4 bytes per segment
and per document of its part; the main process holds the final index.
"""

from __future__ import annotations

import array
import concurrent.futures
import dataclasses
import fcntl
import glob
import itertools
import json
import multiprocessing
import os
import shutil

import grain
import numpy as np
import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from albert_jax.data import corpus, sources, vocabulary
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import AlbertError, DataError, UsageError

METADATA_FILE = 'metadata.json'
INDEX_FILE = 'index.npz'
VOCAB_DIR = 'vocab'
MANIFEST_FILE = 'manifest.json'
LOCK_FILE = 'lock'
_WRITER_OPTIONS = 'group_size:1,zstd:1'


def prepare(
  source: str,
  tokenizer_dir: str,
  output_dir: str,
  *,
  options: sources.SourceOptions | None = None,
  num_workers: int | None = None,
  documents_per_shard: int = 100_000,
  part_bytes: int = sources.PART_BYTES,
  progress: bool = False,
) -> dict:
  """Tokenizes `source` into `output_dir`; returns its metadata.

  Writes into `output_dir`.partial/, renamed on success, so an existing
  `output_dir` is never touched (DataError instead); a rerun resumes there.
  """
  output_dir = output_dir.rstrip('/')
  if documents_per_shard < 1:
    raise UsageError(f'documents_per_shard is {documents_per_shard}: use 1 or more')
  if os.path.exists(output_dir) and os.listdir(output_dir):
    raise DataError(f'{output_dir} exists and is not empty: choose a new output directory')
  tokenizer = vocabulary.load(tokenizer_dir)
  options = options or sources.SourceOptions()
  # A bad source fails here, before anything is written.
  part_list = sources.parts(source, options, part_bytes=part_bytes)
  manifest = dict(
    source=source,
    options=dataclasses.asdict(options),
    vocab_fingerprint=tokenizer.fingerprint,
    documents_per_shard=documents_per_shard,
    parts=[part.name for part in part_list],
  )
  manifest = json.loads(json.dumps(manifest))  # As saved: tuples become lists.
  partial = f'{output_dir}.partial'
  os.makedirs(partial, exist_ok=True)
  with open(os.path.join(partial, LOCK_FILE), 'a') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise DataError(
        f'{partial} is in use by another prepare_data run: wait for it or choose another --output'
      ) from None
    resumed = _start_or_resume(partial, manifest, tokenizer)
    todo = [k for k in range(len(part_list)) if not os.path.exists(_part_index(partial, k))]
    if resumed:
      print(f'resuming {partial}: {len(part_list) - len(todo)} of {len(part_list)} parts done')
    _prepare_parts(
      _Job(source, options, partial, documents_per_shard),
      part_list,
      todo,
      tokenizer_dir,
      num_workers=num_workers or os.cpu_count() or 1,
      progress=progress,
    )
    try:
      metadata = _merge(partial, source, len(part_list), documents_per_shard, tokenizer.fingerprint)
    except DataError:  # No text at all: nothing worth resuming.
      shutil.rmtree(partial)
      raise
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)  # Empty, checked above.
    os.rename(partial, output_dir)
  for name in (LOCK_FILE, MANIFEST_FILE, *_part_indexes(output_dir)):
    os.remove(os.path.join(output_dir, name))
  return metadata


# What each manifest key is, in a refusal to resume.
_MANIFEST_LABELS = dict(
  source='source',
  options='source options',
  vocab_fingerprint='vocabulary',
  documents_per_shard='documents_per_shard',
  parts='list of parts (files or record ranges)',
)


def _start_or_resume(partial: str, manifest: dict, tokenizer: Tokenizer) -> bool:
  """Checks a resumed run's manifest (True), or starts a new run (False)."""
  path = os.path.join(partial, MANIFEST_FILE)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    differs = [_MANIFEST_LABELS[key] for key in manifest if saved.get(key) != manifest[key]]
    if differs:
      raise DataError(
        f'{partial} holds an unfinished run with another {" and ".join(differs)}: '
        f'delete {partial} to start over or choose another --output'
      )
    return True
  # No manifest: a new run, or one killed before its manifest was written.
  strays = set(os.listdir(partial)) - {LOCK_FILE, VOCAB_DIR, MANIFEST_FILE + '.tmp'}
  if strays:
    raise DataError(
      f'{partial} holds files ({", ".join(sorted(strays)[:3])}) but no {MANIFEST_FILE}: '
      f'delete it or choose another --output'
    )
  shutil.rmtree(os.path.join(partial, VOCAB_DIR), ignore_errors=True)
  tokenizer.save(os.path.join(partial, VOCAB_DIR))
  with open(path + '.tmp', 'w') as f:
    json.dump(manifest, f, indent=2)
  os.replace(path + '.tmp', path)  # The manifest's presence = a complete start.
  return False


def _part_index(directory: str, part: int) -> str:
  return os.path.join(directory, f'part-{part:05d}.npz')


def _part_indexes(directory: str) -> list[str]:
  return sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, 'part-*.npz')))


def _shard_name(part: int, shard: int) -> str:
  return f'documents-{part:05d}-{shard:05d}.array_record'


@dataclasses.dataclass(frozen=True)
class _Job:
  """What every worker needs to prepare a part of `source` into `directory`."""

  source: str
  options: sources.SourceOptions
  directory: str
  documents_per_shard: int


def _prepare_parts(
  job: _Job,
  part_list: list[sources.Part],
  todo: list[int],
  tokenizer_dir: str,
  *,
  num_workers: int,
  progress: bool,
) -> None:
  """Prepares parts `todo` in worker processes, at most `num_workers` at once.

  A part is submitted when another finishes (not all ahead, as Pool.imap
  reads its tasks), so memory does not grow with the number of parts. A
  failed part stops the run once the parts in flight finish (kept, as are
  all finished parts, for a rerun to resume); a worker that dies (e.g.
  killed for memory) fails the run instead of hanging it, unlike Pool.
  """
  if not todo:
    return
  pending = iter(todo)
  with (
    concurrent.futures.ProcessPoolExecutor(
      min(num_workers, len(todo)),
      mp_context=multiprocessing.get_context('spawn'),
      initializer=_init_worker,
      initargs=(tokenizer_dir,),
    ) as pool,
    tqdm.tqdm(
      total=len(part_list), initial=len(part_list) - len(todo), unit=' parts', disable=not progress
    ) as bar,
  ):

    def submit(k: int) -> concurrent.futures.Future:
      for stale in glob.glob(os.path.join(job.directory, f'documents-{k:05d}-*.array_record')):
        os.remove(stale)  # Left by a run killed while writing part k.
      return pool.submit(_prepare_part, job, part_list[k], k)

    running = {submit(k) for k in itertools.islice(pending, num_workers)}
    while running:
      done, running = concurrent.futures.wait(running, return_when='FIRST_COMPLETED')
      for future in done:
        error = future.exception()
        if isinstance(error, AlbertError):
          raise error from None  # The worker's one line, e.g. a corrupt file.
        if error is not None:
          raise error
        bar.update(1)
        running |= {submit(k) for k in itertools.islice(pending, 1)}


_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
  global _worker_tokenizer
  _worker_tokenizer = vocabulary.load(tokenizer_dir)


def _prepare_part(job: _Job, part: sources.Part, k: int) -> int:
  """Reads, tokenizes and writes part `k`'s shards, then its index; returns k.

  Holds one document at a time; the index grows by 4 bytes per segment and
  per document (array('i'), not lists of ints).
  """
  segment_lengths, document_sizes = array.array('i'), array.array('i')
  writer = None
  try:
    for sentences in sources.read_part(job.source, part, job.options):
      segments = corpus.tokenize_document(_worker_tokenizer, sentences)
      if not segments:
        continue
      if len(document_sizes) % job.documents_per_shard == 0:
        if writer is not None:
          writer.close()
        shard = _shard_name(k, len(document_sizes) // job.documents_per_shard)
        writer = ArrayRecordWriter(os.path.join(job.directory, shard), _WRITER_OPTIONS)
      lengths = [len(s) for s in segments]
      record = np.fromiter(itertools.chain([len(segments)], lengths, *segments), '<i4')
      writer.write(record.tobytes())
      segment_lengths.extend(lengths)
      document_sizes.append(len(segments))
  finally:
    if writer is not None:
      writer.close()
  path = _part_index(job.directory, k)
  with open(path + '.tmp', 'wb') as f:
    np.savez(
      f,
      segment_lengths=np.frombuffer(segment_lengths, np.int32),
      document_sizes=np.frombuffer(document_sizes, np.int32),
    )
  os.replace(path + '.tmp', path)  # Its presence = part k is done.
  return k


def _merge(
  directory: str, source: str, num_parts: int, documents_per_shard: int, fingerprint: str
) -> dict:
  """Joins the parts' indexes into index.npz and writes metadata.json."""
  counts = np.zeros((num_parts, 2), np.int64)  # Documents, segments.
  for k in range(num_parts):
    with np.load(_part_index(directory, k)) as index:
      counts[k] = len(index['document_sizes']), len(index['segment_lengths'])
  num_documents, num_segments = (int(n) for n in counts.sum(0))
  if not num_documents:
    raise DataError(f'source {source!r} has no text left after tokenization')
  segment_lengths = np.empty(num_segments, np.int32)
  document_offsets = np.empty(num_documents + 1, np.int64)
  document_offsets[0] = 0
  shards = []
  documents = segments = 0
  for k in range(num_parts):
    with np.load(_part_index(directory, k)) as index:
      part_lengths, part_sizes = index['segment_lengths'], index['document_sizes']
    segment_lengths[segments : segments + len(part_lengths)] = part_lengths
    document_offsets[documents + 1 : documents + 1 + len(part_sizes)] = segments + np.cumsum(
      part_sizes, dtype=np.int64
    )
    shards += [_shard_name(k, s) for s in range(-(-len(part_sizes) // documents_per_shard))]
    documents += len(part_sizes)
    segments += len(part_lengths)
  with open(os.path.join(directory, INDEX_FILE), 'wb') as f:
    np.savez(f, segment_lengths=segment_lengths, document_offsets=document_offsets)
  metadata = dict(
    source=source,
    shards=shards,
    num_documents=num_documents,
    num_segments=num_segments,
    num_tokens=int(segment_lengths.sum(dtype=np.int64)),
    vocab_fingerprint=fingerprint,
  )
  with open(os.path.join(directory, METADATA_FILE), 'w') as f:
    json.dump(metadata, f, indent=2)
  return metadata


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
  return vocabulary.load(os.path.join(directory, VOCAB_DIR))


class PreparedCorpus:
  """Documents of prepared data (all, or those of `documents`: ascending
  indices), read with random access."""

  def __init__(self, directory: str, tokenizer: Tokenizer, *, documents: np.ndarray | None = None):
    metadata = _read_metadata(directory)
    if metadata['vocab_fingerprint'] != tokenizer.fingerprint:
      raise DataError(
        f'prepared:{directory} was tokenized with another '
        f'vocabulary: use data.vocab={directory}/{VOCAB_DIR} '
        'or prepare it again'
      )
    self.directory = directory
    self._tokenizer = tokenizer
    if documents is None:
      documents = np.arange(metadata['num_documents'])
    self._documents = documents  # int64 [num_documents], record indices.
    with np.load(os.path.join(directory, INDEX_FILE)) as index:
      offsets = index['document_offsets']
      first, end = offsets[documents], offsets[documents + 1]
      self.segment_lengths = index['segment_lengths'][corpus.ranges(first, end)]
      self.document_offsets = corpus.offsets_of(end - first)
    self._records = grain.sources.ArrayRecordDataSource(
      [os.path.join(directory, s) for s in metadata['shards']]
    )

  @property
  def num_documents(self) -> int:
    return len(self._documents)

  def tokens(self, document: int) -> np.ndarray:
    record = np.frombuffer(self._records[int(self._documents[document])], '<i4')
    return record[1 + record[0] :]

  def take(self, documents: np.ndarray) -> PreparedCorpus:
    return PreparedCorpus(self.directory, self._tokenizer, documents=self._documents[documents])
