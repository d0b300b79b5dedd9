"""Exported models: the flax format of this codebase, and Hugging Face's.

A pretrained model leaves a training run as a directory in one of two formats:

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

`restore_from_workdir` reads only the params of a trainer checkpoint (orbax
partial restore), the model config from the run's config.json and the run's
tokenizer. Writers never touch an existing non-empty output directory: they
write a temporary sibling and rename it into place.

API:
  Pretrained(config: ModelConfig, params: nested dict of np.ndarray,
             tokenizer: Tokenizer)
  restore_from_workdir(workdir: str, step: int | None = None) -> Pretrained
  save_flax(pretrained, directory, *, dtype: str | None = None) -> None
  load_pretrained(directory: str) -> Pretrained
  save_hf(pretrained, directory) -> None
  load_hf(directory: str) -> Pretrained
  check_architecture(saved: ModelConfig, wanted: ModelConfig, *, source: str)
  matching_params(params, abstract_params, *, source: str) -> params
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
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from flax import traverse_util

from albert_jax import hf
from albert_jax.config import ModelConfig
from albert_jax.data import pipeline
from albert_jax.errors import DataError, ExportError
from albert_jax.data.tokenizer import (MODEL_FILE, SPECIAL_PIECES, Normalization,
                                       Tokenizer)
from albert_jax.param_count import param_shapes
from albert_jax import tree_paths

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
_ARCHITECTURE = ('vocab_size', 'embedding_size', 'hidden_size', 'num_layers',
                 'num_heads', 'intermediate_size', 'sharing',
                 'num_hidden_groups', 'inner_group_num', 'hidden_act',
                 'max_position_embeddings', 'type_vocab_size',
                 'layer_norm_eps')
_SPECIAL_TOKENS = dict(pad_token='<pad>', unk_token='<unk>',
                       cls_token='[CLS]', sep_token='[SEP]',
                       mask_token='[MASK]', bos_token='[CLS]',
                       eos_token='[SEP]')


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A pretrained AlbertForPreTraining: config, host params, tokenizer."""
  config: ModelConfig
  params: Params  # Nested dict of np.ndarray, unboxed.
  tokenizer: Tokenizer


# ---------------------------------------------------------------- training runs


def restore_from_workdir(workdir: str, step: int | None = None) -> Pretrained:
  """The params of checkpoint `step` (default: the latest) of a pretraining
  run in `workdir`, with its model config and tokenizer.

  Reads the 'params' subtree of the checkpoint only: the optimizer state and
  the data iterator positions stay on disk.
  """
  if '://' not in workdir:
    workdir = os.path.abspath(workdir)  # Orbax takes absolute paths only.
  config_path = os.path.join(workdir, 'config.json')
  checkpoints = os.path.join(workdir, 'checkpoints')
  if not os.path.isfile(config_path) or not os.path.isdir(checkpoints):
    raise ExportError(f'{workdir} is not a training run (no config.json and '
                      'checkpoints/): pass the --workdir of launch.pretrain')
  with open(config_path) as f:
    run_config = ml_collections.ConfigDict(json.load(f))
  if 'task' in run_config:
    raise ExportError(f'{workdir} is a fine-tuning run: export pretraining '
                      'runs (launch.pretrain --workdir)')
  try:
    config = ModelConfig.from_config(run_config.model)
  except ValueError as e:
    raise ExportError(f'{config_path}: {e}') from None
  steps = sorted(ocp.utils.checkpoint_steps(checkpoints))
  if not steps:
    raise ExportError(f'{checkpoints} holds no checkpoint yet: train longer '
                      '(see config.checkpoint.every_steps)')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ExportError(f'{checkpoints} has no checkpoint at step {step}: '
                      f'choose one of {", ".join(map(str, steps))}')
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), param_shapes(config))
  state_dir = os.path.join(checkpoints, str(step), 'state')
  try:
    restored = ocp.PyTreeCheckpointer().restore(state_dir, args=ocp.args.PyTreeRestore(
        item={'params': abstract},
        restore_args={'params': jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)},
        partial_restore=True))
  except (ValueError, KeyError, FileNotFoundError) as e:
    message = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise ExportError(f'cannot read the params of {state_dir} with the model '
                      f'of {config_path}: {message}') from None
  return Pretrained(config, restored['params'],
                    _run_tokenizer(run_config.data, config, workdir))


def _run_tokenizer(data: ml_collections.ConfigDict, config: ModelConfig,
                   workdir: str) -> Tokenizer:
  """The tokenizer a run used; never trains one."""
  own_vocab = os.path.join(workdir, pipeline.WORKDIR_VOCAB, MODEL_FILE)
  if not (data.vocab or data.source.startswith('prepared:')
          or os.path.isfile(own_vocab)):
    raise ExportError(f'the tokenizer of {workdir} is gone ({own_vocab} not '
                      'found): restore it to export this run')
  return pipeline.load_or_train_tokenizer(
      data, vocab_size=config.vocab_size, workdir=workdir)


# ---------------------------------------------------------------- flax format


def save_flax(pretrained: Pretrained, directory: str, *,
              dtype: str | None = None) -> None:
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
    hint = (' (it is in Hugging Face format: convert it with `python -m '
            'launch.export --from_hf=DIR --output=OUT`)'
            if os.path.isfile(os.path.join(directory, HF_CONFIG_FILE)) else '')
    raise ExportError(f'{directory} is not an exported model: '
                      f'{CONFIG_FILE} and {PARAMS_FILE} expected{hint}')
  try:
    with open(config_path) as f:
      config = ModelConfig.from_config(json.load(f))
  except (ValueError, TypeError) as e:
    raise ExportError(f'{config_path}: {e}') from None
  flat = safetensors.numpy.load_file(params_path)
  params = traverse_util.unflatten_dict(flat, sep='/')
  params = matching_params(params, param_shapes(config), source=directory,
                           cast=False)
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
    _write_json(os.path.join(partial, HF_CONFIG_FILE), {
        'architectures': ['AlbertForPreTraining'],
        'model_type': 'albert',
        **hf_config,
        'pad_token_id': SPECIAL_PIECES.index('<pad>'),
        'bos_token_id': SPECIAL_PIECES.index('[CLS]'),
        'eos_token_id': SPECIAL_PIECES.index('[SEP]'),
        'tie_word_embeddings': True,
    })
    _save_safetensors(state_dict, os.path.join(partial, HF_WEIGHTS_FILE),
                      metadata={'format': 'pt'})
    pretrained.tokenizer.save(partial)
    _write_json(os.path.join(partial, HF_TOKENIZER_CONFIG), {
        'tokenizer_class': 'AlbertTokenizer',
        'do_lower_case': normalization.lowercase,
        'keep_accents': not normalization.strip_accents,
        'remove_space': normalization.collapse_whitespace,
        'model_max_length': config.max_position_embeddings,
        **_SPECIAL_TOKENS,
    })
    _write_json(os.path.join(partial, HF_SPECIAL_TOKENS), _SPECIAL_TOKENS)


def load_hf(directory: str) -> Pretrained:
  """Reads a local Hugging Face ALBERT directory (AlbertForPreTraining
  weights in safetensors, spiece.model)."""
  config_path = os.path.join(directory, HF_CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ExportError(f'{directory} is not a Hugging Face model directory: '
                      f'{HF_CONFIG_FILE} not found')
  with open(config_path) as f:
    hf_config = json.load(f)
  if hf_config.get('model_type') != 'albert':
    raise ExportError(f'{config_path} describes a {hf_config.get("model_type")!r}'
                      " model, not 'albert'")
  try:
    config = hf.from_hf_config(hf_config)
  except (KeyError, ValueError) as e:
    raise ExportError(f'{config_path}: cannot read {e}') from None
  state_dict = {}
  for path in _weight_files(directory):
    state_dict.update(safetensors.numpy.load_file(path))
  try:
    params = hf.from_hf_state_dict(state_dict, config)
  except ValueError as e:
    raise ExportError(f'{directory}: {e}') from None
  return Pretrained(config, params, _hf_tokenizer(directory))


def _weight_files(directory: str) -> list[str]:
  files = sorted(glob.glob(os.path.join(directory, '*.safetensors')))
  if not files:
    found = [os.path.basename(p) for p in
             glob.glob(os.path.join(directory, '*.bin'))]
    hint = (f' ({found[0]} is a PyTorch pickle: resave it with '
            'model.save_pretrained(DIR), which writes safetensors)'
            if found else '')
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
        lowercase=settings.get('do_lower_case', True))
  return tokenizer


# ---------------------------------------------------------------- starting from a model


def check_architecture(saved: ModelConfig, wanted: ModelConfig, *,
                       source: str) -> None:
  """ExportError naming the first architecture field on which a model saved
  in `source` differs from the config that wants to start from it."""
  for name in _ARCHITECTURE:
    have, want = getattr(saved, name), getattr(wanted, name)
    if have != want:
      raise ExportError(
          f'{source} has model.{name}={have!r} but the config says {want!r}: '
          f'set --config.model.{name}={have}')


def matching_params(params: Params, abstract_params: Any, *, source: str,
                    cast: bool = True) -> Params:
  """`params` checked against `abstract_params` (a tree of arrays or
  ShapeDtypeStructs), cast to their dtypes when `cast`.

  Raises ExportError naming the first missing, unexpected or mis-shaped
  parameter.
  """
  have = {tree_paths.path_str(p): v for p, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  want = {tree_paths.path_str(p): v for p, v in
          jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  for name in sorted(have.keys() | want.keys()):
    if name not in have:
      raise ExportError(f'{source} lacks parameter {name}: it holds another '
                        'model')
    if name not in want:
      raise ExportError(f'{source} has an unexpected parameter {name}: it '
                        'holds another model')
    if tuple(have[name].shape) != tuple(want[name].shape):
      raise ExportError(
          f'{source}: parameter {name} has shape {tuple(have[name].shape)}, '
          f'expected {tuple(want[name].shape)} for this config')
  if not cast:
    return params
  return jax.tree.map(lambda x, a: np.asarray(x, a.dtype), params,
                      abstract_params)


# ---------------------------------------------------------------- files


@contextlib.contextmanager
def _new_directory(directory: str) -> Iterator[str]:
  """Yields a temporary directory that becomes `directory` on success.

  Refuses an existing non-empty `directory`; on failure nothing is left.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and (not os.path.isdir(directory)
                                    or os.listdir(directory)):
    raise ExportError(f'{directory} already exists and is not empty: choose '
                      'a new --output (nothing was written)')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  partial = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.',
                             dir=parent)
  try:
    yield partial
    os.chmod(partial, 0o755)
    if os.path.isdir(directory):
      os.rmdir(directory)  # Empty: checked above.
    os.rename(partial, directory)
  finally:
    shutil.rmtree(partial, ignore_errors=True)


def _save_safetensors(tensors: Mapping[str, np.ndarray], path: str,
                      metadata: Mapping[str, str] | None = None) -> None:
  # safetensors writes an array's memory as it lies: transposed views
  # (PyTorch layout) must be made contiguous first.
  safetensors.numpy.save_file(
      {name: np.ascontiguousarray(value) for name, value in tensors.items()},
      path, metadata=metadata)
  os.chmod(path, 0o644)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
  with open(path, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
