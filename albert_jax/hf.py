"""Conversion to and from Hugging Face `AlbertForPreTraining`.

State dicts are flat {name: numpy array} in PyTorch layout (Linear weight
[out, in]), so this module needs no torch: `torch.from_numpy` / `.numpy()`
on the caller's side. Configs convert to and from `AlbertConfig` kwargs.

Layer weights: our stacked `encoder/layer` params (leading [G?][I?] axes,
see albert_jax.model) map to `albert_layer_groups.{g}.albert_layers.{i}`.
Sharing 'none' is G = L groups. Sharing 'attention' / 'ffn' has no Hugging
Face form. When E == H our model has no embedding projection while Hugging
Face always applies one: export writes the identity, import requires it.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import numpy as np
from flax import traverse_util

from albert_jax.config import ModelConfig
from albert_jax.param_count import param_shapes

StateDict = dict[str, np.ndarray]

_LAYER_PREFIX = ('albert', 'encoder', 'layer')
_PROJECTION = 'albert.encoder.embedding_hidden_mapping_in'
# The decoder is tied to the word embeddings and to predictions.bias.
TIED_WEIGHTS = {
  'predictions.decoder.weight': 'albert.embeddings.word_embeddings.weight',
  'predictions.decoder.bias': 'predictions.bias',
}

# Module paths (leaf name dropped) outside the layer stack -> HF module names.
_MODULES = {
  ('albert', 'embeddings', 'word_embeddings'): 'albert.embeddings.word_embeddings',
  ('albert', 'embeddings', 'position_embeddings'): 'albert.embeddings.position_embeddings',
  ('albert', 'embeddings', 'token_type_embeddings'): 'albert.embeddings.token_type_embeddings',
  ('albert', 'embeddings', 'LayerNorm'): 'albert.embeddings.LayerNorm',
  ('albert', 'encoder', 'embedding_hidden_mapping_in'): _PROJECTION,
  ('albert', 'pooler'): 'albert.pooler',
  ('predictions',): 'predictions',  # The output bias [V].
  ('predictions', 'dense'): 'predictions.dense',
  ('predictions', 'LayerNorm'): 'predictions.LayerNorm',
  ('sop_classifier',): 'sop_classifier.classifier',
}
# Module paths inside one layer -> HF names inside `albert_layers.{i}`.
_LAYER_MODULES = {
  ('attention', 'query'): 'attention.query',
  ('attention', 'key'): 'attention.key',
  ('attention', 'value'): 'attention.value',
  ('attention', 'dense'): 'attention.dense',
  ('attention', 'LayerNorm'): 'attention.LayerNorm',
  ('ffn', 'dense'): 'ffn',
  ('ffn', 'output'): 'ffn_output',
  ('ffn', 'LayerNorm'): 'full_layer_layer_norm',
}
_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight', 'bias': 'bias'}


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
  """`transformers.AlbertConfig` kwargs equivalent to `config`."""
  _check_hf_form(config)
  return dict(
    vocab_size=config.vocab_size,
    embedding_size=config.embedding_size,
    hidden_size=config.hidden_size,
    num_hidden_layers=config.num_layers,
    num_hidden_groups=config.num_groups,
    inner_group_num=config.inner_group_num,
    num_attention_heads=config.num_heads,
    intermediate_size=config.intermediate_size,
    hidden_act=config.hidden_act,
    hidden_dropout_prob=config.hidden_dropout_prob,
    attention_probs_dropout_prob=config.attention_dropout_prob,
    max_position_embeddings=config.max_position_embeddings,
    type_vocab_size=config.type_vocab_size,
    initializer_range=config.initializer_range,
    layer_norm_eps=config.layer_norm_eps,
  )


def from_hf_config(hf_config: Mapping[str, Any], **overrides) -> ModelConfig:
  """ModelConfig from `AlbertConfig.to_dict()`; `overrides` set other fields
  (e.g. dtype='bfloat16')."""
  layers = hf_config['num_hidden_layers']
  groups = hf_config['num_hidden_groups']
  # G = L > 1 is our sharing 'none'; other G are groups of shared layers.
  untied = groups == layers and layers > 1
  return ModelConfig(
    vocab_size=hf_config['vocab_size'],
    embedding_size=hf_config['embedding_size'],
    hidden_size=hf_config['hidden_size'],
    num_layers=layers,
    num_heads=hf_config['num_attention_heads'],
    intermediate_size=hf_config['intermediate_size'],
    sharing='none' if untied else 'all',
    num_hidden_groups=1 if untied else groups,
    inner_group_num=hf_config['inner_group_num'],
    hidden_act=hf_config['hidden_act'],
    hidden_dropout_prob=float(hf_config['hidden_dropout_prob']),
    attention_dropout_prob=float(hf_config['attention_probs_dropout_prob']),
    max_position_embeddings=hf_config['max_position_embeddings'],
    type_vocab_size=hf_config['type_vocab_size'],
    layer_norm_eps=float(hf_config['layer_norm_eps']),
    initializer_range=float(hf_config['initializer_range']),
    **overrides,
  )


def to_hf_state_dict(params: Mapping[str, Any], config: ModelConfig) -> StateDict:
  """AlbertForPreTraining params (boxed or not) -> HF state dict (float32)."""
  _check_hf_form(config)
  state_dict = {}
  for path, value in _flat(params).items():
    value = np.asarray(value, np.float32)
    for name, piece in _hf_pieces(config, path, value):
      state_dict[name] = _to_torch_layout(path[-1], piece, config)
  if not config.has_projection:
    state_dict[f'{_PROJECTION}.weight'] = np.eye(config.hidden_size, dtype=np.float32)
    state_dict[f'{_PROJECTION}.bias'] = np.zeros(config.hidden_size, np.float32)
  for tied, source in TIED_WEIGHTS.items():
    state_dict[tied] = state_dict[source]
  return state_dict


def from_hf_state_dict(state_dict: Mapping[str, np.ndarray], config: ModelConfig) -> dict[str, Any]:
  """HF AlbertForPreTraining state dict -> our (unboxed) params, numpy
  arrays in config.param_dtype. Raises ValueError naming the first missing,
  unexpected or mis-shaped parameter."""
  _check_hf_form(config)
  unused = set(state_dict) - set(TIED_WEIGHTS)
  params = {}
  for path, target in _flat(param_shapes(config)).items():
    pieces = []
    for name, piece in _hf_pieces(config, path, np.empty(target.shape)):
      expected = _to_torch_layout(path[-1], piece, config).shape
      if name not in state_dict:
        raise ValueError(
          f'state dict lacks {name} (shape {expected}); is it a checkpoint of this config?'
        )
      value = np.asarray(state_dict[name])
      if value.shape != expected:
        raise ValueError(f'{name} has shape {value.shape}, expected {expected} for this config')
      unused.discard(name)
      pieces.append(_from_torch_layout(path[-1], value, piece.shape))
    params[path] = np.stack(pieces).reshape(target.shape).astype(config.params_dtype)
  if not config.has_projection:
    _check_identity_projection(state_dict, config)
    unused -= {f'{_PROJECTION}.weight', f'{_PROJECTION}.bias'}
  if unused:
    raise ValueError(
      f'unexpected parameter {sorted(unused)[0]} for this '
      'config (more layer groups or another head?)'
    )
  return traverse_util.unflatten_dict(params)


def _check_hf_form(config: ModelConfig) -> None:
  if config.shared_sublayer:
    raise ValueError(
      f'sharing={config.sharing!r} has no Hugging Face ALBERT form (only '
      "'all', 'none' and num_hidden_groups / inner_group_num convert)"
    )


def _flat(params: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  return traverse_util.flatten_dict(nn.unbox(params))


def _hf_pieces(config: ModelConfig, path: tuple[str, ...], value: np.ndarray):
  """Yields (HF name, array) for our param at `path`: one piece, or one per
  (group, inner layer) for stacked layer params."""
  leaf = _LEAVES[path[-1]]
  if path[:3] != _LAYER_PREFIX:
    yield f'{_MODULES[path[:-1]]}.{leaf}', value
    return
  module = _LAYER_MODULES[path[3:-1]]
  groups, inner = config.num_groups, config.inner_group_num
  stacked_dims = (groups > 1) + (inner > 1)
  value = value.reshape((groups, inner) + value.shape[stacked_dims:])
  for g in range(groups):
    for i in range(inner):
      yield (
        f'albert.encoder.albert_layer_groups.{g}.albert_layers.{i}.{module}.{leaf}',
        value[g, i],
      )


def _to_torch_layout(leaf: str, value: np.ndarray, config: ModelConfig) -> np.ndarray:
  """Our kernel [in, out] (attention: [H, heads, head_dim] or
  [heads, head_dim, H]) -> torch Linear weight [out, in]; biases flat."""
  if leaf == 'kernel':
    if value.ndim == 3:
      value = value.reshape(config.hidden_size, config.hidden_size)
    return value.T
  if leaf == 'bias':
    return value.reshape(-1)
  return value


def _from_torch_layout(leaf: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  if leaf == 'kernel':
    value = value.T
  return value.reshape(shape)


def _check_identity_projection(state_dict: Mapping[str, np.ndarray], config: ModelConfig) -> None:
  weight = np.asarray(state_dict.get(f'{_PROJECTION}.weight', 0.0))
  bias = np.asarray(state_dict.get(f'{_PROJECTION}.bias', 0.0))
  if not (np.array_equal(weight, np.eye(config.hidden_size)) and not np.any(bias)):
    raise ValueError(
      f'{_PROJECTION} is not the identity, but embedding_size == '
      f'hidden_size ({config.hidden_size}) has no projection here; use a '
      'config with embedding_size != hidden_size to keep it'
    )
