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
  metadata.json                 shard list with each shard's size, sha256 and
                                number of documents; counts, source, vocab
                                fingerprint.
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
Workers die with the main process (a parent-death signal), and a main process
stopped by a signal (Interrupted) kills and waits for them before it releases
the lock: nothing is written into DIR.partial/ after.

Reading checks what it can before training starts: every shard's size against
metadata.json always, and its sha256 once per shard per process (`verify`,
also `python -m launch.prepare_data --verify=DIR`); a bad record met later
(a shard changed meanwhile) is a DataError naming the shard. Each names how to
prepare the data again.
"""

from __future__ import annotations

import array
import bisect
import concurrent.futures
import ctypes
import dataclasses
import errno
import fcntl
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import zipfile
from typing import NoReturn

import grain
import numpy as np
import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from albert_jax import records
from albert_jax.data import corpus, sources, vocabulary
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import AlbertError, DataError, Interrupted, UsageError

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
    try:
      _prepare_parts(
        _Job(source, options, partial, documents_per_shard),
        part_list,
        todo,
        tokenizer_dir,
        num_workers=num_workers or os.cpu_count() or 1,
        progress=progress,
      )
    except (Interrupted, KeyboardInterrupt) as e:
      signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
      raise Interrupted(
        f'stopped by {signal.Signals(signum).name}: the workers were stopped; '
        f'{len(_part_indexes(partial))} of {len(part_list)} parts are done and kept in '
        f'{partial}; rerun the same command to resume',
        signum,
      ) from None
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
    saved = records.read_json(path, fix=f'delete {partial} to start over')
    differs = [_MANIFEST_LABELS[key] for key in manifest if saved.get(key) != manifest[key]]
    if differs:
      raise DataError(
        f'{partial} holds an unfinished run with another {" and ".join(differs)}: '
        f'delete {partial} to start over or choose another --output'
      )
    return True
  # No manifest: a new run, or one killed before its manifest was written.
  strays = set(os.listdir(partial)) - {LOCK_FILE, VOCAB_DIR, MANIFEST_FILE + '.partial'}
  if strays:
    raise DataError(
      f'{partial} holds files ({", ".join(sorted(strays)[:3])}) but no {MANIFEST_FILE}: '
      f'delete it or choose another --output'
    )
  shutil.rmtree(os.path.join(partial, VOCAB_DIR), ignore_errors=True)
  tokenizer.save(os.path.join(partial, VOCAB_DIR))
  records.write_json(path, manifest)  # Its presence = a complete start.
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
      initargs=(tokenizer_dir, os.getpid()),
    ) as pool,
    tqdm.tqdm(
      total=len(part_list), initial=len(part_list) - len(todo), unit=' parts', disable=not progress
    ) as bar,
  ):

    def submit(k: int) -> concurrent.futures.Future:
      for stale in glob.glob(os.path.join(job.directory, f'documents-{k:05d}-*.array_record')):
        os.remove(stale)  # Left by a run killed while writing part k.
      return pool.submit(_prepare_part, job, part_list[k], k)

    try:
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
    except BaseException:
      # Stopped (a signal, Ctrl-C) or failed: the parts in flight are not
      # waited for (the pool's exit would), and no worker may write on.
      for worker in multiprocessing.active_children():
        worker.kill()
        worker.join()
      raise


_worker_tokenizer: Tokenizer | None = None


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(tokenizer_dir: str, parent: int) -> None:
  """Loads the tokenizer, and ends this worker when `parent` ends (kill -9
  included), so that no worker writes on after it."""
  global _worker_tokenizer
  if hasattr(os, 'sched_getaffinity'):  # Linux: the kernel sends SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent:  # It ended before the signal was asked for.
    os._exit(1)
  _worker_tokenizer = vocabulary.load(tokenizer_dir)


def _prepare_part(job: _Job, part: sources.Part, k: int) -> int:
  """Reads, tokenizes and writes part `k`'s shards, then its index; returns k.

  Holds one document at a time; the index grows by 4 bytes per segment and
  per document (array('i'), not lists of ints).
  """
  segment_lengths, document_sizes = array.array('i'), array.array('i')
  try:
    _write_part(job, part, k, segment_lengths, document_sizes)
  except RuntimeError as e:
    raise _write_failure(e, job.directory) from None
  shards = [
    os.path.join(job.directory, _shard_name(k, s))
    for s in range(-(-len(document_sizes) // job.documents_per_shard))
  ]
  path = _part_index(job.directory, k)
  with open(path + '.tmp', 'wb') as f:
    np.savez(
      f,
      segment_lengths=np.frombuffer(segment_lengths, np.int32),
      document_sizes=np.frombuffer(document_sizes, np.int32),
      shard_bytes=np.array([os.path.getsize(s) for s in shards], np.int64),
      shard_sha256=np.array([_sha256(s) for s in shards], 'S64'),
    )
  os.replace(path + '.tmp', path)  # Its presence = part k is done.
  return k


def _write_part(
  job: _Job, part: sources.Part, k: int, segment_lengths: array.array, document_sizes: array.array
) -> None:
  """Writes part `k`'s shards, appending each document's segment lengths and
  its number of segments."""
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


def _write_failure(error: RuntimeError, directory: str) -> Exception:
  """array_record reports a failed write as a RuntimeError whose text names
  the OS error (it has no errno): a full disk becomes OSError(ENOSPC), as
  Python's own writes raise it (tests/test_faults.py pins the text)."""
  if 'No space left on device' in str(error):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)
  return error


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


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
  shards, shard_bytes, shard_sha256 = [], [], []
  documents = segments = 0
  for k in range(num_parts):
    with np.load(_part_index(directory, k)) as index:
      part_lengths, part_sizes = index['segment_lengths'], index['document_sizes']
      shard_bytes += index['shard_bytes'].tolist()
      shard_sha256 += [digest.decode() for digest in index['shard_sha256']]
    segment_lengths[segments : segments + len(part_lengths)] = part_lengths
    document_offsets[documents + 1 : documents + 1 + len(part_sizes)] = segments + np.cumsum(
      part_sizes, dtype=np.int64
    )
    shards += [_shard_name(k, s) for s in range(-(-len(part_sizes) // documents_per_shard))]
    documents += len(part_sizes)
    segments += len(part_lengths)
  with open(os.path.join(directory, INDEX_FILE), 'wb') as f:
    np.savez(f, segment_lengths=segment_lengths, document_offsets=document_offsets)
  shard_documents = [
    min(documents_per_shard, int(n) - s * documents_per_shard)
    for n in counts[:, 0]
    for s in range(-(-int(n) // documents_per_shard))
  ]
  metadata = dict(
    source=source,
    shards=shards,
    shard_bytes=shard_bytes,
    shard_sha256=shard_sha256,
    shard_documents=shard_documents,
    num_documents=num_documents,
    num_segments=num_segments,
    num_tokens=int(segment_lengths.sum(dtype=np.int64)),
    vocab_fingerprint=fingerprint,
  )
  records.write_json(os.path.join(directory, METADATA_FILE), metadata)
  return metadata


_METADATA_KEYS = ('source', 'shards', 'num_documents', 'vocab_fingerprint')


def _read_metadata(directory: str) -> dict:
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise DataError(
      f'prepared:{directory} is not prepared data '
      f'({METADATA_FILE} missing): make it with '
      '`python -m launch.prepare_data`'
    )
  metadata = records.read_json(path, fix=_rebuild(directory, None))
  missing = [key for key in _METADATA_KEYS if not isinstance(metadata, dict) or key not in metadata]
  if missing:
    raise DataError(
      f'{path} is not the metadata of prepared data (no {missing[0]}): '
      f'{_rebuild(directory, metadata)}'
    )
  return metadata


def _rebuild(directory: str, metadata: dict | None) -> str:
  """How to make prepared data `directory` again."""
  source = metadata.get('source', 'SOURCE') if isinstance(metadata, dict) else 'SOURCE'
  return (
    f'prepare it again: python -m launch.prepare_data --source={source} '
    f'--vocab={os.path.join(directory, VOCAB_DIR)} --output=NEW_DIR (with the source '
    'options it was made with)'
  )


# Shards whose sha256 this process checked: (path, size, mtime_ns).
_verified: set[tuple[str, int, int]] = set()


def verify(directory: str, *, checksums: bool = True) -> dict:
  """The metadata of prepared data `directory`, once every shard is checked
  against it: its size, and (`checksums`) its sha256 unless this process
  checked that file already. DataError naming the first bad shard."""
  metadata = _read_metadata(directory)
  sizes, digests = metadata.get('shard_bytes'), metadata.get('shard_sha256')
  for k, name in enumerate(metadata['shards']):
    path = os.path.join(directory, name)
    try:
      info = os.stat(path)
    except OSError as e:
      raise DataError(
        f'prepared:{directory}: shard {name} is unreadable ({e.strerror.lower()}): '
        f'{_rebuild(directory, metadata)}'
      ) from None
    if sizes is None:  # Prepared by an earlier version: nothing to check against.
      continue
    if info.st_size != sizes[k]:
      raise DataError(
        f'prepared:{directory}: shard {name} is {info.st_size} bytes, {sizes[k]} expected '
        f'(truncated or changed): {_rebuild(directory, metadata)}'
      )
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns)
    if checksums and key not in _verified:
      if _sha256(path) != digests[k]:
        raise DataError(
          f'prepared:{directory}: shard {name} does not match its sha256 in {METADATA_FILE} '
          f'(corrupt or changed): {_rebuild(directory, metadata)}'
        )
      _verified.add(key)
  return metadata


def load_tokenizer(directory: str) -> Tokenizer:
  """The tokenizer prepared data in `directory` was made with."""
  _read_metadata(directory)
  return vocabulary.load(os.path.join(directory, VOCAB_DIR))


class PreparedCorpus:
  """Documents of prepared data (all, or those of `documents`: ascending
  indices), read with random access."""

  def __init__(self, directory: str, tokenizer: Tokenizer, *, documents: np.ndarray | None = None):
    metadata = verify(directory)
    if metadata['vocab_fingerprint'] != tokenizer.fingerprint:
      raise DataError(
        f'prepared:{directory} was tokenized with another '
        f'vocabulary: use data.vocab={directory}/{VOCAB_DIR} '
        'or prepare it again'
      )
    self.directory = directory
    self._tokenizer = tokenizer
    self._metadata = metadata
    if documents is None:
      documents = np.arange(metadata['num_documents'])
    self._documents = documents  # int64 [num_documents], record indices.
    index_path = os.path.join(directory, INDEX_FILE)
    try:
      with np.load(index_path) as index:
        offsets = index['document_offsets']
        first, end = offsets[documents], offsets[documents + 1]
        self.segment_lengths = index['segment_lengths'][corpus.ranges(first, end)]
    except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as e:
      raise DataError(
        f'prepared:{directory}: {INDEX_FILE} is unreadable ({type(e).__name__}: '
        f'{str(e)[:100]}): {_rebuild(directory, metadata)}'
      ) from None
    self.document_offsets = corpus.offsets_of(end - first)
    self._records = grain.sources.ArrayRecordDataSource(
      [os.path.join(directory, s) for s in metadata['shards']]
    )
    # The first record of each shard, to name the shard of a bad record.
    self._shard_starts = np.cumsum([0, *metadata.get('shard_documents', [])])[:-1].tolist()

  @property
  def num_documents(self) -> int:
    return len(self._documents)

  def tokens(self, document: int) -> np.ndarray:
    """int32 [tokens] of `document`; DataError naming the shard of a record
    that is unreadable or not one that prepare wrote."""
    index = int(self._documents[document])
    try:
      record = np.frombuffer(self._records[index], '<i4')
    except Exception as e:  # noqa: BLE001 (array_record raises plain errors for bad bytes)
      self._bad_record(index, (str(e).strip().splitlines() or [type(e).__name__])[0][:120])
    count = int(record[0]) if len(record) else -1
    if not 0 < count < len(record) or 1 + count + int(record[1 : 1 + count].sum()) != len(record):
      self._bad_record(index, 'its lengths do not add up')
    return record[1 + count :]

  def _bad_record(self, index: int, reason: str) -> NoReturn:
    shard = max(bisect.bisect_right(self._shard_starts, index) - 1, 0)
    name = self._metadata['shards'][shard] if self._shard_starts else f'of record {index}'
    raise DataError(
      f'prepared:{self.directory}: shard {name} has a bad record (document {index}: {reason}): '
      f'{_rebuild(self.directory, self._metadata)}'
    )

  def take(self, documents: np.ndarray) -> PreparedCorpus:
    return PreparedCorpus(self.directory, self._tokenizer, documents=self._documents[documents])
