"""Every kind of vocabulary gives transformers' ids, and round-trips with it.

Kinds: a BERT vocab.txt (uncased, cased, CJK unsplit), tokenizer.json as
transformers 5 saves a BertTokenizer and an AlbertTokenizer (rebuilt from
the class and its settings), a Unigram tokenizer.json made with `tokenizers`
alone, and spiece.model. All built here, offline.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from albert_jax.data import vocabulary
from albert_jax.data.tokenizer import Normalization
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError

import train_testing

transformers = pytest.importorskip('transformers')
tokenizers = pytest.importorskip('tokenizers')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
  '我很高兴认识你。Hello WORLD!',
  'Café au lait, NAÏVE résumé: 1,000 items.',
  '今天天气很好，我们去公园散步吧。The cats are PLAYING.',
  '  Spaces\tand\nnewlines  中文English混合 ',
  'unknown ☃ symbols ∑ and 😀',
]
CORPUS = [
  '我很高兴认识你。',
  '今天天气很好，我们去公园散步吧。',
  '中文和English混合的句子。',
  'Hello world, the cats are playing in the café.',
  'A naïve résumé lists 1,000 items.',
  'Spaces and newlines and symbols.',
] * 20
CJK = sorted({c for t in TEXTS + CORPUS for c in t if '\u4e00' <= c <= '\u9fff'})
WORDS = 'hello world the cat are play in cafe café au lait naive résumé resume items spaces and new'
# BERT's layout: specials not at 0-4 ([UNK]=3, [CLS]=4, [SEP]=5, [MASK]=6).
BERT_PIECES = [
  '[PAD]',
  '[unused0]',
  '[unused1]',
  '[UNK]',
  '[CLS]',
  '[SEP]',
  '[MASK]',
  *CJK,
  *'。，！!,.:',
  *WORDS.split(),
  *'abcdefghijklmnopqrstuvwxyz0123456789',
  *'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
  *(f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz0123456789'),
  '##ing',
  '##lines',
  '##ish',
  '##ls',
]
BERT_SETTINGS = {
  'vocab_uncased': {'do_lower_case': True},
  'vocab_cased': {'do_lower_case': False},
  'vocab_cjk_unsplit': {'do_lower_case': True, 'tokenize_chinese_chars': False},
}
KINDS = {
  'vocab_uncased': 'vocab.txt',
  'vocab_cased': 'vocab.txt',
  'vocab_cjk_unsplit': 'vocab.txt',
  'bert_json': 'tokenizer.json',
  'albert_json': 'tokenizer.json',
  'albert_json_accents': 'tokenizer.json',
  'unigram_json': 'tokenizer.json',
  'spiece': 'sentencepiece',
}


def write_json(path, value):
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, ensure_ascii=False)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return tmp_path_factory.mktemp('vocabularies')


def build(root, name: str) -> str:
  """The directory of vocabulary `name` (see KINDS), made once."""
  directory = str(root / name)
  if os.path.isdir(directory):
    return directory
  if name in BERT_SETTINGS:
    os.makedirs(directory)
    with open(f'{directory}/vocab.txt', 'w', encoding='utf-8') as f:
      f.write('\n'.join(BERT_PIECES) + '\n')
    write_json(
      f'{directory}/tokenizer_config.json',
      {'tokenizer_class': 'BertTokenizer', **BERT_SETTINGS[name]},
    )
  elif name == 'bert_json':  # transformers 5 writes tokenizer.json only.
    transformers.AutoTokenizer.from_pretrained(build(root, 'vocab_uncased')).save_pretrained(
      directory
    )
  elif name == 'spiece':
    train_tokenizer(CORPUS, directory, vocab_size=120)
  elif name == 'albert_json':
    transformers.AlbertTokenizer.from_pretrained(build(root, 'spiece')).save_pretrained(directory)
  elif name == 'albert_json_accents':  # The class's settings, not the file's normaliser.
    shutil.copytree(build(root, 'albert_json'), directory)
    config = json.load(open(f'{directory}/tokenizer_config.json'))
    write_json(f'{directory}/tokenizer_config.json', {**config, 'keep_accents': True})
  elif name == 'unigram_json':
    train_testing.unigram_tokenizer_json(
      directory, CORPUS, vocab_size=150, normalizer=tokenizers.normalizers.NFKC()
    )
    write_json(f'{directory}/tokenizer_config.json', {'tokenizer_class': 'PreTrainedTokenizerFast'})
  return directory


def theirs_of(directory: str):
  if not os.path.isfile(f'{directory}/tokenizer_config.json'):  # Our spiece.model.
    return transformers.AlbertTokenizer.from_pretrained(directory)
  return transformers.AutoTokenizer.from_pretrained(directory)


def their_ids(theirs, text):
  return theirs(text, add_special_tokens=False)['input_ids']


def assert_same_ids(ours, theirs):
  for text in TEXTS:
    assert ours.encode(text) == their_ids(theirs, text), text
  assert ours.encode_batch(TEXTS) == [ours.encode(t) for t in TEXTS]
  for role in ('pad', 'unk', 'cls', 'sep', 'mask'):
    want = getattr(theirs, f'{role}_token_id')
    if want is not None:  # A bare tokenizer.json names none.
      assert getattr(ours, f'{role}_id') == want, role


@pytest.mark.parametrize('name', KINDS)
def test_ids_and_decode_match_transformers(root, name):
  directory = build(root, name)
  ours, theirs = vocabulary.load(directory), theirs_of(directory)
  assert ours.kind == KINDS[name]
  assert ours.vocab_size == len(theirs)
  assert_same_ids(ours, theirs)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ours.decode(ids) == theirs.decode(ids)
  for i in range(ours.vocab_size):  # fill-mask's token_str.
    assert ours.decode([i]) == theirs.decode([i]), i
    assert ours.id_to_piece(i) == theirs.convert_ids_to_tokens(i)


@pytest.mark.parametrize('name', KINDS)
def test_save_hf_gives_transformers_the_same_ids(root, tmp_path, name):
  ours = vocabulary.load(build(root, name))
  out = str(tmp_path / 'hf')
  ours.save_hf(out, model_max_length=128)
  assert {'tokenizer_config.json', 'special_tokens_map.json'} <= set(os.listdir(out))
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  assert_same_ids(ours, theirs)
  assert theirs.model_max_length == 128 and theirs.mask_token == ours.mask_token
  again = vocabulary.load(out)
  assert again.kind == ours.kind and again.fingerprint == ours.fingerprint
  assert [again.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]


@pytest.mark.parametrize('name', KINDS)
def test_transformers_save_pretrained_loads_with_the_same_ids(root, tmp_path, name):
  directory = build(root, name)
  ours = vocabulary.load(directory)
  out = str(tmp_path / 'saved')
  theirs_of(directory).save_pretrained(out)
  assert not {'spiece.model', 'vocab.txt'} & set(os.listdir(out))
  loaded = vocabulary.load(out)
  assert loaded.kind == 'tokenizer.json'
  assert [loaded.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
  assert (loaded.cls_id, loaded.sep_id, loaded.mask_id) == (ours.cls_id, ours.sep_id, ours.mask_id)


@pytest.mark.parametrize('name', KINDS)
def test_save_and_load_keep_ids_and_fingerprint(root, tmp_path, name):
  ours = vocabulary.load(build(root, name))
  ours.save(str(tmp_path / 'copy'))
  again = vocabulary.load(str(tmp_path / 'copy'))
  assert again.kind == ours.kind and again.fingerprint == ours.fingerprint
  assert [again.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
  assert (again.is_word_start == ours.is_word_start).all()
  assert (again.special_ids == ours.special_ids).all()


def test_special_ids_and_word_starts_come_from_the_vocabulary(root):
  ours = vocabulary.load(build(root, 'vocab_uncased'))
  assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 3, 4, 5, 6)
  assert ours.special_ids.tolist() == [0, 3, 4, 5, 6] and ours.mask_token == '[MASK]'
  piece = {p: i for i, p in enumerate(BERT_PIECES)}
  assert not ours.is_word_start[[piece['##s'], piece['##ing']]].any()
  assert ours.is_word_start[[piece['hello'], piece['我'], piece['。'], 6]].all()
  assert ours.encode('[MASK]我') == [6, piece['我']]  # Special tokens are matched, as in HF.
  unigram = vocabulary.load(build(root, 'unigram_json'))
  starts = [unigram.is_word_start[i] for i in unigram.encode('hello playing')]
  assert starts[0] and starts.count(True) == 2


def test_precedence_of_vocabulary_files(root, tmp_path):
  both = tmp_path / 'both'
  shutil.copytree(build(root, 'spiece'), both)
  shutil.copy(f'{build(root, "vocab_uncased")}/vocab.txt', both)
  assert vocabulary.load(str(both)).kind == 'sentencepiece'
  json_and_txt = tmp_path / 'json_and_txt'
  shutil.copytree(build(root, 'bert_json'), json_and_txt)
  shutil.copy(f'{build(root, "vocab_uncased")}/vocab.txt', json_and_txt)
  assert vocabulary.load(str(json_and_txt)).kind == 'tokenizer.json'


def test_bad_directories(root, tmp_path):
  def error(directory) -> str:
    with pytest.raises(DataError) as caught:
      vocabulary.load(str(directory))
    assert '\n' not in str(caught.value)
    return str(caught.value)

  empty = tmp_path / 'empty'
  empty.mkdir()
  assert 'none of spiece.model, tokenizer.json, vocab.txt (it is empty)' in error(empty)
  model = tmp_path / 'model'
  model.mkdir()
  (model / 'config.json').write_text('{}')
  (model / 'model.safetensors').write_bytes(b'')
  assert '(it holds config.json, model.safetensors)' in error(model)
  assert 'the directory does not exist' in error(tmp_path / 'missing')

  no_mask = tmp_path / 'no_mask'
  no_mask.mkdir()
  (no_mask / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n')
  assert re.search(r"no_mask/vocab.txt has no mask token \('\[MASK\]' not in", error(no_mask))
  (no_mask / 'tokenizer_config.json').write_text('{"mask_token": "hello"}')
  assert vocabulary.load(str(no_mask)).mask_id == 4
  (no_mask / 'tokenizer_config.json').write_text('{"mask_token": ')
  assert 'cannot read' in error(no_mask) and 'tokenizer_config.json' in error(no_mask)

  bad_json = tmp_path / 'bad_json'
  bad_json.mkdir()
  (bad_json / 'tokenizer.json').write_text('{"model": 3}')
  assert error(bad_json).startswith(f'cannot read {bad_json}/tokenizer.json: ')
  blank = tmp_path / 'blank'
  blank.mkdir()
  (blank / 'vocab.txt').write_text('')
  assert 'is empty' in error(blank)


def test_train_wordpiece(tmp_path, capfd):
  directory = str(tmp_path / 'wp')
  ours = train_tokenizer(CORPUS, directory, vocab_size=120, model_type='wordpiece')
  out, err = capfd.readouterr()
  characters = sum(len(s) for s in CORPUS)
  assert re.fullmatch(
    rf'trained a {ours.vocab_size}-piece WordPiece tokenizer on {characters:,} characters '
    rf'in \d+\.\d s: {re.escape(directory)}\n',
    out,
  ), out
  assert sorted(os.listdir(directory)) == ['tokenizer_config.json', 'vocab.txt']
  assert ours.kind == 'vocab.txt' and ours.vocab_size <= 120
  lines = open(f'{directory}/vocab.txt', encoding='utf-8').read().splitlines()
  assert lines[:5] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  assert set(CJK) <= set(lines)  # Chinese: one piece per character.
  assert [ours.id_to_piece(i) for i in ours.encode('我很高兴')] == list('我很高兴')
  assert_same_ids(ours, transformers.AutoTokenizer.from_pretrained(directory))
  again = train_tokenizer(CORPUS, str(tmp_path / 'again'), vocab_size=120, model_type='wordpiece')
  assert again.fingerprint == ours.fingerprint  # Deterministic.
  cased = train_tokenizer(
    CORPUS,
    str(tmp_path / 'cased'),
    vocab_size=120,
    model_type='wordpiece',
    normalization=Normalization(lowercase=False, strip_accents=False),
  )
  assert cased.decode(cased.encode('café')) == 'café'
  assert_same_ids(cased, transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'cased')))
  with pytest.raises(DataError, match='already holds a tokenizer'):
    train_tokenizer(CORPUS, directory, vocab_size=120, model_type='wordpiece')
  with pytest.raises(DataError, match='corpus has no text'):
    train_tokenizer(['', ' '], str(tmp_path / 'none'), vocab_size=120, model_type='wordpiece')
  with pytest.raises(DataError, match="model_type='bpe': use one of unigram, wordpiece"):
    train_tokenizer(CORPUS, str(tmp_path / 'bpe'), vocab_size=120, model_type='bpe')


def test_train_tokenizer_launcher_wordpiece(tmp_path):
  corpus = tmp_path / 'zh.txt'
  corpus.write_text('\n'.join(CORPUS), encoding='utf-8')
  done = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.train_tokenizer',
      '--model_type=wordpiece',
      f'--source=text:{corpus}',
      '--vocab_size=100',
      f'--output={tmp_path}/v',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert done.returncode == 0, done.stderr
  assert re.fullmatch(
    rf'trained a \d+-piece WordPiece tokenizer on [\d,]+ characters in \d+\.\d s: {tmp_path}/v',
    done.stdout.strip(),
  ), done.stdout
  assert vocabulary.load(f'{tmp_path}/v').kind == 'vocab.txt'
