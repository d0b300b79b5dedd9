"""Exported models: the flax format of this codebase, and Hugging Face's.

A pretrained model travels as a directory in one of two formats:

  flax  (`save_flax` / `load_pretrained`), what this codebase loads for
        inference, evaluation, fine-tuning and `config.init_from`:
          params.safetensors   AlbertForPreTraining params, names joined by
                               '/' ('albert/encoder/layer/ffn/dense/kernel'),
                               float32 or bfloat16;
          model_config.json    the ModelConfig fields;
          spiece.model, normalization.json   the tokenizer (data/tokenizer.py).
        No optimizer state, no training config.
  hf    (`save_hf` / `load_hf`), what transformers' `from_pretrained` loads as
        `AlbertForPreTraining` and `AlbertTokenizer`:
          config.json, model.safetensors (PyTorch layout, tied decoder
          omitted), spiece.model, tokenizer_config.json,
          special_tokens_map.json.
        Sharing 'attention' / 'ffn' has no such form.

Writers never touch an existing non-empty output directory: they write a
temporary sibling and rename it into place. This module sits below train/ and
finetune/, which start from its models: it knows nothing of training runs
(albert_jax/export.py reads those).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from albert_jax import hf, tree_paths
from albert_jax.config import ModelConfig
from albert_jax.data.tokenizer import SPECIAL_PIECES, Normalization, Tokenizer
from albert_jax.errors import DataError, ExportError
from albert_jax.param_count import param_shapes

Params = dict[str, Any]

PARAMS_FILE = 'params.safetensors'
CONFIG_FILE = 'model_config.json'
HF_CONFIG_FILE = 'config.json'
HF_WEIGHTS_FILE = 'model.safetensors'
HF_TOKENIZER_CONFIG = 'tokenizer_config.json'
HF_SPECIAL_TOKENS = 'special_tokens_map.json'
FORMATS = ('flax', 'hf')

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
_SPECIAL_TOKENS = dict(
  pad_token='<pad>',
  unk_token='<unk>',
  cls_token='[CLS]',
  sep_token='[SEP]',
  mask_token='[MASK]',
  bos_token='[CLS]',
  eos_token='[SEP]',
)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A pretrained AlbertForPreTraining: config, host params, tokenizer."""

  config: ModelConfig
  params: Params  # Nested dict of np.ndarray, unboxed.
  tokenizer: Tokenizer


# ---------------------------------------------------------------- flax format


def save_flax(pretrained: Pretrained, directory: str, *, dtype: str | None = None) -> None:
  """Writes the flax format; `dtype` ('float32' | 'bfloat16') casts the
  floating params (default: as they are) and is recorded as param_dtype."""
  config, params = pretrained.config, pretrained.params
  if dtype is not None:
    try:
      config = dataclasses.replace(config, param_dtype=dtype)
    except ValueError as e:
      raise ExportError(str(e).replace('model.param_dtype', 'dtype')) from None
    params = jax.tree.map(lambda x: np.asarray(x, config.params_dtype), params)
  flat = traverse_util.flatten_dict(params, sep='/')
  with _new_directory(directory) as partial:
    _save_safetensors(flat, os.path.join(partial, PARAMS_FILE))
    _write_json(os.path.join(partial, CONFIG_FILE), dataclasses.asdict(config))
    pretrained.tokenizer.save(partial)


def load_pretrained(directory: str) -> Pretrained:
  """Reads a flax-format directory written by `save_flax`."""
  config_path = os.path.join(directory, CONFIG_FILE)
  params_path = os.path.join(directory, PARAMS_FILE)
  if not os.path.isfile(config_path) or not os.path.isfile(params_path):
    hint = (
      ' (it is in Hugging Face format: convert it with `python -m '
      'launch.export --from_hf=DIR --output=OUT`)'
      if os.path.isfile(os.path.join(directory, HF_CONFIG_FILE))
      else ''
    )
    raise ExportError(
      f'{directory} is not an exported model: {CONFIG_FILE} and {PARAMS_FILE} expected{hint}'
    )
  try:
    with open(config_path) as f:
      config = ModelConfig.from_config(json.load(f))
  except (ValueError, TypeError) as e:
    raise ExportError(f'{config_path}: {e}') from None
  flat = _load_safetensors(params_path)
  params = traverse_util.unflatten_dict(flat, sep='/')
  params = matching_params(params, param_shapes(config), source=directory, cast=False)
  return Pretrained(config, params, Tokenizer.load(directory))


# ---------------------------------------------------------------- Hugging Face


def save_hf(pretrained: Pretrained, directory: str) -> None:
  """Writes what transformers' AlbertForPreTraining / AlbertTokenizer load."""
  config = pretrained.config
  try:
    hf_config = hf.to_hf_config(config)
    state_dict = hf.to_hf_state_dict(pretrained.params, config)
  except ValueError as e:
    raise ExportError(f'{e}; the flax format (--format=flax) keeps it') from None
  # As transformers' own save_pretrained: tied weights are written once.
  for tied in hf.TIED_WEIGHTS:
    del state_dict[tied]
  normalization = pretrained.tokenizer.normalization
  with _new_directory(directory) as partial:
    _write_json(
      os.path.join(partial, HF_CONFIG_FILE),
      {
        'architectures': ['AlbertForPreTraining'],
        'model_type': 'albert',
        **hf_config,
        'pad_token_id': SPECIAL_PIECES.index('<pad>'),
        'bos_token_id': SPECIAL_PIECES.index('[CLS]'),
        'eos_token_id': SPECIAL_PIECES.index('[SEP]'),
        'tie_word_embeddings': True,
      },
    )
    _save_safetensors(state_dict, os.path.join(partial, HF_WEIGHTS_FILE), metadata={'format': 'pt'})
    pretrained.tokenizer.save(partial)
    _write_json(
      os.path.join(partial, HF_TOKENIZER_CONFIG),
      {
        'tokenizer_class': 'AlbertTokenizer',
        'do_lower_case': normalization.lowercase,
        'keep_accents': not normalization.strip_accents,
        'remove_space': normalization.collapse_whitespace,
        'model_max_length': config.max_position_embeddings,
        **_SPECIAL_TOKENS,
      },
    )
    _write_json(os.path.join(partial, HF_SPECIAL_TOKENS), _SPECIAL_TOKENS)


def load_hf(directory: str) -> Pretrained:
  """Reads a local Hugging Face ALBERT directory (AlbertForPreTraining
  weights in safetensors, spiece.model)."""
  config_path = os.path.join(directory, HF_CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ExportError(
      f'{directory} is not a Hugging Face model directory: {HF_CONFIG_FILE} not found'
    )
  with open(config_path) as f:
    hf_config = json.load(f)
  if hf_config.get('model_type') != 'albert':
    raise ExportError(
      f"{config_path} describes a {hf_config.get('model_type')!r} model, not 'albert'"
    )
  try:
    config = hf.from_hf_config(hf_config)
  except (KeyError, ValueError) as e:
    raise ExportError(f'{config_path}: cannot read {e}') from None
  state_dict = {}
  for path in _weight_files(directory):
    state_dict.update(_load_safetensors(path))
  try:
    params = hf.from_hf_state_dict(state_dict, config)
  except ValueError as e:
    raise ExportError(f'{directory}: {e}') from None
  return Pretrained(config, params, _hf_tokenizer(directory))


def _weight_files(directory: str) -> list[str]:
  files = sorted(glob.glob(os.path.join(directory, '*.safetensors')))
  if not files:
    found = [os.path.basename(p) for p in glob.glob(os.path.join(directory, '*.bin'))]
    hint = (
      f' ({found[0]} is a PyTorch pickle: resave it with '
      'model.save_pretrained(DIR), which writes safetensors)'
      if found
      else ''
    )
    raise ExportError(f'{directory} has no *.safetensors weights{hint}')
  return files


def _hf_tokenizer(directory: str) -> Tokenizer:
  """spiece.model, normalised as tokenizer_config.json says (if present)."""
  try:
    tokenizer = Tokenizer.load(directory)
  except DataError as e:
    raise ExportError(str(e)) from None
  path = os.path.join(directory, HF_TOKENIZER_CONFIG)
  if os.path.isfile(path):
    with open(path) as f:
      settings = json.load(f)
    tokenizer.normalization = Normalization(
      collapse_whitespace=settings.get('remove_space', True),
      strip_accents=not settings.get('keep_accents', False),
      lowercase=settings.get('do_lower_case', True),
    )
  return tokenizer


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
    return safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError) as e:
    raise ExportError(f'{path} is not a readable safetensors file ({e})') from None


def _save_safetensors(
  tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None
) -> None:
  # safetensors writes an array's memory as it lies: transposed views
  # (PyTorch layout) must be made contiguous first.
  safetensors.numpy.save_file(
    {name: np.ascontiguousarray(value) for name, value in tensors.items()}, path, metadata=metadata
  )
  os.chmod(path, 0o644)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
  with open(path, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
