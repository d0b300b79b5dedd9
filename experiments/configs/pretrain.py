"""Pretraining presets: `--config=experiments/configs/pretrain.py:NAME`.

NAME is one of: tiny (a few minutes on a 2-core CPU), mini (the ablations'
CPU scale: H = 256, about 15 minutes on a 2-core CPU), base, large, xlarge,
xxlarge (ALBERT v2 shapes), bert_base, bert_large (E = H, nothing shared; for
comparison).

Every key is declared once, with its default and what it means, in the typed
records (albert_jax/train/config.py: PretrainConfig and its blocks, ModelConfig
in albert_jax/config.py, DataConfig in albert_jax/data/config.py), whose
defaults are ALBERT-base v2 trained as the paper did. A preset states only
what differs from them (`overrides`); `--print_config` shows every key.
Every key can be overridden on the command line, e.g.
`--config.model.embedding_size=64 --config.model.sharding=none`.
"""

from typing import Any

import ml_collections

from albert_jax.config import overrides as set_overrides
from albert_jax.train.config import PretrainConfig

# Every preset: the embedding rows are the run's vocabulary's (0), and a
# tokenizer trained for the run has data.vocab_size pieces.
_ALL = {'model.vocab_size': 0}

# ALBERT v2's sizes, and BERT's for comparison (the records hold base's).
_SIZES: dict[str, dict[str, Any]] = {
  'tiny': {
    'model.hidden_size': 64,
    'model.num_layers': 4,
    'model.num_heads': 4,
    'model.intermediate_size': 256,
    'model.embedding_size': 32,
  },
  'mini': {
    'model.hidden_size': 256,
    'model.num_layers': 4,
    'model.num_heads': 4,
    'model.intermediate_size': 1024,
  },
  'base': {},
  'large': {
    'model.hidden_size': 1024,
    'model.num_layers': 24,
    'model.num_heads': 16,
    'model.intermediate_size': 4096,
  },
  'xlarge': {
    'model.hidden_size': 2048,
    'model.num_layers': 24,
    'model.num_heads': 16,
    'model.intermediate_size': 8192,
  },
  'xxlarge': {  # 12 layers, as base.
    'model.hidden_size': 4096,
    'model.num_heads': 64,
    'model.intermediate_size': 16384,
  },
  'bert_base': {'model.embedding_size': 768, 'model.sharing': 'none'},
  'bert_large': {
    'model.hidden_size': 1024,
    'model.num_layers': 24,
    'model.num_heads': 16,
    'model.intermediate_size': 4096,
    'model.embedding_size': 1024,
    'model.sharing': 'none',
  },
}

# The CPU presets' runs, at sequence 128; the others train as ALBERT did
# (sequence 512, batch 4096, 125k steps: the records' defaults).
_SHORT = {
  'model.max_position_embeddings': 128,
  'data.max_seq_length': 128,
}
_RUNS: dict[str, dict[str, Any]] = {
  'tiny': {
    **_SHORT,
    'data.eval_documents': 16,
    'data.vocab_size': 2000,
    'train.batch_size': 16,
    'train.num_steps': 600,
    # LAMB's step is relative to each weight's norm: a small model takes a large one.
    'train.learning_rate': 2e-2,
    'train.warmup_steps': 60,
    'train.log_every': 20,
    'train.eval_every': 200,
    'train.eval_steps': 4,
    'checkpoint.every_steps': 200,
  },
  # Sized to one run of <= 15 minutes on a 2-core CPU: its worst sweep
  # variant (E = 256) is ~9.4e13 training + evaluation FLOPs
  # (albert_jax.flops), ~13 minutes at the ~1.2e11 FLOP/s its step reaches on
  # that CPU at the backend's defaults, leaving time to start and compile
  # (tests/test_sweep.py checks). Over a real corpus (thousands of
  # documents): more held-out documents, so that the evaluation's 256
  # examples per objective are mostly distinct.
  'mini': {
    **_SHORT,
    'data.eval_documents': 100,
    'data.vocab_size': 8000,
    'train.batch_size': 32,
    'train.num_steps': 1000,
    'train.learning_rate': 1e-2,
    'train.warmup_steps': 100,
    'train.log_every': 50,
    'train.eval_every': 200,
    'train.eval_steps': 8,
    'checkpoint.every_steps': 200,
  },
}

PRESETS = tuple(_SIZES)


def overrides(name: str) -> dict[str, Any]:
  """What preset `name` sets, as dotted keys: only what differs from the
  records' defaults (tests/test_code_shape.py checks)."""
  if name not in _SIZES:
    raise ValueError(f'unknown preset {name!r}: choose one of {", ".join(PRESETS)}')
  return {'preset': name, **_ALL, **_SIZES[name], **_RUNS.get(name, {})}


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """The full pretraining config of preset `arg`: every key, at the
  records' defaults but for the preset's overrides."""
  config = PretrainConfig.defaults()
  set_overrides(config, overrides(arg))
  return config
