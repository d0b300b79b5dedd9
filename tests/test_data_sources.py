"""Sources: builtin, text: (plain and .gz), tfds: (mock data), bad input."""

import gzip

import pytest

from albert_jax.data import builtin_corpus, sources
from albert_jax.data.sentences import split_sentences
from albert_jax.errors import DataError


def test_builtin_needs_nothing():
  documents = list(sources.read_documents('builtin'))
  assert documents == builtin_corpus.documents()
  assert len(documents) > 150
  assert sum(map(len, documents)) > 1500
  # Prose only: the grammar rules and code blocks are dropped.
  assert not any('::=' in s for d in documents for s in d)
  assert any(
    s.startswith('The "if" statement is used for conditional') for d in documents for s in d
  )


def test_sentence_splitting_rule():
  text = 'One. "Two?" Three! 3.5 stays\nnew line 我很高兴。好吗？'
  assert split_sentences(text) == [
    'One.',
    '"Two?"',
    'Three!',
    '3.5 stays',
    'new line 我很高兴。',
    '好吗？',
  ]


def test_text_files_documents_and_gzip(tmp_path):
  (tmp_path / 'a.txt').write_text('s1\ns2\n\n\ns3\n')
  with gzip.open(tmp_path / 'b.txt.gz', 'wt') as f:
    f.write('t1\n\nt2\nt3')
  assert list(sources.read_documents(f'text:{tmp_path}/*')) == [
    ['s1', 's2'],
    ['s3'],
    ['t1'],
    ['t2', 't3'],
  ]
  assert list(sources.read_sentences(f'text:{tmp_path}/a.txt')) == ['s1', 's2', 's3']


def test_undecodable_lines_are_skipped_and_counted(tmp_path, caplog):
  good = [f'sentence number {i}.'.encode() for i in range(40)]
  (tmp_path / 'mixed.txt').write_bytes(b'\n'.join(good[:20] + [b'bad \xff\xfe'] + good[20:]))
  documents = list(sources.read_documents(f'text:{tmp_path}/mixed.txt'))
  assert sum(map(len, documents)) == 40
  assert 'skipped 1 undecodable lines of 41' in caplog.text


@pytest.mark.parametrize(
  'make, message',
  [
    (lambda p: None, 'matches no files'),
    (lambda p: (p / 'x.txt').write_text('\n\n  \n'), 'has no text'),
    (lambda p: (p / 'x.txt').write_bytes(b'\x00\x01\x02binary' * 100), 'looks binary'),
    (lambda p: (p / 'x.txt').write_bytes(b'\xff\xfe\xfa\n' * 100), 'looks binary'),
    (lambda p: (p / 'x.txt.gz').write_bytes(b'not gzip at all\n'), 'cannot read'),
  ],
)
def test_bad_text_input_is_one_clear_line(tmp_path, make, message):
  make(tmp_path)
  with pytest.raises(DataError, match=message) as error:
    list(sources.read_documents(f'text:{tmp_path}/x.txt*'))
  assert '\n' not in str(error.value)


def test_unknown_and_malformed_sources():
  with pytest.raises(DataError, match='unknown data source'):
    list(sources.read_documents('wikipedia'))
  with pytest.raises(DataError, match='names no dataset'):
    list(sources.read_documents('tfds::train'))
  with pytest.raises(DataError, match='tokenized documents, not text'):
    list(sources.read_documents('prepared:/tmp'))


def test_tfds_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=5):
    for spec in ('lm1b', 'imdb_reviews:test', 'tiny_shakespeare:validation'):
      documents = list(sources.read_documents(f'tfds:{spec}'))
      assert len(documents) == 5
      assert all(isinstance(s, str) and s for d in documents for s in d)
    with pytest.raises(DataError, match="no feature 'body'.*one of text"):
      list(sources.read_documents('tfds:lm1b', sources.SourceOptions(text_feature='body')))
  with pytest.raises(DataError, match='cannot read tfds:no_such_dataset'):
    list(sources.read_documents('tfds:no_such_dataset'))
