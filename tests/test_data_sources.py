"""Sources: builtin, text: (lines and document formats, plain and .gz),
parquet:, jsonl:, tfds: (mock data), the sentence splitter, the markup filter,
streaming in bounded memory, bad input."""

import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from albert_jax.data import builtin_corpus, sources
from albert_jax.data.config import DataConfig
from albert_jax.data.markup import drop_markup
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


def test_splitter_knows_abbreviations_cjk_and_identifiers():
  assert split_sentences('Dr. Smith arrived at 3 p.m. on Jan. 5. He left.') == [
    'Dr. Smith arrived at 3 p.m. on Jan. 5.',
    'He left.',
  ]
  assert split_sentences('Mr. Brown met Prof. Lee, i.e. the U.S. expert. Done!') == [
    'Mr. Brown met Prof. Lee, i.e. the U.S. expert.',
    'Done!',
  ]
  assert split_sentences('我很高兴。「好吗？」是的！') == ['我很高兴。', '「好吗？」', '是的！']
  # sentencex alone would split after 'object.'.
  assert split_sentences('See object.__slots__ here. Then os.path.join.') == [
    'See object.__slots__ here.',
    'Then os.path.join.',
  ]
  german = 'Er kam am 3. Mai. Dann ging er.'
  assert split_sentences(german, 'de') == ['Er kam am 3. Mai.', 'Dann ging er.']
  assert len(split_sentences(german, 'en')) == 3  # English rules: '3.' ends one.


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
  with pytest.raises(DataError, match='unknown data source.*parquet:GLOB, jsonl:GLOB'):
    list(sources.read_documents('wikipedia'))
  for kind in ('parquet', 'jsonl'):
    with pytest.raises(DataError, match=f'{kind}:/nonexistent/\\* matches no files'):
      list(sources.read_documents(f'{kind}:/nonexistent/*'))
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


DOCUMENTATION = """Title
=====

Some prose here,
wrapped over lines. An example::

    x = f(a, b)
    print(x)

Back to prose. It goes on.

.. code-block:: c

   int main(void) { return 0; }

.. _a-target:

.. note::
   :class: aside

   A note's body stays.

+-----+-----+
| a   | b   |
+=====+=====+

```python
import os
```

<!-- YAML
added: v1.0
-->

>>> 1 + 1
2

=head1 NAME

perlfunc - Perl builtin functions

    my $x = shift;

Numbers alone go:
12345 678 90
"""


def test_markup_filter_keeps_prose_only():
  assert [line for line in drop_markup(DOCUMENTATION.splitlines()) if line] == [
    'Title',
    'Some prose here,',
    'wrapped over lines. An example:',
    'Back to prose. It goes on.',
    "A note's body stays.",
    'perlfunc - Perl builtin functions',
    'Numbers alone go:',
  ]


def test_text_document_format_with_and_without_markup(tmp_path):
  (tmp_path / 'a.txt').write_text(DOCUMENTATION)
  (tmp_path / 'b.txt').write_text('One short\nparagraph. Two.\n\nAnother one.\n')
  document = sources.SourceOptions(text_format='document')
  assert list(sources.read_documents(f'text:{tmp_path}/b.txt', document)) == [
    ['One short paragraph.', 'Two.', 'Another one.']
  ]
  prose = sources.SourceOptions(text_format='document', drop_markup=True)
  assert list(sources.read_documents(f'text:{tmp_path}/*.txt', prose))[0] == [
    'Title',
    'Some prose here, wrapped over lines.',
    'An example:',
    'Back to prose.',
    'It goes on.',
    "A note's body stays.",
    'perlfunc - Perl builtin functions',
    'Numbers alone go:',
  ]
  raw = list(sources.read_documents(f'text:{tmp_path}/a.txt', document))[0]
  assert 'x = f(a, b)' in ' '.join(raw)
  # The lines format drops the same lines, blank lines still ending documents.
  lines = sources.SourceOptions(drop_markup=True)
  assert list(sources.read_documents(f'text:{tmp_path}/a.txt', lines))[:2] == [
    ['Title'],
    ['Some prose here,', 'wrapped over lines. An example:'],
  ]


def test_unknown_text_format_is_one_line():
  with pytest.raises(DataError, match="text_format must be one of lines, document, got 'xml'"):
    sources.SourceOptions(text_format='xml')
  with pytest.raises(DataError, match='text_format') as error:
    DataConfig(text_format='xml')
  assert '\n' not in str(error.value)


RECORDS = [
  {'id': 1, 'text': 'Dr. Smith arrived. He left.\nA new paragraph.', 'meta': {'a': 1}},
  {'id': 2, 'text': ''},  # No text: no document.
  {'id': 3, 'text': 'Prose.\n| a | b |\n+---+---+\nMore prose.', 'meta': 'x'},  # A new type.
  {'id': 4},  # No field: no document.
]
DOCUMENTS = [['Dr. Smith arrived.', 'He left.', 'A new paragraph.'], ['Prose.', 'More prose.']]


def _write_jsonl(path, records):
  with (gzip.open if str(path).endswith('.gz') else open)(path, 'wt') as f:
    f.writelines(json.dumps(record) + '\n' for record in records)


@pytest.mark.parametrize('name', ['r.parquet', 'r.jsonl', 'r.jsonl.gz'])
def test_parquet_and_jsonl_records_are_documents(tmp_path, name):
  if name.endswith('.parquet'):
    # Parquet's columns have one type each: without the jsonl-only 'meta'.
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != 'meta'} for r in RECORDS])
    pq.write_table(table, tmp_path / name, row_group_size=2)
  else:
    _write_jsonl(tmp_path / name, RECORDS)
  kind = name.split('.')[1]
  source = f'{kind}:{tmp_path}/*.{kind}*'
  assert [p.paths for p in sources.parts(source)] == [(str(tmp_path / name),)]
  with_markup = list(sources.read_documents(source))
  assert with_markup[0] == DOCUMENTS[0] and '| a | b |' in with_markup[1]
  assert list(sources.read_documents(source, sources.SourceOptions(drop_markup=True))) == DOCUMENTS


def test_streaming_holds_a_batch_not_the_file(tmp_path):
  """32 MB of text read with peak Python and Arrow allocations under 8 MB."""
  paragraph = 'A sentence of plain prose, long enough to count. ' * 20  # 1 kB.
  records = [{'text': '\n'.join([paragraph] * 4), 'id': i} for i in range(8000)]
  pq.write_table(pa.Table.from_pylist(records), tmp_path / 'big.parquet', row_group_size=1000)
  _write_jsonl(tmp_path / 'big.jsonl', records)
  del records
  for kind in ('parquet', 'jsonl'):
    arrow_peak = documents = 0
    tracemalloc.start()
    for _ in sources.read_documents(f'{kind}:{tmp_path}/big.{kind}'):
      documents += 1
      arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert documents == 8000
    assert python_peak < 8e6 and arrow_peak < 8e6, (kind, python_peak, arrow_peak)


def _parquet(path, **columns):
  pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
  'name, make, message',
  [
    ('x.parquet', lambda p: p.write_text('not parquet'), 'cannot read .*x.parquet as parquet'),
    (
      'x.parquet',
      lambda p: _parquet(p, body=['a'], id=[1]),
      "x.parquet has no column 'text': set data.text_feature to one of body, id",
    ),
    ('x.parquet', lambda p: _parquet(p, text=[1]), "x.parquet: column 'text' holds int64"),
    (
      'x.jsonl',
      lambda p: p.write_text('{"text": "a"}\n{"text": "b"}\n{not json\n'),
      'x.jsonl: line 3 is not JSON',
    ),
    ('x.jsonl', lambda p: p.write_text('{"text": "a"}\n[1, 2]\n'), 'x.jsonl: line 2 is not a JSON'),
    ('x.jsonl', lambda p: p.write_text('{"text": "a"}\n{"text": 5}\n'), "line 2 has a 'text'"),
    (
      'x.jsonl',
      lambda p: p.write_text('{"body": "a", "id": 1}\n'),
      "x.jsonl has no field 'text': set data.text_feature to one of body, id",
    ),
    ('x.jsonl', lambda p: p.write_bytes(b'\x00\x01binary' * 100), 'x.jsonl looks binary'),
    ('x.jsonl.gz', lambda p: p.write_text('not gzip\n'), 'cannot read .*x.jsonl.gz'),
  ],
)
def test_bad_record_files_are_one_line_naming_the_file(tmp_path, name, make, message):
  make(tmp_path / name)
  kind = name.split('.')[1]
  with pytest.raises(DataError, match=message) as error:
    list(sources.read_documents(f'{kind}:{tmp_path}/{name}'))
  assert '\n' not in str(error.value)
