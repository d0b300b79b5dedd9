"""A pretraining run's checkpoint as a pretrained model.

`restore_from_workdir` reads only the params of a trainer checkpoint (see
train/checkpoint.py), the model config from the run's config.json and the
run's tokenizer; `launch.export` then writes them with albert_jax/pretrained.py
(the flax and Hugging Face formats). Reading exported models needs no training
workdir and lives there, below train/.
"""

from __future__ import annotations

import dataclasses
import json
import os

from albert_jax.config import ModelConfig
from albert_jax.data import pipeline
from albert_jax.data.config import DataConfig
from albert_jax.data.tokenizer import MODEL_FILE, Tokenizer
from albert_jax.errors import ExportError
from albert_jax.param_count import param_shapes
from albert_jax.pretrained import Pretrained, matching_params
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train.config import PretrainConfig

RUN_CONFIG_FILE = 'config.json'


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A checkpoint of a pretraining run, as a model, with the run's config."""

  pretrained: Pretrained
  run_config: PretrainConfig  # What the trainer saved in config.json.
  step: int  # The checkpoint's step.


def restore_from_workdir(workdir: str, step: int | None = None) -> RestoredRun:
  """The params of checkpoint `step` (default: the latest) of a pretraining
  run in `workdir`, with its model config, tokenizer and run config.

  Reads the params of the checkpoint only: the optimizer state and the data
  iterator positions stay on disk.
  """
  config_path = os.path.join(workdir, RUN_CONFIG_FILE)
  checkpoints = os.path.join(workdir, checkpoint_lib.WORKDIR_SUBDIR)
  if not os.path.isfile(config_path) or not os.path.isdir(checkpoints):
    raise ExportError(
      f'{workdir} is not a training run (no config.json and '
      'checkpoints/): pass the --workdir of launch.pretrain'
    )
  with open(config_path) as f:
    saved = json.load(f)
  if 'task' in saved:
    raise ExportError(
      f'{workdir} is a fine-tuning run: export pretraining runs (launch.pretrain --workdir)'
    )
  try:
    run_config = PretrainConfig.from_config(saved)
  except ValueError as e:
    raise ExportError(f'{config_path}: {e}') from None
  config = run_config.model
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
  source = f'checkpoint {step} of {workdir}'
  try:
    params = checkpoint_lib.restore_params(checkpoints, step)
  except (ValueError, KeyError, FileNotFoundError) as e:
    message = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise ExportError(f'cannot read the params of {source}: {message}') from None
  # The checkpoint's own tree is restored: check it is the model of
  # config.json before anyone builds that model around it.
  params = matching_params(params, param_shapes(config), source=source, cast=False)
  pretrained = Pretrained(config, params, _run_tokenizer(run_config.data, config, workdir))
  return RestoredRun(pretrained, run_config, step)


def _run_tokenizer(data: DataConfig, config: ModelConfig, workdir: str) -> Tokenizer:
  """The tokenizer a run used; never trains one."""
  own_vocab = os.path.join(workdir, pipeline.WORKDIR_VOCAB, MODEL_FILE)
  if not (data.vocab or data.source.startswith('prepared:') or os.path.isfile(own_vocab)):
    raise ExportError(
      f'the tokenizer of {workdir} is gone ({own_vocab} not found): restore it to export this run'
    )
  return pipeline.load_or_train_tokenizer(data, vocab_size=config.vocab_size, workdir=workdir)
