"""Typed, validated records of a fine-tuning config, with its defaults: the
generic `classification` preset of experiments/configs/finetune.py is these
records as they are, and every other preset states only what it changes.

Defaults: Hugging Face's fine-tuning recipe (AdamW with bias correction, linear
warmup over 10 % of the steps then linear decay to 0), in epochs, with batches
padded to their real lengths (finetune/buckets.py). The paper presets turn to
the original's optimizer (`ORIGINAL_ADAMW`).
"""

import dataclasses
from typing import Any, ClassVar

from albert_jax.config import ModelConfig, Record, check_types
from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import CheckpointConfig, MeshConfig, TrainConfig

TASKS = ('classification', 'span_qa')


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskDataConfig(Record):
  """A task's data: sources, columns and lengths."""

  block: ClassVar[str] = 'data'

  train: str = ''  # PATH.tsv | PATH.csv | PATH.json | tfds:NAME[/CONFIG][:SPLIT]
  eval: str = ''  # Empty: no evaluation.
  # Classification: column / feature names (see finetune/classification.py).
  text_feature: str = 'text'
  text_b_feature: str = ''
  label_feature: str = 'label'
  num_labels: int = 0  # 0: from the data.
  max_seq_length: int = 128
  # Batches padded to the next multiple of this (at most max_seq_length);
  # 0: every batch to max_seq_length. See finetune/buckets.py. 16, not 32:
  # 8 shapes at 128, not 4, for 1.7x the transformers loop's examples/s,
  # not 1.3x (docs/performance.md).
  bucket_multiple: int = 16
  # Training rows sorted by length within groups of this many batches of
  # each epoch's shuffle, and the batches shuffled (less padding); 1: batches
  # of randomly drawn rows. See buckets.grouped_batches.
  group_batches: int = 50
  # Span QA: windows over long contexts, question and answer lengths.
  doc_stride: int = 128
  max_query_length: int = 64
  max_answer_length: int = 30
  seed: int = 0

  def __post_init__(self):
    check_types(self)
    for name in ('max_seq_length', 'doc_stride', 'max_query_length', 'max_answer_length'):
      if getattr(self, name) < 1:
        raise UsageError(f'data.{name} must be >= 1, got {getattr(self, name)}')
    if self.num_labels < 0:
      raise UsageError(f'data.num_labels must be >= 0, got {self.num_labels}')
    if self.bucket_multiple < 0 or self.group_batches < 1:
      raise UsageError(
        'data.bucket_multiple must be >= 0 (0: no buckets) and data.group_batches >= 1 '
        f'(1: no length groups), got {self.bucket_multiple} and {self.group_batches}'
      )


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneTrainConfig(TrainConfig):
  """Optimisation at fine-tuning's defaults (those of TrainConfig are
  pretraining's): Hugging Face's recipe, counted in epochs."""

  batch_size: int = 32
  num_steps: int = 0  # 0: from num_epochs.
  # Passes over the training data: the run's steps follow the data size.
  num_epochs: float = 3.0
  optimizer: str = 'adamw'
  # 0: BASE_LEARNING_RATE at ALBERT-base's width, scaled as 1 / hidden_size
  # (`learning_rate_for`): 5e-5 at H = 768, 6e-4 at the tiny model's H = 64.
  learning_rate: float = 0.0
  warmup_steps: int = 0  # 0: from warmup_fraction.
  warmup_fraction: float = 0.1  # Of the run's steps.
  # The decay starts after warmup (Hugging Face's get_linear_schedule_with_warmup).
  decay_from_step_0: bool = False
  # Adam's moments bias-corrected (torch AdamW, optax.adamw): without it the
  # first updates are ~3x larger, which a run of a few hundred steps never outgrows.
  adamw_bias_correction: bool = True
  eval_every: int = 1000

  def __post_init__(self):
    if self.learning_rate:
      super().__post_init__()
    elif not isinstance(self.learning_rate, (int, float)) or isinstance(self.learning_rate, bool):
      raise UsageError(f'train.learning_rate must be float, got {self.learning_rate!r}')
    else:  # 0: chosen for the model (`learning_rate_for`); the rest checked as usual.
      dataclasses.replace(self, learning_rate=BASE_LEARNING_RATE)

  def learning_rate_for(self, model: ModelConfig) -> 'FinetuneTrainConfig':
    """This config with learning_rate 0 replaced by the model's (see the field)."""
    if self.learning_rate:
      return self
    rate = BASE_LEARNING_RATE * _BASE_WIDTH / model.hidden_size
    return dataclasses.replace(self, learning_rate=float(f'{rate:.2g}'))


# Hugging Face Trainer's default learning rate, for ALBERT-base's width.
BASE_LEARNING_RATE = 5e-5
_BASE_WIDTH = 768


# ALBERT's own fine-tuning optimizer (optimization.py's AdamWeightDecayOptimizer,
# run_classifier / run_squad): no bias correction, the decay counted from step 0.
ORIGINAL_ADAMW = dict(adamw_bias_correction=False, decay_from_step_0=True)


def describe_optimizer(train: TrainConfig) -> str:
  """One line naming the optimizer variant, e.g. 'AdamW with bias correction
  (Hugging Face's recipe), lr 5e-05, 10 % warmup then linear decay'."""
  if train.optimizer == 'adamw':
    variant = (
      "AdamW with bias correction (Hugging Face's recipe)"
      if train.adamw_bias_correction
      else "AdamW without bias correction (the original's AdamWeightDecayOptimizer)"
    )
  else:
    variant = train.optimizer.upper()
  warmup = (
    f'{train.warmup_fraction:.0%} warmup'
    if train.warmup_fraction
    else f'{train.warmup_steps} warmup steps'
  )
  decay = 'a linear decay counted from step 0' if train.decay_from_step_0 else 'then linear decay'
  return f'{variant}, lr {train.learning_rate:g}, {warmup}, {decay}'


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneCheckpointConfig(CheckpointConfig):
  every_steps: int = 1000
  keep: int = 1  # A fine-tuning run keeps only its newest checkpoint.


def _model_defaults() -> dict[str, Any]:
  # Run-time settings of the exported model (its architecture is fixed). The
  # backbone keeps the model's own dropout (0 for ALBERT v2), as the original
  # run_classifier / run_squad do; classification adds 0.1 dropout on the
  # pooled output only (AlbertForSequenceClassification).
  return dict(dtype='float32', remat_policy='none', unroll=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(Record):
  """A whole fine-tuning run."""

  block: ClassVar[str] = 'config'

  task: str = 'classification'  # 'classification' | 'span_qa'
  data: TaskDataConfig = dataclasses.field(default_factory=TaskDataConfig)
  # Run-time settings of the exported model (dtype, remat, unroll: 0 the
  # backend's choice); its architecture is the export's.
  model: dict[str, Any] = dataclasses.field(default_factory=_model_defaults)
  train: FinetuneTrainConfig = dataclasses.field(default_factory=FinetuneTrainConfig)
  checkpoint: FinetuneCheckpointConfig = dataclasses.field(default_factory=FinetuneCheckpointConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  # Logical axis name -> mesh axes (None: replicated).
  sharding_rules: tuple[tuple[Any, ...], ...] = mesh_lib.DEFAULT_RULES
  preset: str = ''

  # What a workdir's run is: a rerun may not change these (train/workdir.py).
  FIXED_KEYS: ClassVar[tuple[str, ...]] = (
    'task',
    'model.',
    'data.train',
    'data.eval',
    'data.text_feature',
    'data.text_b_feature',
    'data.label_feature',
    'data.num_labels',
    'data.group_batches',
  )
  RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ('model.dtype', 'model.remat_policy', 'model.unroll')

  def __post_init__(self):
    check_types(self)
    if self.task not in TASKS:
      raise UsageError(f'unknown task {self.task!r}: choose one of {", ".join(TASKS)}')
    self.model_config(ModelConfig())  # Refuses keys a model does not have.

  def model_config(self, exported: ModelConfig) -> ModelConfig:
    """The exported model's config with this run's settings."""
    return dataclasses.replace(exported, **self.model)
