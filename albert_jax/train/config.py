"""Typed, validated records of a pretraining config's blocks.

`PretrainConfig.from_config(config)` turns the ConfigDict a launcher parsed
(experiments/configs/pretrain.py, with the command line's overrides) into
records, checking every value once; the library takes only records.
"""

import dataclasses
import math
from typing import Any, ClassVar

from albert_jax.config import ModelConfig, Record, check_sequence_fits, check_types
from albert_jax.data.config import DataConfig
from albert_jax.errors import UsageError

OPTIMIZERS = ('lamb', 'adamw')


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Record):
  """Optimisation, logging and evaluation cadence. Defaults: ALBERT's."""

  block: ClassVar[str] = 'train'

  batch_size: int = 4096  # Global, over all processes.
  grad_accum_steps: int = 1  # Micro-batches per step (one update).
  num_steps: int = 125000
  optimizer: str = 'lamb'  # 'lamb' | 'adamw'
  learning_rate: float = 0.00176
  warmup_steps: int = 3125
  weight_decay: float = 0.01
  # Regexes searched in param paths ('encoder/layer/.../kernel'): matches get
  # neither weight decay nor LAMB's trust ratio (ALBERT's list).
  weight_decay_exclude: tuple[str, ...] = ('LayerNorm', 'layer_norm', 'bias')
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-6
  clip_norm: float = 1.0
  seed: int = 0
  log_every: int = 100
  eval_every: int = 5000
  eval_steps: int = 50  # Held-out batches per pretraining evaluation.
  # Peak FLOP/s per device for MFU; 0: the device kind's (CPUs: from cpuinfo).
  peak_flops_per_device: float = 0.0
  # 'START:END': a jax.profiler trace of steps START..END in WORKDIR/profile
  # (TensorBoard's profile plugin, or Perfetto); empty: none.
  profile_steps: str = ''

  def __post_init__(self):
    check_types(self)
    for name in (
      'batch_size',
      'grad_accum_steps',
      'num_steps',
      'log_every',
      'eval_every',
      'eval_steps',
    ):
      _check(getattr(self, name) >= 1, f'train.{name} must be >= 1, got {getattr(self, name)}')
    _check(
      self.optimizer in OPTIMIZERS,
      f'unknown train.optimizer {self.optimizer!r}: choose {" or ".join(map(repr, OPTIMIZERS))}',
    )
    _check(
      math.isfinite(self.learning_rate) and self.learning_rate > 0,
      f'train.learning_rate must be a finite number > 0, got {self.learning_rate}',
    )
    for name in ('warmup_steps', 'weight_decay', 'clip_norm', 'peak_flops_per_device'):
      value = getattr(self, name)
      _check(
        math.isfinite(value) and value >= 0,
        f'train.{name} must be a finite number >= 0, got {value}',
      )
    _check(
      0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps > 0,
      'train.b1 and train.b2 must be in [0, 1) and train.eps > 0',
    )
    _ = self.profile_range  # Refuses a malformed one.

  @property
  def profile_range(self) -> tuple[int, int] | None:
    """(first, last) step of train.profile_steps, None when empty."""
    if not self.profile_steps:
      return None
    first, _, last = self.profile_steps.partition(':')
    ok = first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last)
    _check(ok, f'train.profile_steps={self.profile_steps!r}: use START:END, 1 <= START <= END')
    return int(first), int(last)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig(Record):
  block: ClassVar[str] = 'checkpoint'

  every_steps: int = 5000
  keep: int = 3  # The newest checkpoints kept.

  def __post_init__(self):
    check_types(self)
    _check(
      self.every_steps >= 1 and self.keep >= 1,
      'checkpoint.every_steps and checkpoint.keep must be >= 1, got '
      f'{self.every_steps} and {self.keep}',
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig(Record):
  """Devices per mesh axis; -1 takes the devices left by the other axes
  (checked against the devices when the mesh is made)."""

  block: ClassVar[str] = 'mesh'

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    check_types(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainConfig(Record):
  """A whole pretraining run (experiments/configs/pretrain.py)."""

  block: ClassVar[str] = 'config'

  model: ModelConfig
  data: DataConfig
  train: TrainConfig
  checkpoint: CheckpointConfig
  mesh: MeshConfig
  # Logical axis name -> mesh axes (None: replicated).
  sharding_rules: tuple[tuple[Any, ...], ...]
  preset: str = ''
  init_from: str = ''  # A model directory to start from.

  # What a workdir's run is: a rerun may not change these (train/workdir.py).
  FIXED_KEYS: ClassVar[tuple[str, ...]] = (
    'model.',
    'data.sentence_objective',
    'data.source',
    'data.eval_source',
    'data.eval_documents',
    'data.vocab',
    'data.lowercase',
    'init_from',
  )
  RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ('model.dtype', 'model.remat_policy', 'model.scan')

  def __post_init__(self):
    check_types(self)
    check_sequence_fits(self.data.max_seq_length, self.model)


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UsageError(message)
