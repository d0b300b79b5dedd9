"""Exported models: the flax format of this codebase, and Hugging Face's.

A pretrained model travels as a directory in one of two formats:

  flax  (`save_flax` / `load_flax`), what this codebase writes:
          params.safetensors   AlbertForPreTraining params, names joined by
                               '/' ('albert/encoder/layer/ffn/dense/kernel'),
                               float32 or bfloat16, and a fine-tuning head's
                               params under their names ('classifier/kernel',
                               'qa_outputs/bias');
          model_config.json    the ModelConfig fields;
          head.json            with a head: its task and class labels;
          the tokenizer's files (data/tokenizer.py).
        No optimizer state, no training config. The same directory without
        params.safetensors is a `Definition` (what a fine-tuning run records).
  hf    (`save_hf` / `load_hf`), what transformers' `from_pretrained` loads:
          config.json, model.safetensors (PyTorch layout, tied decoder
          omitted) and the tokenizer's Hugging Face files. Written as
          AlbertForPreTraining, or as the class of the model's head
          (AlbertForSequenceClassification, AlbertForTokenClassification,
          AlbertForQuestionAnswering). Read from any ALBERT class, in
          model.safetensors, sharded safetensors (with their index) or
          pytorch_model.bin. Sharing 'attention' / 'ffn' has no such form.

`Pretrained.params` is always a complete AlbertForPreTraining tree: parts a
source lacks (an AlbertForMaskedLM has no pooler and no SOP head) are
initialised fresh and listed in `Pretrained.initialised`.

Writers never touch an existing non-empty output directory: they write a
temporary sibling and rename it into place. This module sits below train/ and
finetune/, which start from its models: it knows nothing of training runs
(albert_jax/model_path.py reads those).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from albert_jax import hf, records, tree_paths
from albert_jax.config import ModelConfig
from albert_jax.data import vocabulary
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import AlbertError, DataError, ExportError, UsageError
from albert_jax.model import AlbertForPreTraining
from albert_jax.param_count import param_shapes

Params = dict[str, Any]

PARAMS_FILE = 'params.safetensors'
CONFIG_FILE = 'model_config.json'
HEAD_FILE = 'head.json'
_REEXPORT = 'export the model again (python -m launch.export)'
HF_CONFIG_FILE = 'config.json'
HF_WEIGHTS_FILE = 'model.safetensors'
# Hugging Face weights, in the order a loader prefers them; the index files
# list the shards of a sharded checkpoint.
HF_WEIGHTS = (
  'model.safetensors.index.json',
  HF_WEIGHTS_FILE,
  'pytorch_model.bin.index.json',
  'pytorch_model.bin',
)
FORMATS = ('flax', 'hf')
# Fine-tuning task -> the module holding its head (beside 'albert').
HEAD_MODULES = {
  'classification': 'classifier',
  'token_classification': 'classifier',
  'span_qa': 'qa_outputs',
}

# Fields that change what the weights compute; the others (dtypes, dropout,
# remat, scan, init) are run-time choices a loader may set as it likes.
_ARCHITECTURE = (
  'vocab_size',
  'embedding_size',
  'hidden_size',
  'num_layers',
  'num_heads',
  'intermediate_size',
  'sharing',
  'num_hidden_groups',
  'inner_group_num',
  'hidden_act',
  'max_position_embeddings',
  'type_vocab_size',
  'layer_norm_eps',
)
# Parts of AlbertForPreTraining a source may lack, as `initialised` names them.
_OPTIONAL_PARTS = {'/'.join(part): part for part in hf.OPTIONAL}


@dataclasses.dataclass(frozen=True)
class Head:
  """A fine-tuning head carried by a model."""

  task: str  # 'classification' | 'span_qa' | 'token_classification'
  # The task model's params besides 'albert', unboxed numpy:
  # {'classifier': {'kernel' [H, labels], 'bias' [labels]}} or
  # {'qa_outputs': {'kernel' [H, 2], 'bias' [2]}}.
  params: Params
  labels: tuple[str, ...] = ()  # Class names by id; () for span_qa.

  def __post_init__(self):
    if self.task not in HEAD_MODULES:
      raise UsageError(f'unknown head task {self.task!r}: one of {", ".join(HEAD_MODULES)}')

  @property
  def num_labels(self) -> int:
    return 2 if self.task == 'span_qa' else len(self.labels)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A model: config, host params, tokenizer, and maybe a fine-tuning head."""

  config: ModelConfig
  params: Params  # A complete AlbertForPreTraining tree of np.ndarray, unboxed.
  tokenizer: Tokenizer
  head: Head | None = None
  # Parts absent from the source, freshly initialised ('albert/pooler',
  # 'predictions', 'sop_classifier').
  initialised: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Definition:
  """A model without params: what a fine-tuning run records."""

  config: ModelConfig
  tokenizer: Tokenizer
  task: str | None = None
  labels: tuple[str, ...] = ()


def task_params(pretrained: Pretrained) -> Params:
  """The params of the head's task model: {'albert': ..., **head.params}
  (the backbone alone without a head)."""
  head = pretrained.head.params if pretrained.head is not None else {}
  return {'albert': pretrained.params['albert'], **head}


def head_shapes(config: ModelConfig, task: str, num_labels: int) -> Params:
  """{module: {'kernel', 'bias'}} ShapeDtypeStructs of a task's head."""
  outputs = 2 if task == 'span_qa' else num_labels
  dtype = config.params_dtype
  return {
    HEAD_MODULES[task]: {
      'kernel': jax.ShapeDtypeStruct((config.hidden_size, outputs), dtype),
      'bias': jax.ShapeDtypeStruct((outputs,), dtype),
    }
  }


def complete_params(partial: Params, config: ModelConfig) -> tuple[Params, tuple[str, ...]]:
  """`partial` with the AlbertForPreTraining parts it lacks (pooler, MLM
  head, SOP head) filled in by a fresh init (seed 0), and their names
  ('albert/pooler', 'predictions', 'sop_classifier'). Other missing params
  are left for `matching_params` to report."""
  flat = traverse_util.flatten_dict(partial)
  missing = tuple(
    name
    for name, part in _OPTIONAL_PARTS.items()
    if not any(path[: len(part)] == part for path in flat)
  )
  if not missing:
    return partial, ()
  fresh = traverse_util.flatten_dict(_fresh_params(config))
  for path, value in fresh.items():
    if any(path[: len(_OPTIONAL_PARTS[name])] == _OPTIONAL_PARTS[name] for name in missing):
      flat[path] = value
  return traverse_util.unflatten_dict(flat), missing


def _fresh_params(config: ModelConfig) -> Params:
  ids = jnp.zeros((1, 1), jnp.int32)
  init = jax.jit(lambda: AlbertForPreTraining(config).init(jax.random.key(0), ids, ids, ids, ids))
  return jax.tree.map(np.asarray, nn.unbox(init()['params']))


# ---------------------------------------------------------------- flax format


def is_flax(directory: str) -> bool:
  """Whether `directory` holds a flax-format model."""
  return all(os.path.isfile(os.path.join(directory, f)) for f in (CONFIG_FILE, PARAMS_FILE))


def save_definition(definition: Definition, directory: str) -> None:
  """Writes model_config.json, head.json (with a task) and the tokenizer."""
  with _new_directory(directory) as partial:
    _write_definition(definition, partial)


def load_definition(directory: str) -> Definition:
  """Reads what `save_definition` (or `save_flax`) wrote."""
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    hint = (
      ' (it is a Hugging Face model directory: read it with load_hf)' if is_hf(directory) else ''
    )
    raise ExportError(f'{directory} is not an exported model: {CONFIG_FILE} expected{hint}')
  try:
    config = ModelConfig.from_config(records.read_json(config_path, fix=_REEXPORT))
  except (AlbertError, TypeError) as e:  # A key or value this version refuses.
    raise ExportError(f'{config_path}: {e}') from None
  task, labels = None, ()
  head_path = os.path.join(directory, HEAD_FILE)
  if os.path.isfile(head_path):
    head = records.read_json(head_path, fix=_REEXPORT)
    task, labels = head.get('task'), tuple(head.get('labels', ()))
    if task not in HEAD_MODULES:
      raise ExportError(f'{head_path}: unknown task {task!r} (one of {", ".join(HEAD_MODULES)})')
  return Definition(config, vocabulary.load(directory), task, labels)


def save_flax(pretrained: Pretrained, directory: str, *, dtype: str | None = None) -> None:
  """Writes the flax format; `dtype` ('float32' | 'bfloat16') casts the
  floating params (default: as they are) and is recorded as param_dtype."""
  config, params, head = pretrained.config, pretrained.params, pretrained.head
  if dtype is not None:
    try:
      config = dataclasses.replace(config, param_dtype=dtype)
    except AlbertError as e:
      raise ExportError(str(e).replace('model.param_dtype', 'dtype')) from None
  if head is not None:
    params = {**params, **head.params}
  if dtype is not None:
    params = jax.tree.map(lambda x: np.asarray(x, config.params_dtype), params)
  definition = Definition(
    config,
    pretrained.tokenizer,
    head.task if head is not None else None,
    head.labels if head is not None else (),
  )
  with _new_directory(directory) as partial:
    _save_safetensors(
      traverse_util.flatten_dict(params, sep='/'), os.path.join(partial, PARAMS_FILE)
    )
    _write_definition(definition, partial)


def load_flax(directory: str) -> Pretrained:
  """Reads a flax-format directory written by `save_flax`."""
  definition = load_definition(directory)
  params_path = os.path.join(directory, PARAMS_FILE)
  if not os.path.isfile(params_path):
    raise ExportError(f'{directory} is not an exported model: {PARAMS_FILE} expected')
  config = definition.config
  params = traverse_util.unflatten_dict(_load_safetensors(params_path), sep='/')
  head = None
  if definition.task is not None:
    module = HEAD_MODULES[definition.task]
    head_params = {module: params.pop(module, {})}
    shapes = head_shapes(config, definition.task, len(definition.labels))
    head_params = matching_params(head_params, shapes, source=directory, cast=False)
    head = Head(definition.task, head_params, definition.labels)
  params = matching_params(params, param_shapes(config), source=directory, cast=False)
  return Pretrained(config, params, definition.tokenizer, head)


def _write_definition(definition: Definition, directory: str) -> None:
  _write_json(os.path.join(directory, CONFIG_FILE), dataclasses.asdict(definition.config))
  if definition.task is not None:
    _write_json(
      os.path.join(directory, HEAD_FILE),
      {'task': definition.task, 'labels': list(definition.labels)},
    )
  definition.tokenizer.save(directory)


# ---------------------------------------------------------------- Hugging Face


def is_hf(directory: str) -> bool:
  """Whether `directory` holds a Hugging Face model (config.json and weights)."""
  return os.path.isfile(os.path.join(directory, HF_CONFIG_FILE)) and any(
    os.path.isfile(os.path.join(directory, f)) for f in HF_WEIGHTS
  )


def save_hf(pretrained: Pretrained, directory: str) -> None:
  """Writes what transformers' `from_pretrained` and AutoTokenizer load:
  AlbertForPreTraining, or the class of the model's head."""
  config, head, tokenizer = pretrained.config, pretrained.head, pretrained.tokenizer
  architecture = 'AlbertForPreTraining' if head is None else hf.TASK_ARCHITECTURES[head.task]
  params = pretrained.params if head is None else {**pretrained.params, **head.params}
  try:
    hf_config = hf.to_hf_config(config)
    state_dict = hf.to_hf_state_dict(params, config, architecture)
  except ValueError as e:
    raise ExportError(f'{e}; the flax format (--format=flax) keeps it') from None
  # As transformers' own save_pretrained: tied weights are written once.
  for tied in hf.TIED_WEIGHTS:
    state_dict.pop(tied, None)
  labels = {}
  if head is not None and head.task != 'span_qa':
    labels = {
      'id2label': dict(enumerate(head.labels)),
      'label2id': {label: i for i, label in enumerate(head.labels)},
    }
  with _new_directory(directory) as partial:
    _write_json(
      os.path.join(partial, HF_CONFIG_FILE),
      {
        'architectures': [architecture],
        'model_type': 'albert',
        **hf_config,
        **labels,
        'pad_token_id': tokenizer.pad_id,
        'bos_token_id': tokenizer.cls_id,
        'eos_token_id': tokenizer.sep_id,
        'tie_word_embeddings': True,
      },
    )
    _save_safetensors(state_dict, os.path.join(partial, HF_WEIGHTS_FILE), metadata={'format': 'pt'})
    tokenizer.save_hf(partial, model_max_length=config.max_position_embeddings)


def load_hf(directory: str) -> Pretrained:
  """Reads a local Hugging Face directory of any ALBERT class.

  Parts of AlbertForPreTraining the class lacks are initialised fresh and
  named in one logged line; a fine-tuning head becomes `Pretrained.head`.
  """
  config_path = os.path.join(directory, HF_CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ExportError(
      f'{directory} is not a Hugging Face model directory: {HF_CONFIG_FILE} not found'
    )
  hf_config = records.read_json(
    config_path, fix='restore it from the model you downloaded (config.json of its repository)'
  )
  model_type = hf_config.get('model_type') if isinstance(hf_config, dict) else None
  if model_type != 'albert':
    raise ExportError(f"{config_path} describes a {model_type!r} model, not 'albert'")
  try:
    config = hf.from_hf_config(hf_config)
  except (KeyError, ValueError, TypeError, AlbertError) as e:
    raise ExportError(f'{config_path}: cannot read {e}') from None
  state_dict = _read_hf_weights(directory)
  architecture = _hf_architecture(hf_config, state_dict, config_path)
  task = {arch: task for task, arch in hf.TASK_ARCHITECTURES.items()}.get(architecture)
  labels = _hf_labels(hf_config) if task in ('classification', 'token_classification') else ()
  try:
    params = hf.from_hf_state_dict(state_dict, config, architecture, num_labels=len(labels) or 2)
  except ValueError as e:
    raise ExportError(f'{directory}: {e}') from None
  head = None
  if task is not None:
    module = HEAD_MODULES[task]
    head = Head(task, {module: params.pop(module)}, labels)
  params, initialised = complete_params(params, config)
  if initialised:
    logging.warning(
      '%s (%s) has no %s: initialised fresh (seed 0)',
      directory,
      architecture,
      ', '.join(initialised),
    )
  try:
    tokenizer = vocabulary.load(directory)
  except DataError as e:
    raise ExportError(str(e)) from None
  return Pretrained(config, params, tokenizer, head, initialised)


def _hf_architecture(
  hf_config: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], config_path: str
) -> str:
  """The class config.json names, or (without one) the class the weights'
  head modules imply."""
  named = hf_config.get('architectures') or []
  if named:
    if named[0] not in hf.ARCHITECTURES:
      raise ExportError(
        f'{config_path} names {named[0]}, which is not supported: '
        f'one of {", ".join(hf.ARCHITECTURES)}'
      )
    return named[0]
  if any(name.startswith('qa_outputs.') for name in state_dict):
    return 'AlbertForQuestionAnswering'
  if any(name.startswith('classifier.') for name in state_dict):
    return 'AlbertForSequenceClassification'
  if not any(name.startswith('albert.') for name in state_dict):
    return 'AlbertModel'
  return 'AlbertForPreTraining'


def _hf_labels(hf_config: Mapping[str, Any]) -> tuple[str, ...]:
  """Class names by id, from config.json's id2label (transformers'
  defaults LABEL_i when it has none)."""
  id2label = hf_config.get('id2label')
  if id2label:
    return tuple(str(id2label[key]) for key in sorted(id2label, key=int))
  return tuple(f'LABEL_{i}' for i in range(int(hf_config.get('num_labels', 2))))


def _read_hf_weights(directory: str) -> dict[str, np.ndarray]:
  """The state dict of the first of HF_WEIGHTS found (all shards of an index)."""
  for name in HF_WEIGHTS:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      continue
    if name.endswith('.index.json'):
      try:
        with open(path) as f:
          shards = sorted(set(json.load(f)['weight_map'].values()))
      except (ValueError, KeyError, AttributeError) as e:
        raise ExportError(f'{path} is not a readable weights index ({e})') from None
      files = [os.path.join(directory, shard) for shard in shards]
    else:
      files = [path]
    state_dict = {}
    for file in files:
      if not os.path.isfile(file):
        raise ExportError(f'{path} lists {os.path.basename(file)}, which is missing')
      read = _load_safetensors if file.endswith('.safetensors') else _load_torch
      state_dict.update(read(file))
    return state_dict
  raise ExportError(f'{directory} has no model weights: one of {", ".join(HF_WEIGHTS)} expected')


def _load_torch(path: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch pickle, read safely (weights only)."""
  try:
    import torch  # noqa: PLC0415 (optional: only for pytorch_model.bin)
  except ImportError:
    raise ExportError(
      f'{path} is a PyTorch pickle and torch is not installed: install torch, '
      'or resave the model as safetensors with model.save_pretrained(DIR)'
    ) from None
  try:
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 (torch raises many kinds for a bad file)
    raise ExportError(
      f'{path} is not a readable PyTorch weights file ({str(e).splitlines()[0]})'
    ) from None
  tensors = {
    name: (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    for name, tensor in state_dict.items()
  }
  check_finite(tensors, path)
  return tensors


# ---------------------------------------------------------------- starting from a model


def check_architecture(saved: ModelConfig, wanted: ModelConfig, *, source: str) -> None:
  """ExportError naming the first architecture field on which a model saved
  in `source` differs from the config that wants to start from it."""
  for name in _ARCHITECTURE:
    have, want = getattr(saved, name), getattr(wanted, name)
    if have != want:
      raise ExportError(
        f'{source} has model.{name}={have!r} but the config says {want!r}: '
        f'set --config.model.{name}={have}'
      )


def matching_params(
  params: Params, abstract_params: Any, *, source: str, cast: bool = True
) -> Params:
  """`params` checked against `abstract_params` (a tree of arrays or
  ShapeDtypeStructs), cast to their dtypes when `cast`.

  Raises ExportError naming the first missing, unexpected or mis-shaped
  parameter.
  """
  have = {tree_paths.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  want = {
    tree_paths.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  }
  for name in sorted(have.keys() | want.keys()):
    if name not in have:
      raise ExportError(f'{source} lacks parameter {name}: it holds another model')
    if name not in want:
      raise ExportError(f'{source} has an unexpected parameter {name}: it holds another model')
    if tuple(have[name].shape) != tuple(want[name].shape):
      raise ExportError(
        f'{source}: parameter {name} has shape {tuple(have[name].shape)}, '
        f'expected {tuple(want[name].shape)} for this config'
      )
  if not cast:
    return params
  return jax.tree.map(lambda x, a: np.asarray(x, a.dtype), params, abstract_params)


# ---------------------------------------------------------------- files


@contextlib.contextmanager
def _new_directory(directory: str) -> Iterator[str]:
  """Yields a temporary directory that becomes `directory` on success.

  Refuses an existing non-empty `directory`; on failure nothing is left.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
    raise ExportError(
      f'{directory} already exists and is not empty: choose a new --output (nothing was written)'
    )
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  partial = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.', dir=parent)
  try:
    yield partial
    os.chmod(partial, 0o755)
    if os.path.isdir(directory):
      os.rmdir(directory)  # Empty: checked above.
    os.rename(partial, directory)
  finally:
    shutil.rmtree(partial, ignore_errors=True)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  """The tensors of `path`; ExportError for a truncated or foreign file."""
  try:
    tensors = safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError) as e:
    raise ExportError(f'{path} is not a readable safetensors file ({e})') from None
  check_finite(tensors, path)
  return tensors


def check_finite(tensors: Mapping[str, Any], source: str) -> None:
  """ExportError naming the first tensor (by name) of `tensors` with a NaN
  or an infinity: such a model computes nothing but NaN."""
  for name in sorted(tensors):
    value = np.asarray(tensors[name])
    if not np.issubdtype(value.dtype, np.floating) and value.dtype != jnp.bfloat16:
      continue
    bad = ~np.isfinite(value.astype(np.float32))
    if bad.any():
      where = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ExportError(
        f'{source}: tensor {name} is not finite ({int(bad.sum())} of {value.size} values, '
        f'the first {value[where]} at {list(where)}): this model cannot be used; '
        'take a checkpoint from before it diverged'
      )


def _save_safetensors(
  tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None
) -> None:
  # safetensors writes an array's memory as it lies: transposed views
  # (PyTorch layout) must be made contiguous first.
  try:
    safetensors.numpy.save_file(
      {name: np.ascontiguousarray(value) for name, value in tensors.items()},
      path,
      metadata=metadata,
    )
  except safetensors.SafetensorError as e:
    # Its I/O errors are text ('... (os error 28)', Rust's): back to the
    # OSError Python's own writes raise (tests/test_faults.py pins the text).
    found = re.search(r'\(os error (\d+)\)', str(e))
    if found is None:
      raise
    code = int(found[1])
    raise OSError(code, os.strerror(code), path) from None
  os.chmod(path, 0o644)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
  with open(path, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
