"""Conversion to and from Hugging Face's ALBERT models (every head class).

State dicts are flat {name: numpy array} in PyTorch layout (Linear weight
[out, in]), so this module needs no torch: `torch.from_numpy` / `.numpy()`
on the caller's side. Configs convert to and from `AlbertConfig` kwargs.

Our side is one params tree: 'albert' (the backbone) and, at the top level,
the head modules 'predictions' (MLM), 'sop_classifier', 'classifier'
(sequence or token classification) and 'qa_outputs' (span start / end).
Hugging Face names the backbone 'albert.*' in every head class and without
the prefix in `AlbertModel`; the classes differ in which modules they hold
(ARCHITECTURES).

Layer weights: our stacked `encoder/layer` params (leading [G?][I?] axes,
see albert_jax.model) map to `albert_layer_groups.{g}.albert_layers.{i}`.
Sharing 'none' is G = L groups. Sharing 'attention' / 'ffn' has no Hugging
Face form. When E == H our model has no embedding projection while Hugging
Face always applies one: export writes the identity, import requires it.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from albert_jax.config import ModelConfig
from albert_jax.param_count import param_shapes

StateDict = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What one Hugging Face ALBERT class holds besides embeddings and encoder."""

  prefix: str  # Of the backbone's names: 'albert.', or '' in AlbertModel.
  pooler: bool
  heads: tuple[str, ...]  # Our top-level head modules.


ARCHITECTURES = {
  'AlbertModel': Architecture('', True, ()),
  'AlbertForPreTraining': Architecture('albert.', True, ('predictions', 'sop_classifier')),
  'AlbertForMaskedLM': Architecture('albert.', False, ('predictions',)),
  'AlbertForSequenceClassification': Architecture('albert.', True, ('classifier',)),
  'AlbertForTokenClassification': Architecture('albert.', False, ('classifier',)),
  'AlbertForQuestionAnswering': Architecture('albert.', False, ('qa_outputs',)),
}
# Fine-tuning head (task) -> the class that carries it.
TASK_ARCHITECTURES = {
  'classification': 'AlbertForSequenceClassification',
  'token_classification': 'AlbertForTokenClassification',
  'span_qa': 'AlbertForQuestionAnswering',
}
# Pretraining parts a checkpoint may lack (a loader initialises them).
OPTIONAL = (('albert', 'pooler'), ('predictions',), ('sop_classifier',))
# Fine-tuning heads: read only from the class that has them.
FINE_TUNING_HEADS = ('classifier', 'qa_outputs')

_LAYER_PREFIX = ('albert', 'encoder', 'layer')
_PROJECTION = 'encoder.embedding_hidden_mapping_in'
# The decoder is tied to the word embeddings and to predictions.bias.
TIED_WEIGHTS = {
  'predictions.decoder.weight': 'albert.embeddings.word_embeddings.weight',
  'predictions.decoder.bias': 'predictions.bias',
}
# Buffers some (older) checkpoints hold: not parameters.
_BUFFERS = ('embeddings.position_ids', 'embeddings.token_type_ids')

# Module paths (leaf name dropped) outside the layer stack -> HF module names;
# backbone names ('albert', ...) take the architecture's prefix.
_MODULES = {
  ('albert', 'embeddings', 'word_embeddings'): 'embeddings.word_embeddings',
  ('albert', 'embeddings', 'position_embeddings'): 'embeddings.position_embeddings',
  ('albert', 'embeddings', 'token_type_embeddings'): 'embeddings.token_type_embeddings',
  ('albert', 'embeddings', 'LayerNorm'): 'embeddings.LayerNorm',
  ('albert', 'encoder', 'embedding_hidden_mapping_in'): _PROJECTION,
  ('albert', 'pooler'): 'pooler',
  ('predictions',): 'predictions',  # The output bias [V].
  ('predictions', 'dense'): 'predictions.dense',
  ('predictions', 'LayerNorm'): 'predictions.LayerNorm',
  ('sop_classifier',): 'sop_classifier.classifier',
  ('classifier',): 'classifier',
  ('qa_outputs',): 'qa_outputs',
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


def to_hf_state_dict(
  params: Mapping[str, Any], config: ModelConfig, architecture: str = 'AlbertForPreTraining'
) -> StateDict:
  """Our params (boxed or not; 'albert' and head modules) -> the state dict
  (float32) of the Hugging Face class `architecture`, tied weights included.
  Modules the class does not hold are left out; ValueError if `params`
  lacks one it holds."""
  _check_hf_form(config)
  form = _architecture(architecture)
  flat = {path: value for path, value in _flat(params).items() if _holds(form, path)}
  held = {path[1] if path[0] == 'albert' else path[0] for path in flat}
  for needed in form.heads + (('pooler',) if form.pooler else ()):
    if needed not in held:
      raise ValueError(f'{architecture} needs {needed} params, which this model lacks')
  state_dict = {}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    for name, piece in _hf_pieces(config, path, value, form.prefix):
      state_dict[name] = _to_torch_layout(path[-1], piece, config)
  if not config.has_projection:
    state_dict[f'{form.prefix}{_PROJECTION}.weight'] = np.eye(config.hidden_size, dtype=np.float32)
    state_dict[f'{form.prefix}{_PROJECTION}.bias'] = np.zeros(config.hidden_size, np.float32)
  if 'predictions' in form.heads:
    for tied, source in TIED_WEIGHTS.items():
      state_dict[tied] = state_dict[source]
  return state_dict


def from_hf_state_dict(
  state_dict: Mapping[str, np.ndarray],
  config: ModelConfig,
  architecture: str = 'AlbertForPreTraining',
  num_labels: int = 2,
) -> dict[str, Any]:
  """A Hugging Face state dict of the class `architecture` -> our (unboxed)
  params, numpy arrays in config.param_dtype.

  The backbone names may come with the 'albert.' prefix or without (as
  AlbertModel saves them). Embeddings and encoder are required, and so is
  the class's fine-tuning head ('classifier' [num_labels, H] or
  'qa_outputs'); the OPTIONAL parts (pooler, MLM head, SOP head) are read
  when present, else absent from the result. Raises ValueError naming the
  first missing, unexpected or mis-shaped parameter.
  """
  _check_hf_form(config)
  form = _architecture(architecture)
  prefix = 'albert.' if any(name.startswith('albert.') for name in state_dict) else ''
  unused = {name for name in state_dict if name not in TIED_WEIGHTS and not name.endswith(_BUFFERS)}
  targets = _flat(param_shapes(config))
  for head in form.heads:
    if head in FINE_TUNING_HEADS:
      labels = num_labels if head == 'classifier' else 2
      targets[(head, 'kernel')] = jax.ShapeDtypeStruct((config.hidden_size, labels), np.float32)
      targets[(head, 'bias')] = jax.ShapeDtypeStruct((labels,), np.float32)
  # One entry per param: its (HF name, piece) list; optional parts are read
  # only when one of their names is there.
  pieces = {
    path: list(_hf_pieces(config, path, np.empty(target.shape), prefix))
    for path, target in targets.items()
  }
  absent = set()
  for part in OPTIONAL:
    names = [name for path in pieces if path[: len(part)] == part for name, _ in pieces[path]]
    if not any(name in state_dict for name in names):
      absent.add(part)
  params = {}
  for path, target in targets.items():
    if any(path[: len(part)] == part for part in absent):
      continue
    values = []
    for name, piece in pieces[path]:
      expected = _to_torch_layout(path[-1], piece, config).shape
      if name not in state_dict:
        raise ValueError(
          f'state dict lacks {name} (shape {expected}); is it a checkpoint of this config?'
        )
      value = np.asarray(state_dict[name])
      if value.shape != expected:
        raise ValueError(f'{name} has shape {value.shape}, expected {expected} for this config')
      unused.discard(name)
      values.append(_from_torch_layout(path[-1], value, piece.shape))
    params[path] = np.stack(values).reshape(target.shape).astype(config.params_dtype)
  if not config.has_projection:
    _check_identity_projection(state_dict, config, prefix)
    unused -= {f'{prefix}{_PROJECTION}.weight', f'{prefix}{_PROJECTION}.bias'}
  if unused:
    raise ValueError(
      f'unexpected parameter {sorted(unused)[0]} for this '
      f'config and {architecture} (more layer groups or another head?)'
    )
  return traverse_util.unflatten_dict(params)


def _architecture(name: str) -> Architecture:
  if name not in ARCHITECTURES:
    raise ValueError(f'{name} is not a supported ALBERT class (one of {", ".join(ARCHITECTURES)})')
  return ARCHITECTURES[name]


def _holds(form: Architecture, path: tuple[str, ...]) -> bool:
  """Whether the class `form` holds our param at `path`."""
  if path[0] == 'albert':
    return form.pooler or path[1] != 'pooler'
  return path[0] in form.heads


def _check_hf_form(config: ModelConfig) -> None:
  if config.shared_sublayer:
    raise ValueError(
      f'sharing={config.sharing!r} has no Hugging Face ALBERT form (only '
      "'all', 'none' and num_hidden_groups / inner_group_num convert)"
    )


def _flat(params: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  return traverse_util.flatten_dict(nn.unbox(params))


def _hf_pieces(config: ModelConfig, path: tuple[str, ...], value: np.ndarray, prefix: str):
  """Yields (HF name, array) for our param at `path`: one piece, or one per
  (group, inner layer) for stacked layer params. Backbone names start with
  `prefix`."""
  leaf = _LEAVES[path[-1]]
  module_prefix = prefix if path[0] == 'albert' else ''
  if path[:3] != _LAYER_PREFIX:
    yield f'{module_prefix}{_MODULES[path[:-1]]}.{leaf}', value
    return
  module = _LAYER_MODULES[path[3:-1]]
  groups, inner = config.num_groups, config.inner_group_num
  stacked_dims = (groups > 1) + (inner > 1)
  value = value.reshape((groups, inner) + value.shape[stacked_dims:])
  for g in range(groups):
    for i in range(inner):
      yield (
        f'{prefix}encoder.albert_layer_groups.{g}.albert_layers.{i}.{module}.{leaf}',
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


def _check_identity_projection(
  state_dict: Mapping[str, np.ndarray], config: ModelConfig, prefix: str
) -> None:
  weight = np.asarray(state_dict.get(f'{prefix}{_PROJECTION}.weight', 0.0))
  bias = np.asarray(state_dict.get(f'{prefix}{_PROJECTION}.bias', 0.0))
  if not (np.array_equal(weight, np.eye(config.hidden_size)) and not np.any(bias)):
    raise ValueError(
      f'{prefix}{_PROJECTION} is not the identity, but embedding_size == '
      f'hidden_size ({config.hidden_size}) has no projection here; use a '
      'config with embedding_size != hidden_size to keep it'
    )
