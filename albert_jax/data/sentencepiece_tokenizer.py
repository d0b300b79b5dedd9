"""SentencePiece vocabularies (spiece.model): ALBERT's own kind.

A directory holds spiece.model and, when we wrote it, normalization.json:
the text normalisation chosen at training time, reapplied on load (absent:
a Hugging Face tokenizer_config.json's do_lower_case / keep_accents /
remove_space, else ALBERT's defaults, so an original ALBERT spiece.model
loads as is). Normalisation (ALBERT's `preprocess_text`, each step
switchable): collapse runs of whitespace and strip the ends, NFKD with
combining accents removed, lowercase. SentencePiece's own NFKC rule runs
after it, as in ALBERT.

Unlike transformers' AlbertTokenizer, text is not searched for special
tokens ("[MASK]" in text is text) and `` and '' are kept as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm
import tokenizers
import tqdm

from albert_jax.data import tokenizer as base
from albert_jax.data.tokenizer import Normalization, Tokenizer
from albert_jax.errors import DataError

MODEL_FILE = 'spiece.model'
NORMALIZATION_FILE = 'normalization.json'
# ALBERT's names; the ids of the ones `train_unigram` writes follow them.
SPECIAL_PIECES = ('<pad>', '<unk>', '[CLS]', '[SEP]', '[MASK]')


class SentencePieceTokenizer(Tokenizer):
  """Normalise, then SentencePiece. `fingerprint` is spiece.model's sha256."""

  kind = 'sentencepiece'

  def __init__(
    self,
    model_proto: bytes,
    normalization: Normalization,
    *,
    tokens: dict[str, str] | None = None,
    name: str = '<memory>',
  ):
    self._proto = model_proto
    self.normalization = normalization
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except RuntimeError as e:
      raise DataError(f'{name} is not a SentencePiece model: {str(e).splitlines()[0]}') from None
    pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
    if tokens is None:
      tokens = dict(zip(base.ROLES, SPECIAL_PIECES))
    for role in base.ROLES:
      if tokens[role] not in pieces:
        raise DataError(
          f'{name} is not an ALBERT vocabulary: it has no {tokens[role]} piece (ALBERT has '
          f'{" ".join(SPECIAL_PIECES)}); train one with `python -m launch.train_tokenizer`'
        )
    specials = [i for i in range(len(pieces)) if self._sp.is_control(i) or self._sp.is_unknown(i)]
    self._set_vocabulary(pieces, tokens, specials, base.is_metaspace_word_start)
    # transformers decodes SentencePiece pieces with this decoder.
    self._decoder = tokenizers.decoders.Metaspace(replacement='\u2581', prepend_scheme='always')
    self.fingerprint = hashlib.sha256(model_proto).hexdigest()

  @classmethod
  def load(cls, directory: str) -> SentencePieceTokenizer:
    """Loads `directory`/spiece.model, normalised as the directory says."""
    path = os.path.join(directory, MODEL_FILE)
    with open(path, 'rb') as f:
      proto = f.read()
    settings = base.read_json(os.path.join(directory, NORMALIZATION_FILE))
    if settings:
      try:
        normalization = Normalization(**settings)
      except TypeError as e:
        raise DataError(f'{directory}/{NORMALIZATION_FILE}: {e}') from None
    else:
      hf = base.read_json(os.path.join(directory, base.TOKENIZER_CONFIG))
      normalization = Normalization(
        collapse_whitespace=hf.get('remove_space', True),
        strip_accents=not hf.get('keep_accents', False),
        lowercase=hf.get('do_lower_case', True),
      )
    tokens = {**dict(zip(base.ROLES, SPECIAL_PIECES)), **base.named_special_tokens(directory)}
    return cls(proto, normalization, tokens=tokens, name=path)

  def save(self, directory: str) -> None:
    normalization = json.dumps(dataclasses.asdict(self.normalization), indent=2).encode()
    base.write_files(directory, {NORMALIZATION_FILE: normalization, MODEL_FILE: self._proto})

  def save_hf(self, directory: str, *, model_max_length: int) -> None:
    self.save(directory)
    special = {
      **self.hf_special_tokens(),
      'bos_token': self.id_to_piece(self.cls_id),
      'eos_token': self.id_to_piece(self.sep_id),
    }
    config = {
      'tokenizer_class': 'AlbertTokenizer',
      'do_lower_case': self.normalization.lowercase,
      'keep_accents': not self.normalization.strip_accents,
      'remove_space': self.normalization.collapse_whitespace,
      'model_max_length': model_max_length,
      **special,
    }
    base.write_files(
      directory,
      {
        base.TOKENIZER_CONFIG: base.json_bytes(config),
        base.SPECIAL_TOKENS_MAP: base.json_bytes(special),
      },
    )

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(self.normalization(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode([self.normalization(t) for t in texts])

  def decode(self, ids: Sequence[int]) -> str:
    return self._decoder.decode([self._sp.id_to_piece(int(i)) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))


def train_unigram(
  sentences: Iterable[str],
  *,
  vocab_size: int,
  normalization: Normalization,
  character_coverage: float,
  max_sentences: int,
) -> tuple[SentencePieceTokenizer, int]:
  """A SentencePiece unigram model of `sentences` (`train_tokenizer`), and
  the number of characters it was trained on."""
  count = characters = 0

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
      pad_id=0,
      pad_piece=SPECIAL_PIECES[0],
      unk_id=1,
      unk_piece=SPECIAL_PIECES[1],
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
  return SentencePieceTokenizer(model.data, normalization), characters


class _BytesWriter:
  """A file-like sink for SentencePiece's `model_writer`."""

  def __init__(self):
    self.data = b''

  def write(self, data: bytes) -> None:
    self.data += data
