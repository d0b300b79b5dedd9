"""What a model path names, read from its files: one meaning for every launcher.

`load(path)` accepts
  a flax export           model_config.json + params.safetensors (launch.export);
  a Hugging Face model    config.json + weights, any ALBERT head class;
  a pretraining workdir   config.json + checkpoints/ (launch.pretrain): the
                          params of its latest checkpoint, or of `step`;
  a fine-tuning workdir   the same, with 'task' in config.json and model/ (the
                          Definition recorded by launch.finetune: config,
                          tokenizer, task, labels); the head comes with it;
  a hub id 'org/name'     a model in the local Hugging Face cache (HF_HUB_CACHE,
                          else HF_HOME/hub, else ~/.cache/huggingface/hub),
                          resolved offline by huggingface_hub.
Anything else is one ExportError naming what was found. A workdir's params
are read alone: the optimizer state and data positions stay on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from flax import traverse_util

from albert_jax import pretrained as pretrained_lib
from albert_jax.data import pipeline
from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import AlbertError, DataError, ExportError, UsageError
from albert_jax.param_count import param_shapes
from albert_jax.pretrained import Head, Pretrained
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train.config import PretrainConfig

RUN_CONFIG_FILE = 'config.json'
# Where a fine-tuning workdir records its model (pretrained.save_definition).
MODEL_SUBDIR = 'model'
KINDS = ('flax', 'hf', 'hf_cache', 'pretraining_run', 'finetuning_run')
# 'name' or 'org/name', as the hub spells repository ids.
_HUB_ID = re.compile(r'^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$')


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A model and where it came from."""

  pretrained: Pretrained
  kind: str  # One of KINDS.
  step: int | None  # The checkpoint step of a workdir; None otherwise.
  description: str  # For log lines, e.g. 'step 400 of runs/x (pretraining run)'.
  # A workdir's config.json as saved (its data settings, for defaults).
  run_config: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A checkpoint of a pretraining run, as a model, with the run's config."""

  pretrained: Pretrained
  run_config: PretrainConfig  # What the trainer saved in config.json.
  step: int  # The checkpoint's step.


def load(path: str, *, step: int | None = None) -> Loaded:
  """The model at `path` (see module docstring); `step` chooses a
  checkpoint of a workdir (default: its latest).

  Raises ExportError for a path that holds no model, UsageError for a
  `step` given with a model that has no checkpoints.
  """
  if os.path.isdir(path):
    if is_workdir(path):
      return _load_run(path, step)
    kind, loaded = _load_directory(path)
    description = f'the {"flax" if kind == "flax" else "Hugging Face"} model {path}'
  elif os.path.exists(path):
    raise ExportError(f'{path} is a file: pass a model directory, a workdir or a hub id')
  else:
    kind = 'hf_cache'
    snapshot = _cached_snapshot(path)
    loaded = _load_directory(snapshot)[1]
    description = f'the Hugging Face model {path} (local cache {snapshot})'
  if step is not None:
    raise UsageError(
      f'--step chooses a checkpoint of a training workdir; {description} has none: drop --step'
    )
  return Loaded(loaded, kind, None, description)


def is_workdir(path: str) -> bool:
  """Whether `path` is a pretraining or fine-tuning run directory (a
  Hugging Face model's config.json has no checkpoints/ and no train block)."""
  if os.path.isdir(os.path.join(path, checkpoint_lib.WORKDIR_SUBDIR)):
    return True
  saved = _read_json(os.path.join(path, RUN_CONFIG_FILE))
  return isinstance(saved, dict) and 'train' in saved and 'model_type' not in saved


def restore_run(workdir: str, step: int | None = None) -> RestoredRun:
  """The params of checkpoint `step` (default: the latest) of a pretraining
  run in `workdir`, with its model config, tokenizer and run config."""
  saved = _run_config(workdir)
  if 'task' in saved:
    raise ExportError(
      f'{workdir} is a fine-tuning run: read it with model_path.load (it has a task head)'
    )
  config_path = os.path.join(workdir, RUN_CONFIG_FILE)
  try:
    run_config = PretrainConfig.from_config(saved)
  except (AlbertError, TypeError) as e:  # A key or value this version refuses.
    raise ExportError(f'{config_path}: {e}') from None
  config = run_config.model_definition
  step, params = _checkpoint_params(workdir, step)
  # The checkpoint's own tree is restored: check it is the model of
  # config.json before anyone builds that model around it.
  params = pretrained_lib.matching_params(
    params, param_shapes(config), source=f'checkpoint {step} of {workdir}', cast=False
  )
  tokenizer = _run_tokenizer(run_config, workdir)
  return RestoredRun(Pretrained(config, params, tokenizer), run_config, step)


# ---------------------------------------------------------------- workdirs


def _load_run(workdir: str, step: int | None) -> Loaded:
  saved = _run_config(workdir)
  if 'task' not in saved:
    restored = restore_run(workdir, step)
    return Loaded(
      restored.pretrained,
      'pretraining_run',
      restored.step,
      f'step {restored.step} of {workdir} (pretraining run)',
      saved,
    )
  definition_dir = os.path.join(workdir, MODEL_SUBDIR)
  if not os.path.isdir(definition_dir):
    raise ExportError(
      f'{workdir} is a fine-tuning run without {MODEL_SUBDIR}/ (the record of its model and '
      'labels): rerun launch.finetune with this --workdir to record it'
    )
  definition = pretrained_lib.load_definition(definition_dir)
  step, params = _checkpoint_params(workdir, step)
  source = f'checkpoint {step} of {workdir}'
  if 'albert' not in params or definition.task is None:
    raise ExportError(f'{source} holds no ALBERT task model: it is not a fine-tuning checkpoint')
  backbone = pretrained_lib.matching_params(
    {'albert': params['albert']},
    {'albert': param_shapes(definition.config)['albert']},
    source=source,
    cast=False,
  )
  full, initialised = pretrained_lib.complete_params(backbone, definition.config)
  head = Head(
    definition.task, {k: v for k, v in params.items() if k != 'albert'}, definition.labels
  )
  pretrained = Pretrained(definition.config, full, definition.tokenizer, head, initialised)
  description = f'step {step} of {workdir} (fine-tuning run, {definition.task})'
  return Loaded(pretrained, 'finetuning_run', step, description, saved)


def _run_config(workdir: str) -> dict[str, Any]:
  config_path = os.path.join(workdir, RUN_CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ExportError(
      f'{workdir} is not a training run (no {RUN_CONFIG_FILE}): it never started; '
      'pass the --workdir of a launch.pretrain or launch.finetune run'
    )
  saved = _read_json(config_path)
  if not isinstance(saved, dict):
    raise ExportError(f'{config_path} is not a run config (JSON object) of launch.pretrain')
  return saved


def _checkpoint_params(workdir: str, step: int | None) -> tuple[int, Any]:
  """(step, params) of checkpoint `step` (default: the latest)."""
  checkpoints = os.path.join(workdir, checkpoint_lib.WORKDIR_SUBDIR)
  steps = checkpoint_lib.checkpoint_steps(checkpoints)
  if not steps:
    raise ExportError(
      f'{checkpoints} holds no checkpoint yet: train longer (see config.checkpoint.every_steps)'
    )
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ExportError(
      f'{checkpoints} has no checkpoint at step {step}: choose one of {", ".join(map(str, steps))}'
    )
  try:
    params = checkpoint_lib.restore_params(checkpoints, step)
  except (ValueError, KeyError, FileNotFoundError) as e:  # orbax's, for missing or bad files.
    message = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise ExportError(
      f'cannot read the params of checkpoint {step} of {workdir}: {message}'
    ) from None
  pretrained_lib.check_finite(
    traverse_util.flatten_dict(params, sep='/'), f'checkpoint {step} of {workdir}'
  )
  return step, params


def _run_tokenizer(run_config: PretrainConfig, workdir: str) -> Tokenizer:
  """The tokenizer a pretraining run used; never trains one."""
  data = run_config.data
  own_vocab = os.path.join(workdir, pipeline.WORKDIR_VOCAB)
  if not (data.vocab or data.source.startswith('prepared:') or os.path.isdir(own_vocab)):
    if run_config.init_from:  # Runs that did not copy their model's vocabulary.
      return load(run_config.init_from).pretrained.tokenizer
    raise ExportError(
      f'the tokenizer of {workdir} is gone ({own_vocab} not found): restore it to read this run'
    )
  if not data.vocab and os.path.isdir(own_vocab):
    data = dataclasses.replace(data, vocab=own_vocab)
  try:
    tokenizer = pipeline.load_or_train_tokenizer(
      data, vocab_size=run_config.model.vocab_size, workdir=workdir
    )
    pipeline.check_vocab_fits(tokenizer, run_config.model.vocab_size)
    return tokenizer
  except DataError as e:
    raise ExportError(f'the tokenizer of {workdir}: {e}') from None


# ---------------------------------------------------------------- model directories


def _load_directory(path: str) -> tuple[str, Pretrained]:
  """('flax' | 'hf', the model) of an exported model directory."""
  if pretrained_lib.is_flax(path):
    return 'flax', pretrained_lib.load_flax(path)
  if pretrained_lib.is_hf(path):
    return 'hf', pretrained_lib.load_hf(path)
  entries = sorted(os.listdir(path))
  found = ', '.join(entries[:8]) + (f' and {len(entries) - 8} more' if len(entries) > 8 else '')
  raise ExportError(
    f'{path} holds no model: expected a flax export (model_config.json, params.safetensors), '
    'a Hugging Face model (config.json and weights) or a training workdir (config.json, '
    f'checkpoints/); found {found or "nothing"}'
  )


def hub_cache() -> str:
  """The Hugging Face hub cache directory, as huggingface_hub resolves it
  (read at call time, so HF_HUB_CACHE / HF_HOME set later count)."""
  if os.environ.get('HF_HUB_CACHE'):
    return os.environ['HF_HUB_CACHE']
  if os.environ.get('HF_HOME'):
    return os.path.join(os.environ['HF_HOME'], 'hub')
  from huggingface_hub import constants  # Only for hub ids.

  return constants.HF_HUB_CACHE


def _cached_snapshot(repo_id: str) -> str:
  """The local snapshot directory of `repo_id` (revision main), offline."""
  cache = hub_cache()
  missing = (
    f'{repo_id} is neither a local directory nor a model in the Hugging Face cache ({cache}): '
    f'pass a model directory or workdir, or download it first (huggingface-cli download '
    f'{repo_id})'
  )
  if not _HUB_ID.match(repo_id):
    raise ExportError(missing)
  import huggingface_hub  # Only for hub ids.

  try:
    return huggingface_hub.snapshot_download(repo_id, local_files_only=True, cache_dir=cache)
  except (OSError, ValueError):
    raise ExportError(missing) from None


def _read_json(path: str) -> Any:
  """The JSON value of `path`; None when absent or unreadable."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
