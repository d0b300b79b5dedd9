r"""Fine-tune a model on a downstream task.

  python -m launch.finetune --model=out/flax --task=classification \
      --config.data.train=train.tsv --config.data.eval=dev.tsv --workdir=runs/cls
  python -m launch.finetune --model=albert/albert-base-v2 --task=sst2 --workdir=runs/sst2
  python -m launch.finetune --model=runs/base --step=5000 --task=span_qa \
      --config.data.train=train-v1.1.json --config.data.eval=dev-v1.1.json

--model is any model path (albert_jax/model_path.py): a flax export, a
Hugging Face directory, a training workdir (latest checkpoint, or --step) or
a hub id in the local Hugging Face cache. A model with a head for the task
and its classes (a fine-tuned classifier, a fine-tuning run) starts from that
head, any other from a fresh one; the log says which.

--task picks a preset of experiments/configs/finetune.py (classification,
sst2, imdb, span_qa); every key can be overridden (`--config.train.num_steps=
500`); --print_config prints the resolved config and runs nothing. Rerunning
with the same workdir resumes from its latest checkpoint.
Several processes join as for launch.pretrain (--distributed, or
--coordinator_address / --num_processes / --process_id).
"""

import os
import shlex
from collections.abc import Sequence

import jax
from absl import flags

from albert_jax import model_path
from albert_jax.errors import UsageError
from albert_jax.finetune import trainer
from albert_jax.finetune.config import FinetuneConfig
from launch import command_line, process_flags

_CONFIG_FILE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  'experiments',
  'configs',
  'finetune.py',
)
_MODEL = flags.DEFINE_string(
  'model', None, 'Flax export, Hugging Face directory or hub id, or training workdir.'
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a --model workdir; default: latest.')
_TASK = flags.DEFINE_string(
  'task',
  'classification',
  'Preset of experiments/configs/finetune.py: classification, sst2, imdb, span_qa.',
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Run directory (checkpoints, metrics); default runs/finetune_TASK.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  if not _MODEL.value:
    raise UsageError('pass --model=PATH: a model directory, a hub id or a training workdir')
  config = FinetuneConfig.from_config(flags.FLAGS.config)
  workdir = _WORKDIR.value or os.path.join('runs', f'finetune_{_TASK.value}')
  process_flags.join()
  loaded = model_path.load(_MODEL.value, step=_STEP.value)
  result = trainer.finetune(config, loaded.pretrained, workdir, source=loaded.description)
  if jax.process_index() != 0:
    return
  if result.eval_metrics:
    print(
      f'step {result.step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in result.eval_metrics.items())
    )
  print(
    f'checkpoints: {result.checkpoint_dir}\n'
    f'metrics:     {result.metrics_path}\n'
    f'tensorboard: tensorboard --logdir {shlex.quote(result.tensorboard_dir)}'
  )


def _default_config(argv: Sequence[str]) -> str:
  """The preset of --task, read before the flags are parsed."""
  return f'{_CONFIG_FILE}:{command_line.flag_value(argv, "task", _TASK.default)}'


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      _default_config,
      keys_file='experiments/configs/finetune.py',
      help_text='Config file and preset, FILE:PRESET (default: the --task preset).',
    ),
  )
