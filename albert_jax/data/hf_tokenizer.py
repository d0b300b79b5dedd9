"""Vocabularies read with Hugging Face's `tokenizers`: tokenizer.json, vocab.txt.

tokenizer.json is a whole pipeline (normaliser, pre-tokenizer, model,
decoder). transformers 5 uses it as it is, except for the tokenizer classes
that build their own pipeline around the file's vocabulary; of those, the
two that ALBERT checkpoints name are rebuilt here the same way, from the
directory's tokenizer class (tokenizer_config.json's, else config.json's,
else config.json's model_type) and settings:
  AlbertTokenizer (a Unigram model): `` and '' -> ", NFKD and accents
    stripped unless keep_accents, lowercase if do_lower_case, the file's
    SentencePiece charsmap; split on whitespace, '▁' prefixed;
  BertTokenizer (a WordPiece model): BERT's normaliser and pre-tokenizer.
vocab.txt is a BertTokenizer's vocabulary, one piece per line, id = line.

BERT's basic tokenization: control characters dropped, CJK characters split
one per word, lowercasing (do_lower_case, default true) and accent
stripping (strip_accents, default: as do_lower_case), split on whitespace
and punctuation; then WordPiece, '##' marking pieces inside a word.

Special tokens are matched in text before normalisation, as in transformers
("我很[MASK]兴" holds the mask id). `fingerprint` is the sha256 of the
pipeline as loaded and of the special tokens' names.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence

import tokenizers
import tqdm
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from albert_jax.data import tokenizer as base
from albert_jax.data.tokenizer import Normalization, Tokenizer
from albert_jax.errors import DataError

TOKENIZER_FILE = 'tokenizer.json'
VOCAB_FILE = 'vocab.txt'
MODEL_CONFIG = 'config.json'
# Special tokens sought by name when no tokenizer config names them.
CANDIDATES = {
  'pad': ('[PAD]', '<pad>'),
  'unk': ('[UNK]', '<unk>'),
  'cls': ('[CLS]', '<cls>', '<s>'),
  'sep': ('[SEP]', '<sep>', '</s>'),
  'mask': ('[MASK]', '<mask>'),
}
BERT_TOKENS = tuple(CANDIDATES[role][0] for role in base.ROLES)
_ALBERT_CLASSES = ('AlbertTokenizer', 'AlbertTokenizerFast')
_BERT_CLASSES = ('BertTokenizer', 'BertTokenizerFast')
_CLASS_OF_MODEL = {'albert': 'AlbertTokenizer', 'bert': 'BertTokenizer'}


class HFTokenizer(Tokenizer):
  """A `tokenizers.Tokenizer` with its special tokens' roles.

  Built by `load_tokenizer_json` or `load_vocab_txt`; `settings` are the
  BertTokenizer settings of a vocab.txt.
  """

  def __init__(
    self,
    backend: tokenizers.Tokenizer,
    tokens: dict[str, str],
    *,
    kind: str,
    vocab_lines: Sequence[str] = (),
    settings: dict | None = None,
  ):
    self.kind = kind
    self._backend = backend
    self._vocab_lines = list(vocab_lines)
    self._settings = settings or {}
    # transformers' backend holds its special tokens as special added tokens.
    backend.add_special_tokens(
      [tokenizers.AddedToken(tokens[r], special=True, normalized=False) for r in base.ROLES]
    )
    backend.no_truncation()
    backend.no_padding()
    vocab = backend.get_vocab(with_added_tokens=True)
    pieces = [''] * (max(vocab.values()) + 1)
    for piece, i in vocab.items():
      pieces[i] = piece
    specials = [i for i, t in backend.get_added_tokens_decoder().items() if t.special]
    model = backend.model
    if isinstance(model, models.WordPiece):
      prefix = model.continuing_subword_prefix
      word_start = lambda piece, apostrophe_joins_word: not piece.startswith(prefix)
    else:
      word_start = base.is_metaspace_word_start
    self._set_vocabulary(pieces, tokens, specials, word_start)
    described = json.dumps([backend.to_str(), tokens], sort_keys=True, ensure_ascii=False)
    self.fingerprint = hashlib.sha256(described.encode()).hexdigest()

  @classmethod
  def load_tokenizer_json(cls, directory: str) -> HFTokenizer:
    path = os.path.join(directory, TOKENIZER_FILE)
    try:
      with open(path, encoding='utf-8') as f:
        text = f.read()
      backend = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises plain Exceptions.
      raise DataError(f'cannot read {path}: {str(e).splitlines()[0]}') from None
    settings = base.read_json(os.path.join(directory, base.TOKENIZER_CONFIG))
    tokenizer_class = _tokenizer_class(directory, settings)
    if tokenizer_class in _ALBERT_CLASSES and isinstance(backend.model, models.Unigram):
      _albert_pipeline(backend, settings, json.loads(text).get('normalizer'))
    elif tokenizer_class in _BERT_CLASSES and isinstance(backend.model, models.WordPiece):
      _bert_pipeline(backend, _bert_settings(settings))
    vocabulary = backend.get_vocab(with_added_tokens=True)
    tokens = base.special_tokens(directory, vocabulary, CANDIDATES, source=path)
    return cls(backend, tokens, kind='tokenizer.json')

  @classmethod
  def load_vocab_txt(cls, directory: str) -> HFTokenizer:
    path = os.path.join(directory, VOCAB_FILE)
    try:
      with open(path, encoding='utf-8') as f:
        # As transformers' load_vocab: one piece per line, only '\n' cut.
        lines = [line.rstrip('\n') for line in f]
    except (OSError, UnicodeDecodeError) as e:
      raise DataError(f'cannot read {path}: {str(e).splitlines()[0]}') from None
    if not lines:
      raise DataError(f'{path} is empty: a vocab.txt holds one piece per line')
    settings = _bert_settings(base.read_json(os.path.join(directory, base.TOKENIZER_CONFIG)))
    candidates = dict(zip(base.ROLES, zip(BERT_TOKENS)))
    tokens = base.special_tokens(directory, lines, candidates, source=path)
    return cls.from_vocab_lines(lines, tokens, settings)

  @classmethod
  def from_vocab_lines(cls, lines: Sequence[str], tokens: dict[str, str], settings: dict):
    """A BertTokenizer of the pieces `lines` (id = index) and its settings."""
    # A repeated piece keeps its last id, as in transformers.
    vocab = {piece: i for i, piece in enumerate(lines)}
    backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=tokens['unk']))
    _bert_pipeline(backend, settings)
    return cls(backend, tokens, kind='vocab.txt', vocab_lines=lines, settings=settings)

  def save(self, directory: str) -> None:
    base.write_files(directory, self._files({}))

  def save_hf(self, directory: str, *, model_max_length: int) -> None:
    special = self.hf_special_tokens()
    files = self._files({'model_max_length': model_max_length})
    files[base.SPECIAL_TOKENS_MAP] = base.json_bytes(special)
    base.write_files(directory, files)

  def _files(self, extra: dict) -> dict[str, bytes]:
    """The vocabulary file and a tokenizer_config.json with which
    transformers builds the same pipeline from it: BertTokenizer's settings
    for a vocab.txt, a tokenizer.json as it is (the pipeline as loaded)."""
    if self.kind == 'vocab.txt':
      vocabulary = {VOCAB_FILE: ''.join(f'{line}\n' for line in self._vocab_lines).encode()}
      config = {'tokenizer_class': 'BertTokenizer', **self._settings}
    else:
      vocabulary = {TOKENIZER_FILE: self._backend.to_str(pretty=True).encode()}
      config = {'tokenizer_class': 'PreTrainedTokenizerFast'}
    config = {**config, **extra, **self.hf_special_tokens()}
    return {base.TOKENIZER_CONFIG: base.json_bytes(config), **vocabulary}

  def encode(self, text: str) -> list[int]:
    return self._backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self._backend.id_to_token(int(i)) or ''


def _tokenizer_class(directory: str, settings: dict) -> str | None:
  """The tokenizer class transformers' AutoTokenizer picks for `directory`."""
  if settings.get('tokenizer_class'):
    return settings['tokenizer_class']
  model_config = base.read_json(os.path.join(directory, MODEL_CONFIG))
  return model_config.get('tokenizer_class') or _CLASS_OF_MODEL.get(model_config.get('model_type'))


def _bert_settings(settings: dict) -> dict:
  """BertTokenizer's settings, transformers' defaults filled in."""
  return {
    'do_lower_case': settings.get('do_lower_case', True),
    'strip_accents': settings.get('strip_accents'),
    'tokenize_chinese_chars': settings.get('tokenize_chinese_chars', True),
  }


def _bert_pipeline(backend: tokenizers.Tokenizer, settings: dict) -> None:
  """Sets transformers' BertTokenizer pipeline on `backend`."""
  backend.normalizer = normalizers.BertNormalizer(
    clean_text=True,
    handle_chinese_chars=settings['tokenize_chinese_chars'],
    strip_accents=settings['strip_accents'],
    lowercase=settings['do_lower_case'],
  )
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  backend.decoder = decoders.WordPiece(prefix='##')


def _albert_pipeline(
  backend: tokenizers.Tokenizer, settings: dict, normalizer: dict | None
) -> None:
  """Sets transformers' AlbertTokenizer pipeline on `backend`, keeping the
  SentencePiece charsmap of the file's `normalizer` (its JSON)."""
  steps = [normalizers.Replace('``', '"'), normalizers.Replace("''", '"')]
  if not settings.get('keep_accents', False):
    steps += [normalizers.NFKD(), normalizers.StripAccents()]
  if settings.get('do_lower_case', True):
    steps.append(normalizers.Lowercase())
  parts = (normalizer or {}).get('normalizers', [normalizer or {}])
  for part in parts:
    if part.get('type') == 'Precompiled' and part.get('precompiled_charsmap'):
      steps.append(normalizers.Precompiled(base64.b64decode(part['precompiled_charsmap'])))
  backend.normalizer = normalizers.Sequence(steps)
  scheme = 'always' if settings.get('add_prefix_space', True) else 'never'
  backend.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme=scheme),
    ]
  )
  backend.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme=scheme)


def train_wordpiece(
  sentences: Iterable[str], *, vocab_size: int, normalization: Normalization, max_sentences: int
) -> tuple[HFTokenizer, int]:
  """A BERT WordPiece vocabulary of `sentences` (`train_tokenizer`), and the
  number of characters it was trained on."""
  settings = {
    'do_lower_case': normalization.lowercase,
    'strip_accents': normalization.strip_accents,
    'tokenize_chinese_chars': True,
  }
  backend = tokenizers.Tokenizer(models.WordPiece(unk_token=BERT_TOKENS[1]))
  _bert_pipeline(backend, settings)
  progress = tqdm.tqdm(
    itertools.islice(sentences, max_sentences),
    desc='sentences',
    unit=' sentences',
    disable=None,  # A bar on a terminal only, gone when done.
    leave=False,
  )
  texts, inside = [], set()
  for sentence in progress:
    if sentence.strip():
      texts.append(sentence)
      words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(sentence))
      inside.update(c for word, _ in words for c in word[1:])
  if not texts:
    raise DataError('cannot train a tokenizer: the corpus has no text')
  # The trainer numbers '##' pieces in hash order and breaks ties between
  # equally frequent merges by number, so that the same corpus could give
  # another vocabulary (huggingface/tokenizers#1794): fixed numbers for every
  # '##' character make training deterministic.
  continuing = [f'##{c}' for c in sorted(inside)]
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size, special_tokens=[*BERT_TOKENS, *continuing], show_progress=False
  )
  backend.train_from_iterator(texts, trainer, length=len(texts))
  vocab = backend.get_vocab(with_added_tokens=True)
  lines = sorted(vocab, key=vocab.__getitem__)
  tokens = dict(zip(base.ROLES, BERT_TOKENS))
  return HFTokenizer.from_vocab_lines(lines, tokens, settings), sum(map(len, texts))
