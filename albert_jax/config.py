"""ALBERT model configuration: one typed, validated, frozen record.

`ModelConfig.from_config(config.model)` turns the `model` block of an
ml_collections config (experiments/configs/pretrain.py) into a `ModelConfig`.
Every impossible combination fails at construction with one UsageError line.

Layer sharing (paper section 3.1, original code / Hugging Face semantics):
  * `sharing='all'`: all layers share one set of weights. `num_hidden_groups`
    G > 1 splits the L layers into G consecutive runs of L/G layers, each run
    sharing its own weights (layer i uses group int(i * G / L)).
  * `sharing='none'`: every layer has its own weights (the same as 'all' with
    G = L).
  * `sharing='attention'` / `'ffn'`: only the attention (resp. feed-forward)
    sublayer is shared across all L layers; the other half is per layer.
  * `inner_group_num` I: each group holds I distinct layers applied in
    sequence, so the encoder applies L * I layers in total.
"""

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

import jax
import jax.numpy as jnp
import ml_collections

from albert_jax.errors import UsageError

SHARING_MODES = ('all', 'attention', 'ffn', 'none')

# Hugging Face `hidden_act` names. ALBERT's `gelu` is the tanh approximation,
# called 'gelu_new' by Hugging Face; 'gelu' is the exact (erf) form.
ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
  'gelu_new': functools.partial(jax.nn.gelu, approximate=True),
  'gelu': functools.partial(jax.nn.gelu, approximate=False),
  'relu': jax.nn.relu,
  'silu': jax.nn.silu,
}

# What the backward pass may keep from the forward pass of one encoder layer.
# 'none': no rematerialisation; 'full': keep only the layer inputs.
REMAT_POLICIES: Mapping[str, Callable[..., Any] | None] = {
  'none': None,
  'full': jax.checkpoint_policies.nothing_saveable,
  'dots_saveable': jax.checkpoint_policies.dots_saveable,
  'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

DTYPES = ('float32', 'bfloat16')


class Record:
  """A frozen dataclass config block, built from a ConfigDict at the edge.

  `from_config(block)` refuses unknown keys (missing ones take the field's
  default) and turns lists back into tuples (JSON has no tuples); each
  subclass checks its values in __post_init__ with `check_types` first.
  """

  block: ClassVar[str]  # Its name in the config: 'model', 'train', ...
  # Keys of earlier versions that only changed speed: dropped when read, so
  # saved configs and workdirs keep loading.
  retired: ClassVar[tuple[str, ...]] = ()

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Self:
    """Builds from a ConfigDict block (or any mapping)."""
    values = {k: v for k, v in config.items() if k not in cls.retired}
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise UsageError(
        f'unknown {cls.block} config key {unknown[0]!r}; known keys: {", ".join(sorted(known))}'
      )
    types = {field.name: field.type for field in dataclasses.fields(cls)}
    return cls(**{k: _value(types[k], v) for k, v in values.items()})

  @classmethod
  def defaults(cls) -> ml_collections.ConfigDict:
    """Every key of this record at its default, nested records as blocks:
    what a preset (experiments/configs/) starts from and overrides."""
    config = ml_collections.ConfigDict()
    for field in dataclasses.fields(cls):
      if field.metadata.get('derived'):
        continue
      if field.default is not dataclasses.MISSING:
        value = field.default
      elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
      else:
        raise TypeError(f'{cls.__name__}.{field.name} has no default')
      config[field.name] = _config_value(value)
    return config


def _config_value(value: Any) -> Any:
  """A default as a config holds it: a record (a block's default may be one
  with settings of its own, e.g. fine-tuning's train block) as a block."""
  if not isinstance(value, Record):
    return value
  return ml_collections.ConfigDict(
    {f.name: _config_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
  )


def overrides(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets each dotted key of `values` ('model.hidden_size': 64) in `config`,
  refusing (KeyError) one that `config` lacks: a preset's way to say only
  what differs from the records' defaults."""
  for key, value in values.items():
    *blocks, name = key.split('.')
    block = config
    for part in blocks:
      block = block[part]
    if name not in block:
      raise KeyError(f'{key}: no such config key')
    block[name] = value


def check_types(record: Record) -> None:
  """UsageError unless each field of `record` has its annotated type
  (int, float, bool, str or tuple)."""
  for field in dataclasses.fields(record):
    value = getattr(record, field.name)
    kind = typing.get_origin(field.type) or field.type
    if kind is float:
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in (bool, str, tuple):
      ok = isinstance(value, kind)
    else:  # A nested record or mapping: checked by its own type.
      ok = True
    _check(
      ok, f'{record.block}.{field.name} must be {getattr(kind, "__name__", kind)}, got {value!r}'
    )


def _value(field_type: Any, value: Any) -> Any:
  """A config value as the field holds it: nested blocks as their records,
  mappings as dicts, lists as tuples."""
  if isinstance(field_type, type) and issubclass(field_type, Record):
    return value if isinstance(value, field_type) else field_type.from_config(value)
  if (typing.get_origin(field_type) or field_type) is dict:
    return dict(value.items())
  if isinstance(value, (list, tuple)):
    return tuple(_value(None, v) for v in value)
  return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(Record):
  """ALBERT hyperparameters. Defaults: ALBERT-base v2."""

  block: ClassVar[str] = 'model'
  auto: ClassVar[tuple[str, ...]] = ('unroll',)  # 0: chosen where the model runs.
  retired: ClassVar[tuple[str, ...]] = ('scan',)  # Became `unroll`.

  vocab_size: int = 30000
  embedding_size: int = 128  # E: width of the factorized embeddings.
  hidden_size: int = 768  # H
  num_layers: int = 12  # L
  num_heads: int = 12
  intermediate_size: int = 3072  # F
  sharing: str = 'all'
  num_hidden_groups: int = 1  # G
  inner_group_num: int = 1  # I
  hidden_act: str = 'gelu_new'
  hidden_dropout_prob: float = 0.0
  attention_dropout_prob: float = 0.0
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = 'float32'  # Computation.
  param_dtype: str = 'float32'  # Storage of the parameters.
  remat_policy: str = 'none'
  # Layers per iteration of the layer loop, same params whatever the value:
  # 1 keeps the program and its compile time flat in depth; the depth unrolls
  # it into straight-line code, which XLA fuses and schedules across layers.
  # 0: the backend's choice (backend_defaults.py).
  unroll: int = 0

  def __post_init__(self):
    check_types(self)
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      least = 0 if field.name in self.auto else 1
      _check(
        field.type is not int or value >= least,
        f'model.{field.name} must be >= {least}, got {value}',
      )
    _check(
      self.sharing in SHARING_MODES,
      f'unknown model.sharing {self.sharing!r}: choose one of {", ".join(SHARING_MODES)}',
    )
    _check(
      self.hidden_act in ACTIVATIONS,
      f'unknown model.hidden_act {self.hidden_act!r}: choose one of {", ".join(ACTIVATIONS)}',
    )
    _check(
      self.remat_policy in REMAT_POLICIES,
      f'unknown model.remat_policy {self.remat_policy!r}: choose one of '
      f'{", ".join(REMAT_POLICIES)}',
    )
    for name in ('dtype', 'param_dtype'):
      _check(
        getattr(self, name) in DTYPES,
        f'unknown model.{name} {getattr(self, name)!r}: choose one of {", ".join(DTYPES)}',
      )
    for name in ('hidden_dropout_prob', 'attention_dropout_prob'):
      _check(
        0.0 <= getattr(self, name) < 1.0,
        f'model.{name} must be in [0, 1), got {getattr(self, name)}',
      )
    _check(
      self.layer_norm_eps > 0 and self.initializer_range > 0,
      'model.layer_norm_eps and model.initializer_range must be > 0',
    )
    _check(
      self.hidden_size % self.num_heads == 0,
      f'model.num_heads={self.num_heads} must divide model.hidden_size={self.hidden_size}',
    )
    _check(
      self.num_layers % self.num_hidden_groups == 0,
      f'model.num_hidden_groups={self.num_hidden_groups} must divide '
      f'model.num_layers={self.num_layers}',
    )
    _check(
      self.sharing == 'all' or self.num_hidden_groups == 1,
      f'model.num_hidden_groups={self.num_hidden_groups} needs '
      f"sharing='all' (got sharing={self.sharing!r}); set it to 1",
    )
    _check(
      self.sharing in ('all', 'none') or self.inner_group_num == 1,
      f'model.inner_group_num={self.inner_group_num} needs sharing='
      f"'all' or 'none' (got sharing={self.sharing!r}); set it to 1",
    )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def num_groups(self) -> int:
    """Number of distinct layer groups (stacked on the 'layers' axis)."""
    return self.num_layers if self.sharing != 'all' else self.num_hidden_groups

  @property
  def layers_per_group(self) -> int:
    """How many consecutive layers reuse one group's weights."""
    return self.num_layers // self.num_groups

  @property
  def num_layer_applications(self) -> int:
    """Encoder layers run per forward pass: L * inner_group_num."""
    return self.num_layers * self.inner_group_num

  @property
  def shared_sublayer(self) -> str | None:
    """'attention' or 'ffn' when only that half of a layer is shared."""
    return self.sharing if self.sharing in ('attention', 'ffn') else None

  @property
  def has_projection(self) -> bool:
    """Whether an E -> H dense follows the embeddings (only when E != H)."""
    return self.embedding_size != self.hidden_size

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def activation(self) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[self.hidden_act]


def check_sequence_fits(max_seq_length: int, model: ModelConfig) -> None:
  """UsageError unless sequences of `max_seq_length` fit the model's
  position embeddings."""
  _check(
    max_seq_length <= model.max_position_embeddings,
    f"data.max_seq_length={max_seq_length} exceeds the model's "
    f'max_position_embeddings={model.max_position_embeddings}',
  )


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UsageError(message)
