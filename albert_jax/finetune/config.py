"""Typed, validated records of a fine-tuning config (experiments/configs/finetune.py)."""

import dataclasses
from typing import Any, ClassVar

from albert_jax.config import ModelConfig, Record, check_types
from albert_jax.errors import UsageError
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(Record):
  """A whole fine-tuning run."""

  block: ClassVar[str] = 'config'

  task: str
  data: TaskDataConfig
  # Run-time settings of the exported model (dtype, dropout, remat); its
  # architecture is the export's.
  model: dict[str, Any]
  train: TrainConfig
  checkpoint: CheckpointConfig
  mesh: MeshConfig
  sharding_rules: tuple[tuple[Any, ...], ...]
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
