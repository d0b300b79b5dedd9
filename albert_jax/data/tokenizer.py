"""The tokenizer interface and its three kinds of vocabulary.

A vocabulary directory holds one of (`vocabulary.load` takes the first found):
  spiece.model    SentencePiece unigram model (ALBERT's own, and what
                  `train_tokenizer` writes by default), normalised as its
                  normalization.json says, else as a Hugging Face
                  tokenizer_config.json says (do_lower_case, keep_accents,
                  remove_space), else with ALBERT's defaults
                  (sentencepiece_tokenizer.py);
  tokenizer.json  a Hugging Face `tokenizers` pipeline (Unigram, WordPiece,
                  ...), as transformers 5 saves every tokenizer
                  (hf_tokenizer.py);
  vocab.txt       a BERT WordPiece vocabulary (Chinese ALBERTs), with BERT's
                  basic tokenization as tokenizer_config.json sets it:
                  do_lower_case, strip_accents, tokenize_chinese_chars
                  (hf_tokenizer.py).
spiece.model comes first: it is what our own directories hold, and where a
Hugging Face directory holds more than one file they describe the same
tokenizer. tokenizer.json comes before vocab.txt, as in transformers.

Special tokens are looked up by name, never assumed at fixed ids: the names
in tokenizer_config.json (or special_tokens_map.json) when present, else the
kind's usual ones (<pad> <unk> [CLS] [SEP] [MASK] for SentencePiece,
[PAD] [UNK] [CLS] [SEP] [MASK] for vocab.txt, either for tokenizer.json).
Ids are what transformers' `AutoTokenizer` gives on the same directory
(`add_special_tokens=False`), and `save_hf` writes files with which it gives
them again.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from albert_jax.errors import DataError

VOCABULARY_FILES = ('spiece.model', 'tokenizer.json', 'vocab.txt')
TOKENIZER_CONFIG = 'tokenizer_config.json'
SPECIAL_TOKENS_MAP = 'special_tokens_map.json'
ROLES = ('pad', 'unk', 'cls', 'sep', 'mask')
MODEL_TYPES = ('unigram', 'wordpiece')

# ALBERT's `_is_start_piece_sp`: punctuation and any piece with a character
# outside a-z and its punctuation list starts a new word (foreign scripts
# count as whole pieces). The list lacks the apostrophe (its author wrote \"
# twice), so pieces such as 's and n't start words; its € and £ are added as
# bytes and never match a character, so they start words too.
_PUNCTUATION = frozenset('!"#$%&()*+,-./:;?@[\\]^_`{|}~')
_WORD_CHARS = frozenset('abcdefghijklmnopqrstuvwxyz') | _PUNCTUATION
# This code's earlier rule (data.apostrophe_joins_word): the apostrophe, €
# and £ as punctuation, so 's and n't continue the previous word.
_JOINING_PUNCTUATION = _PUNCTUATION | frozenset("'€£")
_JOINING_WORD_CHARS = _WORD_CHARS | _JOINING_PUNCTUATION


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Text normalisation of a trained tokenizer (ALBERT's defaults).

  SentencePiece applies it before the model; a WordPiece tokenizer keeps
  `lowercase` and `strip_accents` as BERT's settings of the same names.
  """

  collapse_whitespace: bool = True
  strip_accents: bool = True
  lowercase: bool = True

  def __call__(self, text: str) -> str:
    if self.collapse_whitespace:
      text = ' '.join(text.split())
    if self.strip_accents:
      text = ''.join(c for c in unicodedata.normalize('NFKD', text) if not unicodedata.combining(c))
    if self.lowercase:
      text = text.lower()
    return text


def is_metaspace_word_start(piece: str, *, apostrophe_joins_word: bool = False) -> bool:
  """ALBERT's word-start rule for '▁'-prefixed (SentencePiece) pieces;
  `apostrophe_joins_word`: this code's earlier rule (see _PUNCTUATION)."""
  punctuation = _JOINING_PUNCTUATION if apostrophe_joins_word else _PUNCTUATION
  word_chars = _JOINING_WORD_CHARS if apostrophe_joins_word else _WORD_CHARS
  return (
    piece.startswith('\u2581')
    or piece.startswith('<')
    or piece in punctuation
    or not all(c.lower() in word_chars for c in piece)
  )


class Tokenizer(abc.ABC):
  """A loaded vocabulary: text <-> ids, as transformers tokenizes.

  Attributes:
    kind: 'sentencepiece' | 'tokenizer.json' | 'vocab.txt'.
    vocab_size: number of ids.
    pad_id, unk_id, cls_id, sep_id, mask_id: the special tokens' ids.
    mask_token: the mask token's text, e.g. '[MASK]'.
    special_ids: int32 [K], sorted ids of all special / control tokens.
    is_word_start: bool [vocab_size], pieces that begin a word (whole-word
      masking, the original's rule); special tokens count as words. See
      `word_starts` for the other rule.
    fingerprint: sha256 of the vocabulary (the same after save and load), to
      recognise data made with it.
  """

  kind: str
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  mask_token: str
  special_ids: np.ndarray
  is_word_start: np.ndarray
  fingerprint: str

  def _set_vocabulary(
    self,
    pieces: Sequence[str],
    tokens: dict[str, str],
    special_ids: Iterable[int],
    word_start: Callable[..., bool],
  ) -> None:
    """Sets the attributes above from the pieces by id, the special tokens'
    names by role (all present: `special_tokens` checks) and a word-start rule
    (piece, *, apostrophe_joins_word) -> bool."""
    index = {}
    for i, piece in enumerate(pieces):
      index.setdefault(piece, i)
    self.vocab_size = len(pieces)
    ids = {role: index[tokens[role]] for role in ROLES}
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[r] for r in ROLES)
    self.mask_token = tokens['mask']
    self.special_ids = np.unique(np.array([*special_ids, *ids.values()], np.int32))
    self._word_starts = {}
    for joins in (False, True):
      starts = np.array([bool(p) and word_start(p, apostrophe_joins_word=joins) for p in pieces])
      starts[self.special_ids] = True
      self._word_starts[joins] = starts.astype(bool)
    self.is_word_start = self._word_starts[False]

  def word_starts(self, *, apostrophe_joins_word: bool = False) -> np.ndarray:
    """`is_word_start`, or with `apostrophe_joins_word` this code's earlier
    rule, under which SentencePiece pieces such as 's and n't continue the
    previous word (a WordPiece vocabulary has one rule: '##' continues)."""
    return self._word_starts[apostrophe_joins_word]

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`, without [CLS]/[SEP]."""

  @abc.abstractmethod
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of each text."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, as transformers' `tokenizer.decode(ids)`."""

  @abc.abstractmethod
  def id_to_piece(self, i: int) -> str:
    """The vocabulary's entry for id `i`."""

  @abc.abstractmethod
  def save(self, directory: str) -> None:
    """Writes the vocabulary's files into `directory`, each atomically
    (processes may share `directory`); `load` reads them back."""

  @abc.abstractmethod
  def save_hf(self, directory: str, *, model_max_length: int) -> None:
    """Writes the files with which transformers'
    `AutoTokenizer.from_pretrained(directory)` gives the same ids: the
    vocabulary, tokenizer_config.json and special_tokens_map.json."""

  def hf_special_tokens(self) -> dict[str, str]:
    """{'pad_token': ..., ..., 'mask_token': ...} for transformers."""
    return {f'{role}_token': self.id_to_piece(getattr(self, f'{role}_id')) for role in ROLES}


def vocabulary_file(directory: str) -> str | None:
  """The vocabulary file `vocabulary.load` reads in `directory`, if any."""
  for name in VOCABULARY_FILES:
    if os.path.isfile(os.path.join(directory, name)):
      return name
  return None


def has_tokenizer(directory: str) -> bool:
  return vocabulary_file(directory) is not None


def read_json(path: str) -> dict:
  """`path`'s JSON object; {} when absent, DataError when unreadable."""
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f'cannot read {path}: {str(e).splitlines()[0]}') from None
  if not isinstance(value, dict):
    raise DataError(f'{path} holds a {type(value).__name__}, expected a JSON object')
  return value


def named_special_tokens(directory: str) -> dict[str, str]:
  """Role -> token name, as tokenizer_config.json (first) or
  special_tokens_map.json name them; roles they do not name are left out."""
  named = {}
  for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):  # The config wins.
    settings = read_json(os.path.join(directory, name))
    for role in ROLES:
      value = settings.get(f'{role}_token')
      if isinstance(value, dict):  # transformers 4's AddedToken form.
        value = value.get('content')
      if isinstance(value, str):
        named[role] = value
  return named


def special_tokens(
  directory: str, vocabulary: Iterable[str], candidates: dict[str, Sequence[str]], *, source: str
) -> dict[str, str]:
  """Role -> token name: the directory's name for it (`named_special_tokens`)
  when given, else the first of the role's `candidates` in `vocabulary`.

  Raises DataError naming the first role whose token the vocabulary lacks.
  """
  named = named_special_tokens(directory)
  present = set(vocabulary)
  tokens = {}
  for role in ROLES:
    options = [named[role]] if role in named else list(candidates[role])
    tokens[role] = next((t for t in options if t in present), None)
    if tokens[role] is None:
      raise DataError(
        f'{source} has no {role} token ({" or ".join(map(repr, options))} not in the '
        f'vocabulary): name it as {role}_token in {directory}/{TOKENIZER_CONFIG}'
      )
  return tokens


def write_files(directory: str, files: dict[str, bytes]) -> None:
  """Writes each file of `files` (name -> content) atomically."""
  os.makedirs(directory, exist_ok=True)
  for name, data in files.items():
    partial = os.path.join(directory, f'.{name}.{os.getpid()}')
    try:
      with open(partial, 'wb') as f:
        f.write(data)
      os.replace(partial, os.path.join(directory, name))
    finally:  # A full disk leaves no partial file behind.
      if os.path.exists(partial):
        os.remove(partial)


def json_bytes(value: dict) -> bytes:
  return (json.dumps(value, indent=2, ensure_ascii=False) + '\n').encode()
