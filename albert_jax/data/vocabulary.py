"""A vocabulary directory: the tokenizer it holds, or one trained into it.

  tokenizer = vocabulary.load(directory)
  tokenizer = vocabulary.train_tokenizer(sentences, directory, vocab_size=2000)

The interface is tokenizer.py's `Tokenizer`; its kinds build on it
(sentencepiece_tokenizer.py, hf_tokenizer.py) and this module, above them,
chooses among them, so that no module imports one that imports it back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from albert_jax.data import hf_tokenizer, sentencepiece_tokenizer
from albert_jax.data.tokenizer import (
  MODEL_TYPES,
  ROLES,
  VOCABULARY_FILES,
  Normalization,
  Tokenizer,
  has_tokenizer,
  vocabulary_file,
)
from albert_jax.errors import DataError

_ALBERT_NORMALIZATION = Normalization()


def load(directory: str) -> Tokenizer:
  """The tokenizer of `directory`: the first of VOCABULARY_FILES it holds.

  Raises DataError naming what the directory holds when it has no
  vocabulary, or one that cannot be read.
  """
  found = vocabulary_file(directory)
  if found == 'spiece.model':
    return sentencepiece_tokenizer.SentencePieceTokenizer.load(directory)
  if found == 'tokenizer.json':
    return hf_tokenizer.HFTokenizer.load_tokenizer_json(directory)
  if found == 'vocab.txt':
    return hf_tokenizer.HFTokenizer.load_vocab_txt(directory)
  if not os.path.isdir(directory):
    held = 'the directory does not exist'
  elif names := sorted(os.listdir(directory)):
    held = f'it holds {", ".join(names[:8])}' + (', ...' if len(names) > 8 else '')
  else:
    held = 'it is empty'
  raise DataError(
    f'no tokenizer at {directory}: none of {", ".join(VOCABULARY_FILES)} ({held}); '
    'train one with `python -m launch.train_tokenizer`'
  )


def train_tokenizer(
  sentences: Iterable[str],
  output_dir: str,
  *,
  vocab_size: int,
  model_type: str = 'unigram',
  normalization: Normalization = _ALBERT_NORMALIZATION,
  character_coverage: float = 0.99995,
  max_sentences: int = 10_000_000,
) -> Tokenizer:
  """Trains a tokenizer on `sentences` into `output_dir`.

  model_type='unigram': a SentencePiece unigram model (spiece.model), ids
  <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4, `normalization` applied before
  it; SentencePiece samples `max_sentences` of the input when there are more.
  model_type='wordpiece': a BERT WordPiece vocabulary (vocab.txt and its
  tokenizer_config.json), ids [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4,
  CJK characters split one per word (the usual choice for Chinese),
  `normalization.lowercase` and `.strip_accents` as BERT's settings; trained
  on the first `max_sentences` sentences. `character_coverage` is the
  unigram's only.

  `vocab_size` is a soft limit: a corpus too small to support it yields a
  smaller vocabulary (logged) rather than failing; WordPiece keeps every
  character of the corpus (and its '##' form), more than `vocab_size` when
  that is too small for them (logged). Training is
  deterministic: the same sentences give the same vocabulary. Refuses
  (DataError) to replace a tokenizer already in `output_dir`.

  The trainers' own logs stay off; a progress bar over the sentences shows
  on a terminal only, and one line on stdout says what was trained:
    trained a 2,000-piece tokenizer on 1,234,567 characters (coverage 0.99995) in 3.2 s: DIR
    trained a 2,000-piece WordPiece tokenizer on 1,234,567 characters in 3.2 s: DIR
  """
  if model_type not in MODEL_TYPES:
    raise DataError(f'model_type={model_type!r}: use one of {", ".join(MODEL_TYPES)}')
  if has_tokenizer(output_dir):
    raise DataError(f'{output_dir} already holds a tokenizer: choose another output directory')
  if vocab_size <= len(ROLES):
    raise DataError(
      f'vocab_size={vocab_size} leaves no room for pieces: use more than {len(ROLES)}'
    )
  start = time.perf_counter()
  if model_type == 'unigram':
    tokenizer, characters = sentencepiece_tokenizer.train_unigram(
      sentences,
      vocab_size=vocab_size,
      normalization=normalization,
      character_coverage=character_coverage,
      max_sentences=max_sentences,
    )
    what = f'tokenizer on {characters:,} characters (coverage {character_coverage:g})'
  else:
    tokenizer, characters = hf_tokenizer.train_wordpiece(
      sentences, vocab_size=vocab_size, normalization=normalization, max_sentences=max_sentences
    )
    what = f'WordPiece tokenizer on {characters:,} characters'
  if tokenizer.vocab_size < vocab_size:
    logging.warning(
      'corpus too small for vocab_size=%d: trained %d pieces', vocab_size, tokenizer.vocab_size
    )
  elif tokenizer.vocab_size > vocab_size:  # WordPiece keeps every character.
    logging.warning(
      "vocab_size=%d is too small for the corpus's characters: trained %d pieces",
      vocab_size,
      tokenizer.vocab_size,
    )
  tokenizer.save(output_dir)
  print(
    f'trained a {tokenizer.vocab_size:,}-piece {what} in {time.perf_counter() - start:.1f} s: '
    f'{output_dir}',
    flush=True,
  )
  return tokenizer
