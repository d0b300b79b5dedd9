"""The `data` block of a pretraining config as a typed, validated record."""

import dataclasses
from typing import ClassVar

from albert_jax.config import Record, check_types
from albert_jax.data import examples, sources
from albert_jax.errors import DataError


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(sources.SourceOptions, examples.ExampleConfig, Record):
  """Where pretraining text comes from and how examples are cut from it: the
  reading options of sources.SourceOptions and the example settings of
  examples.ExampleConfig (declared there, where they are used), and these."""

  block: ClassVar[str] = 'data'

  # 'builtin' | 'text:GLOB' | 'parquet:GLOB' | 'jsonl:GLOB' |
  # 'tfds:NAME[/CONFIG][:SPLIT]' | 'prepared:DIR' (data/sources.py).
  source: str = 'builtin'
  # Held-out data for evaluation; empty: `eval_documents` documents of
  # `source` are held out and never trained on (0: no evaluation), its last
  # ones (eval_split 'last') or ones spread evenly through it ('spread', for a
  # source in topic order such as files sorted by path).
  eval_source: str = ''
  eval_documents: int = 10000
  eval_split: str = 'last'
  # Tokenizer directory (spiece.model, tokenizer.json or vocab.txt); empty:
  # prepared data's own, else one trained on the training documents into
  # WORKDIR/vocab.
  vocab: str = ''
  # Pieces of a tokenizer trained for the run (fewer on a corpus too small for
  # them) when model.vocab_size is 0, the tokenizer's; a set model.vocab_size
  # is the target instead.
  vocab_size: int = 30000
  lowercase: bool = True  # Normalisation of a tokenizer trained here.
  seed: int = 0
  num_workers: int = 0  # Worker processes building batches; 0: in process.
  # Batches prepared ahead (per worker, or on a thread when 0 workers).
  prefetch_buffer_size: int = 2

  def __post_init__(self):
    check_types(self)
    examples.ExampleConfig.__post_init__(self)
    sources.SourceOptions.__post_init__(self)
    if self.eval_split not in ('last', 'spread'):
      raise DataError(f"data.eval_split must be 'last' or 'spread', got {self.eval_split!r}")
    for name in ('eval_documents', 'vocab_size', 'num_workers', 'prefetch_buffer_size'):
      if getattr(self, name) < 0:
        raise DataError(f'data.{name} must be >= 0, got {getattr(self, name)}')
