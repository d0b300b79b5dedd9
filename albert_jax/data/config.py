"""The `data` block of a pretraining config as a typed, validated record."""

import dataclasses
from typing import ClassVar

from albert_jax.config import Record, check_types
from albert_jax.data import examples, sources
from albert_jax.errors import DataError


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(Record):
  """Where pretraining text comes from and how examples are cut from it."""

  block: ClassVar[str] = 'data'

  # 'builtin' | 'text:GLOB' | 'parquet:GLOB' | 'jsonl:GLOB' |
  # 'tfds:NAME[/CONFIG][:SPLIT]' | 'prepared:DIR' (data/sources.py).
  source: str = 'builtin'
  # The text column, field or feature of a parquet, jsonl or tfds record.
  text_feature: str = 'text'
  # text: files: 'lines' (a sentence per line, a blank line between
  # documents) | 'document' (each file one document of prose paragraphs).
  text_format: str = 'lines'
  drop_markup: bool = False  # Drop code and table lines (data/markup.py).
  language: str = 'en'  # ISO 639 code: the sentence splitter's rules.
  # Held-out data for evaluation; empty: `eval_documents` documents of
  # `source` are held out and never trained on (0: no evaluation), its last
  # ones (eval_split 'last') or ones spread evenly through it ('spread').
  eval_source: str = ''
  eval_documents: int = 10000
  eval_split: str = 'last'
  # Tokenizer directory; empty: prepared data's own, else one trained on the
  # training documents into WORKDIR/vocab.
  vocab: str = ''
  # Pieces of a tokenizer trained for the run (fewer on a corpus too small for
  # them) when model.vocab_size is 0, the tokenizer's; a set model.vocab_size
  # is the target instead.
  vocab_size: int = 30000
  lowercase: bool = True  # Normalisation of a tokenizer trained here.
  max_seq_length: int = 512
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  max_ngram: int = 3
  sentence_objective: str = 'sop'  # 'sop' | 'nsp' | 'none'
  # Where the original's create_pretraining_data differs from earlier
  # versions of this code, the original by default (data/examples.py):
  # short-sequence target drawn once per document (False: per chunk);
  short_seq_per_document: bool = True
  # the masking budget counts [CLS] and [SEP] (False: A and B only);
  num_to_predict_counts_specials: bool = True
  # the 10 % random token from the whole vocabulary (False: no special token);
  random_token_includes_specials: bool = True
  # SentencePiece pieces such as 's and n't start a word (True: they continue
  # the previous one).
  apostrophe_joins_word: bool = False
  seed: int = 0
  num_workers: int = 0  # Worker processes building batches; 0: in process.
  prefetch_buffer_size: int = 2  # Batches prepared ahead.

  def __post_init__(self):
    check_types(self)
    examples.ExampleConfig.from_config(self)  # Checks the example settings.
    sources.SourceOptions.of(self)  # Checks the reading settings.
    if self.eval_split not in ('last', 'spread'):
      raise DataError(f"data.eval_split must be 'last' or 'spread', got {self.eval_split!r}")
    for name in ('eval_documents', 'vocab_size', 'num_workers', 'prefetch_buffer_size'):
      if getattr(self, name) < 0:
        raise DataError(f'data.{name} must be >= 0, got {getattr(self, name)}')
