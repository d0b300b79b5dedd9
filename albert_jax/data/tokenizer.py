"""SentencePiece tokenizer with ALBERT's special ids and text normalisation.

A vocabulary directory holds two files:
  spiece.model        SentencePiece unigram model (the name Hugging Face's
                      `AlbertTokenizer` expects), ids <pad>=0, <unk>=1 and the
                      control symbols [CLS]=2, [SEP]=3, [MASK]=4;
  normalization.json  the text normalisation chosen at training time, which
                      `Tokenizer.load` reapplies (absent: ALBERT's defaults,
                      so an original ALBERT spiece.model loads as is).

Normalisation (ALBERT's `preprocess_text`, each step switchable): collapse
runs of whitespace and strip the ends, NFKD with combining accents removed,
lowercase. SentencePiece's own NFKC rule runs after it, as in ALBERT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
import tqdm

from albert_jax.errors import DataError

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_PIECES = ('<pad>', '<unk>', '[CLS]', '[SEP]', '[MASK]')
MODEL_FILE = 'spiece.model'
NORMALIZATION_FILE = 'normalization.json'

# ALBERT's `_is_start_piece`: punctuation and any piece with a character
# outside a-z starts a new word (foreign scripts count as whole pieces).
_PUNCTUATION = frozenset('!"#$%&\'()*+,-./:;?@[\\]^_`{|}~€£')
_WORD_CHARS = frozenset('abcdefghijklmnopqrstuvwxyz') | _PUNCTUATION


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Text normalisation applied before SentencePiece (ALBERT's defaults)."""

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


def _is_word_start(piece: str) -> bool:
  return (
    piece.startswith('\u2581')
    or piece.startswith('<')
    or piece in _PUNCTUATION
    or not all(c.lower() in _WORD_CHARS for c in piece)
  )


class Tokenizer:
  """A loaded ALBERT vocabulary: normalise, then SentencePiece.

  Attributes:
    vocab_size: number of pieces.
    is_word_start: bool [vocab_size], pieces that begin a word (whole-word
      masking).
    fingerprint: sha256 of spiece.model, to recognise data made with it.
  """

  def __init__(self, model_proto: bytes, normalization: Normalization, name: str = '<memory>'):
    self._proto = model_proto
    self.normalization = normalization
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
    for i, want in enumerate(SPECIAL_PIECES):
      got = pieces[i] if i < len(pieces) else None
      if got != want:
        raise DataError(
          f'{name} is not an ALBERT vocabulary: id {i} is {got!r}, expected '
          f'{want!r} (<pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4); train one '
          'with `python -m launch.train_tokenizer`'
        )
    self.vocab_size = len(pieces)
    self.is_word_start = np.array([_is_word_start(p) for p in pieces])
    self.fingerprint = hashlib.sha256(model_proto).hexdigest()

  @classmethod
  def load(cls, directory: str) -> Tokenizer:
    """Loads `directory`/spiece.model and its saved normalisation."""
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
      raise DataError(
        f'no tokenizer at {directory}: {MODEL_FILE} not found '
        '(train one with `python -m launch.train_tokenizer`)'
      )
    with open(path, 'rb') as f:
      proto = f.read()
    normalization = Normalization()
    norm_path = os.path.join(directory, NORMALIZATION_FILE)
    if os.path.isfile(norm_path):
      with open(norm_path) as f:
        normalization = Normalization(**json.load(f))
    try:
      return cls(proto, normalization, name=path)
    except RuntimeError as e:  # SentencePiece rejects the proto.
      raise DataError(f'{path} is not a SentencePiece model: {str(e).splitlines()[0]}') from None

  def save(self, directory: str) -> None:
    """Writes both files, each atomically (processes may share `directory`)."""
    os.makedirs(directory, exist_ok=True)
    normalization = json.dumps(dataclasses.asdict(self.normalization), indent=2).encode()
    for name, data in ((NORMALIZATION_FILE, normalization), (MODEL_FILE, self._proto)):
      partial = os.path.join(directory, f'.{name}.{os.getpid()}')
      try:
        with open(partial, 'wb') as f:
          f.write(data)
        os.replace(partial, os.path.join(directory, name))
      finally:  # A full disk leaves no partial file behind.
        if os.path.exists(partial):
          os.remove(partial)

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(self.normalization(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode([self.normalization(t) for t in texts])

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))


def train_tokenizer(
  sentences: Iterable[str],
  output_dir: str,
  *,
  vocab_size: int,
  normalization: Normalization = Normalization(),
  character_coverage: float = 0.99995,
  max_sentences: int = 10_000_000,
) -> Tokenizer:
  """Trains a SentencePiece unigram model on `sentences` into `output_dir`.

  `vocab_size` is a soft limit (`hard_vocab_limit=False`): a corpus too small
  to support it yields a smaller vocabulary (logged) rather than failing.
  SentencePiece samples `max_sentences` of the input when there are more.
  Training is deterministic: the same sentences give the same model.
  Refuses (DataError) to replace a tokenizer already in `output_dir`.

  SentencePiece's own log (its trainer spec, every EM iteration) stays off;
  a progress bar over the sentences shows on a terminal only, and one line on
  stdout says what was trained:
    trained a 2,000-piece tokenizer on 1,234,567 characters (coverage 0.99995) in 3.2 s: DIR
  """
  if os.path.exists(os.path.join(output_dir, MODEL_FILE)):
    raise DataError(f'{output_dir} already holds a tokenizer: choose another output directory')
  if vocab_size <= len(SPECIAL_PIECES):
    raise DataError(
      f'vocab_size={vocab_size} leaves no room for pieces: use more than {len(SPECIAL_PIECES)}'
    )
  count = characters = 0
  start = time.perf_counter()

  def normalized() -> Iterator[str]:
    nonlocal count, characters
    # disable=None: a bar on a terminal only, gone when done.
    progress = tqdm.tqdm(sentences, desc='sentences', unit=' sentences', disable=None, leave=False)
    for sentence in progress:
      sentence = normalization(sentence)
      if sentence:
        count += 1
        characters += len(sentence)
        yield sentence

  model = _BytesWriter()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=normalized(),
      model_writer=model,
      model_type='unigram',
      vocab_size=vocab_size,
      hard_vocab_limit=False,
      character_coverage=character_coverage,
      input_sentence_size=max_sentences,
      shuffle_input_sentence=True,
      remove_extra_whitespaces=normalization.collapse_whitespace,
      pad_id=PAD_ID,
      pad_piece='<pad>',
      unk_id=UNK_ID,
      unk_piece='<unk>',
      bos_id=-1,
      eos_id=-1,
      control_symbols=list(SPECIAL_PIECES[2:]),
      num_threads=os.cpu_count() or 1,
      minloglevel=2,  # Errors only: its INFO log is some 80 lines.
    )
  except RuntimeError as e:
    if count == 0:
      raise DataError('cannot train a tokenizer: the corpus has no text') from None
    raise DataError(
      f'SentencePiece training failed on {count} sentences: {str(e).splitlines()[0]}'
    ) from None
  tokenizer = Tokenizer(model.data, normalization)
  if tokenizer.vocab_size < vocab_size:
    logging.warning(
      'corpus too small for vocab_size=%d: trained %d pieces', vocab_size, tokenizer.vocab_size
    )
  tokenizer.save(output_dir)
  print(
    f'trained a {tokenizer.vocab_size:,}-piece tokenizer on {characters:,} characters '
    f'(coverage {character_coverage:g}) in {time.perf_counter() - start:.1f} s: {output_dir}',
    flush=True,
  )
  return tokenizer


class _BytesWriter:
  """A file-like sink for SentencePiece's `model_writer`."""

  def __init__(self):
    self.data = b''

  def write(self, data: bytes) -> None:
    self.data += data
