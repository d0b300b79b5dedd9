"""launch.prepare_data's engine: parts in parallel, order, resume, lock, memory."""

import fcntl
import functools
import os
import tracemalloc

import numpy as np
import pytest

from albert_jax.data import builtin_corpus, prepared, sources, vocabulary
from albert_jax.data.corpus import tokenize
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError, UsageError

BINARY = b'\0\1\2 not text' * 100
# A part per file (the small files here would otherwise make one part).
prepare = functools.partial(prepared.prepare, part_bytes=1)


@pytest.fixture(scope='module')
def small_vocab(tmp_path_factory) -> str:
  directory = str(tmp_path_factory.mktemp('vocab') / 'vocab')
  train_tokenizer(sources.read_sentences('builtin'), directory, vocab_size=300)
  return directory


def write_corpus(directory, documents_per_file) -> str:
  """text: files of builtin documents, `documents_per_file[i]` in file i; the source."""
  documents = builtin_corpus.documents()
  os.makedirs(directory)
  start = 0
  for i, count in enumerate(documents_per_file):
    chunk = [documents[(start + d) % len(documents)] for d in range(count)]
    start += count
    text = ''.join('\n'.join(sentences) + '\n\n' for sentences in chunk)
    with open(os.path.join(directory, f'{i:02d}.txt'), 'w') as f:
      f.write(text)
  return f'text:{directory}/*.txt'


def assert_same_documents(output, want, tokenizer):
  got = prepared.PreparedCorpus(output, tokenizer)
  np.testing.assert_array_equal(got.document_offsets, want.document_offsets)
  np.testing.assert_array_equal(got.segment_lengths, want.segment_lengths)
  for d in range(want.num_documents):
    np.testing.assert_array_equal(got.tokens(d), want.tokens(d))


def stats(directory, names):
  return {name: os.stat(os.path.join(directory, name)).st_ino for name in names} | {
    name + ':mtime': os.stat(os.path.join(directory, name)).st_mtime_ns for name in names
  }


def test_parts_prepared_in_parallel_keep_the_source_order(tmp_path, small_vocab):
  # Uneven parts, one of them empty, several shards each.
  source = write_corpus(str(tmp_path / 'corpus'), [30, 3, 0, 61, 17])
  output = str(tmp_path / 'prepared')
  tokenizer = vocabulary.load(small_vocab)
  metadata = prepare(source, small_vocab, output, num_workers=2, documents_per_shard=8)
  want = tokenize(sources.read_documents(source), tokenizer)
  assert metadata['num_documents'] == want.num_documents == 111
  assert metadata['shards'][:5] == [f'documents-00000-0000{k}.array_record' for k in range(4)] + [
    'documents-00001-00000.array_record'
  ]
  assert len(metadata['shards']) == 4 + 1 + 0 + 8 + 3
  assert_same_documents(output, want, tokenizer)
  assert sorted(os.listdir(output)) == sorted(
    metadata['shards'] + ['index.npz', 'metadata.json', 'vocab']
  )
  assert not os.path.exists(output + '.partial')


def test_a_bad_part_stops_the_run_and_a_rerun_resumes_after_the_fix(tmp_path, small_vocab, capsys):
  source = write_corpus(str(tmp_path / 'corpus'), [20, 20, 20, 20])
  bad = str(tmp_path / 'corpus' / '02.txt')
  good_text = open(bad, 'rb').read()
  with open(bad, 'wb') as f:
    f.write(BINARY)
  output = str(tmp_path / 'prepared')
  partial = output + '.partial'
  with pytest.raises(DataError) as failed:
    prepare(source, small_vocab, output, num_workers=1, documents_per_shard=8)
  assert str(failed.value) == f'{bad} looks binary (NUL bytes): expected UTF-8 text'
  assert not os.path.exists(output)
  finished = [f'documents-0000{p}-0000{k}.array_record' for p in (0, 1) for k in range(3)]
  finished += ['part-00000.npz', 'part-00001.npz']
  before = stats(partial, finished)
  # A shard left by a kill while writing part 2 is rewritten, not kept.
  with open(os.path.join(partial, 'documents-00002-00000.array_record'), 'wb') as f:
    f.write(b'torn')
  with open(bad, 'wb') as f:
    f.write(good_text)
  capsys.readouterr()
  metadata = prepare(source, small_vocab, output, num_workers=2, documents_per_shard=8)
  assert f'resuming {partial}: 2 of 4 parts done' in capsys.readouterr().out
  assert stats(output, finished[:-2]) == {k: v for k, v in before.items() if 'part-' not in k}
  clean = str(tmp_path / 'clean')
  assert prepare(source, small_vocab, clean, num_workers=2, documents_per_shard=8) == (metadata)
  tokenizer = vocabulary.load(small_vocab)
  assert_same_documents(output, prepared.PreparedCorpus(clean, tokenizer), tokenizer)


def test_a_rerun_with_other_settings_is_refused(tmp_path, small_vocab):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'bad.txt').write_bytes(BINARY)
  output = str(tmp_path / 'prepared')
  partial = output + '.partial'
  with pytest.raises(DataError, match='looks binary'):
    prepare(f'text:{corpus}/*.txt', small_vocab, output, num_workers=1)
  manifest = open(os.path.join(partial, 'manifest.json')).read()
  with pytest.raises(DataError) as refused:
    prepare(f'text:{corpus}/*.txt', small_vocab, output, documents_per_shard=5)
  assert str(refused.value) == (
    f'{partial} holds an unfinished run with another documents_per_shard: '
    f'delete {partial} to start over or choose another --output'
  )
  other = str(tmp_path / 'other_vocab')
  train_tokenizer(['other words entirely.'] * 20, other, vocab_size=30)
  with pytest.raises(DataError, match='another vocabulary: delete'):
    prepare(f'text:{corpus}/*.txt', other, output)
  assert open(os.path.join(partial, 'manifest.json')).read() == manifest


def test_a_second_run_on_the_same_output_and_bad_flags_are_refused(tmp_path, small_vocab):
  output = str(tmp_path / 'prepared')
  os.makedirs(output + '.partial')
  with open(os.path.join(output + '.partial', 'lock'), 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # As a first run would.
    with pytest.raises(DataError) as refused:
      prepare('builtin', small_vocab, output)
  assert str(refused.value) == (
    f'{output}.partial is in use by another prepare_data run: '
    'wait for it or choose another --output'
  )
  assert os.listdir(output + '.partial') == ['lock']
  with pytest.raises(UsageError, match='^documents_per_shard is 0: use 1 or more$'):
    prepare('builtin', small_vocab, str(tmp_path / 'other'), documents_per_shard=0)


def worker_peak(tmp_path, small_vocab, documents: int) -> tuple[int, int]:
  """(tracemalloc peak bytes, segments) of preparing one part of `documents`."""
  directory = str(tmp_path / f'out{documents}')
  os.makedirs(directory)
  source = write_corpus(str(tmp_path / f'corpus{documents}'), [documents])
  part = sources.parts(source)[0]
  tracemalloc.start()
  job = prepared._Job(source, sources.SourceOptions(), directory, documents_per_shard=10**6)
  prepared._prepare_part(job, part, 0)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  with np.load(os.path.join(directory, 'part-00000.npz')) as index:
    return peak, len(index['segment_lengths'])


def test_a_worker_holds_one_document_and_4_bytes_per_segment(tmp_path, small_vocab, monkeypatch):
  monkeypatch.setattr(prepared, '_worker_tokenizer', vocabulary.load(small_vocab))
  small, small_segments = worker_peak(tmp_path, small_vocab, 150)
  large, large_segments = worker_peak(tmp_path, small_vocab, 1500)
  assert large_segments > 9 * small_segments
  # About 5 (array('i') with its spare room); a list of ints would cost 8 or
  # more (a pointer each), holding the tokens 100 or more.
  assert (large - small) / (large_segments - small_segments) < 8


def test_small_files_are_grouped_into_parts(tmp_path, small_vocab):
  """Thousands of one-document files must not become thousands of shards."""
  source = write_corpus(str(tmp_path / 'corpus'), [2, 3, 1, 4])
  sizes = [os.path.getsize(p) for p in sorted((tmp_path / 'corpus').iterdir())]
  grouped = sources.parts(source, part_bytes=sizes[0] + sizes[1])
  assert [len(part.paths) for part in grouped] == [2, 2]
  assert [len(part.paths) for part in sources.parts(source)] == [4]
  metadata = prepared.prepare(source, small_vocab, str(tmp_path / 'prepared'), num_workers=2)
  assert len(metadata['shards']) == 1 and metadata['num_documents'] == 10
