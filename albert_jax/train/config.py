"""Typed, validated records of a pretraining config's blocks.

`PretrainConfig.from_config(config)` turns the ConfigDict a launcher parsed
(experiments/configs/pretrain.py, with the command line's overrides) into
records, checking every value once; the library takes only records.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from albert_jax.config import ModelConfig, Record, check_sequence_fits, check_types
from albert_jax.data.config import DataConfig
from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib

OPTIMIZERS = ('lamb', 'adamw')


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Record):
  """Optimisation, logging and evaluation cadence. Defaults: ALBERT's."""

  block: ClassVar[str] = 'train'

  batch_size: int = 4096  # Global, over all processes.
  # Micro-batches per step (one update); 0: the backend's choice
  # (backend_defaults.py), made where the run is assembled (train/step.py).
  grad_accum_steps: int = 0
  num_steps: int = 125000
  # Fine-tuning may count passes over its training data instead (num_steps
  # 0), so that a preset fits any data size; see `fitted`. Pretraining
  # streams its data and counts steps.
  num_epochs: float = 0.0
  optimizer: str = 'lamb'  # 'lamb' | 'adamw'
  learning_rate: float = 0.00176
  warmup_steps: int = 3125
  # Or warmup as a fraction of the run's steps (warmup_steps 0).
  warmup_fraction: float = 0.0
  # True: the original's schedule, a linear decay to 0 counted from step 0
  # with warmup overriding it; False: the decay starts after warmup.
  decay_from_step_0: bool = True
  weight_decay: float = 0.01
  # Regexes searched in param paths ('encoder/layer/.../kernel'): matches get
  # neither weight decay nor LAMB's trust ratio (ALBERT's list).
  weight_decay_exclude: tuple[str, ...] = ('LayerNorm', 'layer_norm', 'bias')
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-6
  # AdamW's Adam moments bias-corrected (optax.adamw); False: not, as the
  # original's AdamWeightDecayOptimizer. LAMB's always are.
  adamw_bias_correction: bool = False
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
    _check(
      self.grad_accum_steps >= 0,
      f'train.grad_accum_steps must be >= 0 (0: chosen for the backend), got '
      f'{self.grad_accum_steps}',
    )
    for name in (
      'batch_size',
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
    _check(
      math.isfinite(self.num_epochs) and self.num_epochs >= 0 and self.num_steps >= 0,
      'train.num_steps and train.num_epochs must be >= 0, got '
      f'{self.num_steps} and {self.num_epochs}',
    )
    _check(
      (self.num_steps > 0) != (self.num_epochs > 0),
      'set one of train.num_steps and train.num_epochs, the other to 0 (got '
      f'{self.num_steps} and {self.num_epochs})',
    )
    _check(
      0 <= self.warmup_fraction < 1 and not (self.warmup_steps and self.warmup_fraction),
      'set at most one of train.warmup_steps and train.warmup_fraction (in [0, 1)), the '
      f'other to 0 (got {self.warmup_steps} and {self.warmup_fraction})',
    )
    _ = self.profile_range  # Refuses a malformed one.

  def fitted(self, num_examples: int) -> 'TrainConfig':
    """This config with num_epochs and warmup_fraction turned into steps
    for `num_examples` training examples (itself when neither is set)."""
    num_steps = self.num_steps or max(
      1, math.ceil(self.num_epochs * num_examples / self.batch_size)
    )
    warmup_steps = self.warmup_steps or round(self.warmup_fraction * num_steps)
    return dataclasses.replace(
      self, num_steps=num_steps, warmup_steps=warmup_steps, num_epochs=0.0, warmup_fraction=0.0
    )

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

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  # Logical axis name -> mesh axes (None: replicated), train/mesh.py.
  sharding_rules: tuple[tuple[Any, ...], ...] = mesh_lib.DEFAULT_RULES
  preset: str = ''
  init_from: str = ''  # A model directory to start from.
  # The keys the config leaves to the run (0: model.vocab_size, the
  # vocabulary's; train.grad_accum_steps and model.unroll, the backend's
  # choice), whose values here are what the run settled (config.json records
  # both). Until the trainer knows the tokenizer, model.vocab_size holds
  # data.vocab_size, the size of a tokenizer trained for the run, so that tools
  # without one (params, memory plan, benchmark) size the model as a run would.
  # Set by from_config, never by a preset (Record.defaults leaves it out).
  auto: tuple[str, ...] = dataclasses.field(default=(), metadata={'derived': True})

  # Keys a config may leave to the run (0), which the run settles.
  AUTO_KEYS: ClassVar[tuple[str, ...]] = (
    'model.vocab_size',
    'model.unroll',
    'train.grad_accum_steps',
  )
  # Keys of earlier versions, dropped when read so that their workdirs resume.
  retired: ClassVar[tuple[str, ...]] = ('vocab_from_tokenizer',)  # Became `auto`.

  # What a workdir's run is: a rerun may not change these (train/workdir.py).
  FIXED_KEYS: ClassVar[tuple[str, ...]] = (
    'model.',
    'data.sentence_objective',
    'data.source',
    'data.text_feature',
    'data.text_format',
    'data.drop_markup',
    'data.language',
    'data.eval_source',
    'data.eval_documents',
    'data.eval_split',
    'data.vocab',
    'data.lowercase',
    'init_from',
  )
  # ('model.scan': retired, so that workdirs that recorded it resume.)
  RUNTIME_KEYS: ClassVar[tuple[str, ...]] = (
    'model.dtype',
    'model.remat_policy',
    'model.unroll',
    'model.scan',
  )

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Self:
    """Builds from a ConfigDict (or a saved config.json, which names its
    `auto` keys); model.vocab_size 0 becomes data.vocab_size until `sized`."""
    values = dict(config.items())
    if 'auto' not in values:
      values['auto'] = tuple(key for key in cls.AUTO_KEYS if _get(values, key) == 0)
    if 'model.vocab_size' in values['auto'] and _get(values, 'model.vocab_size') == 0:
      data = values['data']
      data = data if isinstance(data, DataConfig) else DataConfig.from_config(data)
      model = {**dict(values['model'].items()), 'vocab_size': data.vocab_size}
      values.update(model=model, data=data)
    return super().from_config(values)

  @property
  def unsettled_keys(self) -> tuple[str, ...]:
    """Keys whose value the trainer settles only once it holds the workdir
    (from a tokenizer it may train there): workdir.claim leaves them out."""
    return ('model.vocab_size',) if 'model.vocab_size' in self.auto else ()

  def sized(self, vocab_size: int) -> 'PretrainConfig':
    """This run with model.vocab_size `vocab_size` (the tokenizer's, or the
    init_from model's) when the config leaves the size to the vocabulary;
    itself when it sets one."""
    if 'model.vocab_size' not in self.auto or self.model.vocab_size == vocab_size:
      return self
    return dataclasses.replace(self, model=dataclasses.replace(self.model, vocab_size=vocab_size))

  @property
  def model_definition(self) -> ModelConfig:
    """The model as the run defines it for others (an export, a model path):
    without the backend's choice for this run (model.unroll as asked)."""
    if 'model.unroll' not in self.auto:
      return self.model
    return dataclasses.replace(self.model, unroll=0)

  def settled(self, train: TrainConfig, unroll: int) -> 'PretrainConfig':
    """This run with the backend's choices of its auto keys: `train` as the
    run assembled it (train.grad_accum_steps), `unroll` as the model runs."""
    return dataclasses.replace(
      self, train=train, model=dataclasses.replace(self.model, unroll=unroll)
    )

  def __post_init__(self):
    check_types(self)
    check_sequence_fits(self.data.max_seq_length, self.model)
    _check(
      self.train.num_steps and not self.train.warmup_fraction,
      'pretraining counts steps: set train.num_steps and train.warmup_steps '
      '(train.num_epochs and train.warmup_fraction are for fine-tuning)',
    )


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UsageError(message)


def _get(values: Mapping[str, Any], key: str) -> Any:
  """The value at dotted `key` of a config mapping or its records."""
  block, name = key.split('.')
  value = values.get(block, {})
  return getattr(value, name, None) if dataclasses.is_dataclass(value) else value.get(name)
