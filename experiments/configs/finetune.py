"""Fine-tuning presets: `python -m launch.finetune --model=OUT --task=NAME`.

NAME is one of:
  classification  sequence (pair) classification from --config.data.train /
                  .eval: PATH.tsv, PATH.csv or tfds:NAME[/CONFIG][:SPLIT];
                  the records' defaults (albert_jax/finetune/config.py):
                  Hugging Face's recipe, AdamW with bias correction;
  sst2            GLUE SST-2 from TFDS (glue/sst2, train / validation);
  imdb            IMDb reviews from TFDS (imdb_reviews, train / test);
  span_qa         extractive QA from SQuAD-format JSON files
                  (--config.data.train / .eval).
The paper presets (sst2, imdb, span_qa) follow ALBERT's run_classifier /
run_squad, with the original's AdamW without bias correction and the linear
decay counted from step 0. Each preset states only what it changes from the
records; every key can be overridden, e.g. `--config.train.learning_rate=1e-5
--config.data.max_seq_length=256`. docs/finetuning.md compares the recipes.
"""

from typing import Any

import ml_collections

from albert_jax.config import overrides as set_overrides
from albert_jax.finetune.config import ORIGINAL_ADAMW, FinetuneConfig

_ORIGINAL = {f'train.{key}': value for key, value in ORIGINAL_ADAMW.items()}

# ALBERT's runs: SST-2 20,935 steps of 32 over 67,349 examples (~10 epochs,
# 6 % warmup) at seq 512; SQuAD 1.1 3,649 steps of 48 over ~88k windows (~2
# epochs, 10 % warmup). In epochs, a preset fits a data set of any size.
_PRESETS: dict[str, dict[str, Any]] = {
  'classification': {},
  'sst2': {
    'data.train': 'tfds:glue/sst2:train',
    'data.eval': 'tfds:glue/sst2:validation',
    'data.text_feature': 'sentence',
    # As ALBERT's run_glue.sh; batches are padded to their real lengths, so
    # the ~20-token sentences cost seq 32, not 512.
    'data.max_seq_length': 512,
    'train.num_epochs': 10.0,
    'train.warmup_fraction': 0.06,
    'train.learning_rate': 1e-5,
    **_ORIGINAL,
  },
  'imdb': {
    'data.train': 'tfds:imdb_reviews:train',
    'data.eval': 'tfds:imdb_reviews:test',
    'data.max_seq_length': 512,
    'train.learning_rate': 2e-5,
    **_ORIGINAL,
  },
  'span_qa': {
    'task': 'span_qa',
    'data.max_seq_length': 384,
    'train.batch_size': 48,
    'train.num_epochs': 2.0,
    **_ORIGINAL,
  },
}
PRESETS = tuple(_PRESETS)


def overrides(name: str) -> dict[str, Any]:
  """What preset `name` sets, as dotted keys: only what differs from the
  records' defaults (tests/test_code_shape.py checks)."""
  if name not in _PRESETS:
    raise ValueError(f'unknown fine-tuning task {name!r}: choose one of {", ".join(PRESETS)}')
  return {'preset': name, **_PRESETS[name]}


def get_config(arg: str = 'classification') -> ml_collections.ConfigDict:
  """The fine-tuning config of preset `arg`: every key, at the records'
  defaults but for the preset's overrides."""
  config = FinetuneConfig.defaults()
  set_overrides(config, overrides(arg))
  return config
