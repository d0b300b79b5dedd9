"""SentencePiece tokenizer: ALBERT ids, normalisation saved and reapplied,
Chinese, errors (the other kinds: test_vocabularies.py)."""

import os
import re
import subprocess
import sys

import pytest

from albert_jax.data import sources, vocabulary
from albert_jax.data.tokenizer import (
  Normalization,
  is_metaspace_word_start,
)
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHINESE = [
  '我很高兴认识你。',
  '今天天气很好，我们去公园散步吧。',
  '他很高兴地笑了。',
  '我们都很高兴。',
  '你今天高兴吗？',
]


@pytest.fixture(scope='module')
def vocab_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('vocab'))
  train_tokenizer(sources.read_sentences('builtin'), directory, vocab_size=2000)
  return directory


def test_special_ids_and_files(vocab_dir):
  tokenizer = vocabulary.load(vocab_dir)
  assert os.path.isfile(os.path.join(vocab_dir, 'spiece.model'))
  pieces = [tokenizer.id_to_piece(i) for i in range(5)]
  assert pieces == ['<pad>', '<unk>', '[CLS]', '[SEP]', '[MASK]']
  assert tokenizer.kind == 'sentencepiece'
  ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
  assert ids == (0, 1, 2, 3, 4) and tokenizer.mask_token == '[MASK]'
  assert tokenizer.special_ids.tolist() == [0, 1, 2, 3, 4]
  assert tokenizer.vocab_size == 2000
  assert tokenizer.is_word_start.shape == (2000,)


def _original_is_start_piece_sp(piece: str) -> bool:
  """google-research/albert create_pretraining_data.py `_is_start_piece_sp`
  as it runs under Python 3 (its punctuation string has \" twice and no
  apostrophe; € and £ are added as bytes)."""
  special_pieces = set('!"#$%&"()*+,-./:;?@[\\]^_`{|}~')
  special_pieces |= {'€'.encode(), '£'.encode()}
  english_chars = set('abcdefghijklmnopqrstuvwxyz')
  return (
    piece.startswith('\u2581')
    or piece.startswith('<')
    or piece in special_pieces
    or not all(c.lower() in english_chars | special_pieces for c in piece)
  )


# piece: (the original: starts a word, this code's earlier rule).
WORD_STARTS = {
  "'s": (True, False),
  "n't": (True, False),
  "'ll": (True, False),
  "s'": (True, False),
  'a€': (True, False),
  "'": (True, True),
  's': (False, False),
  'ing': (False, False),
  'a-b': (False, False),
  '\u2581it': (True, True),
  '-': (True, True),
  '1': (True, True),
  'é': (True, True),
  '<unk>': (True, True),
}


@pytest.mark.parametrize('piece', sorted(WORD_STARTS))
def test_word_starts_are_the_originals(piece):
  original, earlier = WORD_STARTS[piece]
  assert _original_is_start_piece_sp(piece) == original  # The table is the original's.
  assert is_metaspace_word_start(piece) == original
  assert is_metaspace_word_start(piece, apostrophe_joins_word=True) == earlier


def test_word_starts_of_a_vocabulary_follow_the_switch(vocab_dir):
  tokenizer = vocabulary.load(vocab_dir)
  pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  want = [_original_is_start_piece_sp(p) for p in pieces]
  want[:5] = [True] * 5  # The special tokens.
  assert tokenizer.is_word_start.tolist() == want
  assert tokenizer.word_starts().tolist() == want
  joined = tokenizer.word_starts(apostrophe_joins_word=True)
  differ = [pieces[i] for i in range(len(pieces)) if joined[i] != want[i]]
  # Pieces with an apostrophe (the builtin corpus has quoted code) and no
  # other reason to start a word.
  assert differ and all("'" in p and not joined[pieces.index(p)] for p in differ)


def test_normalization_steps():
  text = '  Crème   BRÛLÉE\tnaïve '
  assert Normalization()(text) == 'creme brulee naive'
  assert Normalization(lowercase=False)(text) == 'Creme BRULEE naive'
  assert Normalization(strip_accents=False)(text) == 'crème brûlée naïve'
  assert Normalization(collapse_whitespace=False)(text) == ('  creme   brulee\tnaive ')


def test_encode_decode_round_trip(vocab_dir):
  tokenizer = vocabulary.load(vocab_dir)
  ids = tokenizer.encode('The  "if" statement is used for CONDITIONAL execution.')
  assert all(5 <= i < tokenizer.vocab_size for i in ids)
  assert tokenizer.decode(ids) == ('the "if" statement is used for conditional execution.')
  assert tokenizer.encode_batch(['a b', 'c']) == [tokenizer.encode('a b'), tokenizer.encode('c')]


def test_saved_normalization_is_reapplied(tmp_path):
  sentences = ['Hello World.', 'Python Is Fun.', 'Crème Brûlée.'] * 50
  directory = str(tmp_path / 'cased')
  train_tokenizer(
    sentences,
    directory,
    vocab_size=60,
    normalization=Normalization(lowercase=False, strip_accents=False),
  )
  tokenizer = vocabulary.load(directory)
  assert tokenizer.normalization == Normalization(lowercase=False, strip_accents=False)
  assert tokenizer.decode(tokenizer.encode('Hello   World.')) == 'Hello World.'
  assert 'û' in tokenizer.decode(tokenizer.encode('Brûlée'))


def test_chinese_round_trip(tmp_path):
  directory = str(tmp_path / 'zh')
  tokenizer = train_tokenizer(CHINESE * 20, directory, vocab_size=80)
  for text in ['我很高兴', '今天天气很好']:
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids
    assert vocabulary.load(directory).decode(ids) == text


def test_training_is_quiet_but_for_one_summary_line(tmp_path, capfd):
  directory = str(tmp_path / 'v')
  sentences = list(sources.read_sentences('builtin'))
  tokenizer = train_tokenizer(sentences, directory, vocab_size=300)
  out, err = capfd.readouterr()
  # SentencePiece's C++ log (trainer spec, EM iterations) stays off; no bar
  # off a terminal.
  assert len(err.strip().splitlines()) <= 2, err
  assert 'trainer_interface' not in err and 'EM sub_iter' not in err
  characters = sum(len(Normalization()(s)) for s in sentences)
  summary = re.escape(
    f'trained a {tokenizer.vocab_size:,}-piece tokenizer on {characters:,} characters '
    '(coverage 0.99995) in '
  )
  assert re.fullmatch(summary + rf'\d+\.\d s: {re.escape(directory)}\n', out), out
  assert tokenizer.vocab_size == 300 and characters > 100_000


def test_vocab_size_too_large_gives_smaller_vocab(tmp_path, caplog):
  tokenizer = train_tokenizer(
    ['a tiny corpus.', 'it has few words.'] * 10, str(tmp_path / 'v'), vocab_size=5000
  )
  assert 5 < tokenizer.vocab_size < 5000
  assert 'corpus too small for vocab_size=5000' in caplog.text


def test_matches_hugging_face_albert_tokenizer(vocab_dir):
  transformers = pytest.importorskip('transformers')
  ours = vocabulary.load(vocab_dir)
  theirs = transformers.AlbertTokenizer.from_pretrained(vocab_dir)
  for text in [
    'The "if" statement is used for conditional execution.',
    '  Héllo   WORLD, naïve café: 1,000 items!',
    'x = 3.14',
  ]:
    assert ours.encode(text) == theirs(text, add_special_tokens=False)['input_ids']
  assert theirs('a b')['input_ids'] == [ours.cls_id, *ours.encode('a b'), ours.sep_id]
  ids = ours.encode('Héllo WORLD, 1,000 items!')
  assert ours.decode(ids) == theirs.decode(ids)
  for i in range(ours.vocab_size):  # fill-mask's token_str.
    assert ours.decode([i]) == theirs.decode([i])


def test_bad_vocabularies(tmp_path, vocab_dir):
  with pytest.raises(DataError, match='no tokenizer at .*the directory does not exist'):
    vocabulary.load(str(tmp_path / 'missing'))
  # A SentencePiece model with SentencePiece's default ids, not ALBERT's.
  import sentencepiece as spm

  plain = tmp_path / 'plain'
  plain.mkdir()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(['some text here.'] * 20),
    model_prefix=str(plain / 'spiece'),
    vocab_size=13,
    minloglevel=2,
  )
  with pytest.raises(DataError) as error:
    vocabulary.load(str(plain))
  assert 'not an ALBERT vocabulary: it has no <pad> piece' in str(error.value)
  assert '\n' not in str(error.value)
  (tmp_path / 'junk').mkdir()
  (tmp_path / 'junk' / 'spiece.model').write_bytes(b'\x00junk' * 10)
  with pytest.raises(DataError, match='not a SentencePiece model'):
    vocabulary.load(str(tmp_path / 'junk'))
  with pytest.raises(DataError, match='already holds a tokenizer'):
    train_tokenizer(['x y z.'], vocab_dir, vocab_size=30)
  with pytest.raises(DataError, match='corpus has no text'):
    train_tokenizer(['', '   '], str(tmp_path / 'empty'), vocab_size=30)


def test_train_tokenizer_launcher(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text(
    '\n'.join(['First sentence here.', 'Second one.', '', 'Another document.'] * 30)
  )
  run = lambda *flags: subprocess.run(
    [sys.executable, '-m', 'launch.train_tokenizer', *flags],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  done = run(f'--source=text:{corpus}', '--vocab_size=40', f'--output={tmp_path}/v')
  assert done.returncode == 0, done.stderr
  assert re.fullmatch(
    rf'trained a \d\d-piece tokenizer on [\d,]+ characters \(coverage 0.99995\) '
    rf'in \d+\.\d s: {tmp_path}/v',
    done.stdout.strip(),
  ), done.stdout
  assert len(done.stderr.strip().splitlines()) <= 2, done.stderr
  assert vocabulary.load(f'{tmp_path}/v').vocab_size <= 40
  failed = run(f'--source=text:{tmp_path}/nothing*.txt', f'--output={tmp_path}/w')
  assert failed.returncode != 0
  assert failed.stderr.strip().splitlines()[-1].startswith('error: text:')
