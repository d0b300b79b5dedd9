r"""Export a model: a training run's checkpoint, a fine-tuned model, or an
imported Hugging Face one.

  # A pretraining run's checkpoint -> Hugging Face transformers
  python -m launch.export --model=runs/base --format=hf --output=out/hf
  # -> this codebase's flax format (params only), optionally in bfloat16
  python -m launch.export --model=runs/base --step=5000 --format=flax \
      --dtype=bfloat16 --output=out/flax
  # A fine-tuning run -> AlbertForSequenceClassification / AlbertForQuestionAnswering
  python -m launch.export --model=runs/finetune_sst2 --format=hf --output=out/sst2
  # A local Hugging Face ALBERT directory (or hub id in the cache) -> the flax format
  python -m launch.export --model=path/to/albert-base-v2 --output=out/flax

--model takes any model path (albert_jax/model_path.py), as every launcher
that takes a model does: a training or fine-tuning workdir (latest
checkpoint, or --step), a flax export, a Hugging Face directory or a hub id
in the local cache. (--workdir and --from_hf, its earlier names, still work,
with a notice.) A model with
a fine-tuning head is written with it (the Hugging Face class of its task,
with its labels). Every launcher reads every model path directly: exporting
is for sharing a model, not a step before using one. An existing non-empty
--output is never touched; the line printed names the step written.
"""

from collections.abc import Sequence

from absl import flags

from albert_jax import model_path
from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import UsageError
from launch import command_line

_MODEL = flags.DEFINE_string(
  'model',
  None,
  'Model to export: a training or fine-tuning run, a flax export, a Hugging Face '
  'directory or cached hub id.',
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir; default: the latest.')
_FORMAT = flags.DEFINE_enum(
  'format',
  'flax',
  pretrained_lib.FORMATS,
  'flax: this codebase (params only); hf: Hugging Face transformers.',
)
_DTYPE = flags.DEFINE_enum(
  'dtype', None, ['float32', 'bfloat16'], 'Cast the params of a flax export (default: as trained).'
)
_OUTPUT = flags.DEFINE_string('output', None, 'New directory to write.')


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  if not _OUTPUT.value:
    raise UsageError('pass --output=DIR, a new directory to write')
  if not _MODEL.value:
    raise UsageError('pass --model=PATH: a training run, an export or a Hugging Face directory')
  if _DTYPE.value and _FORMAT.value != 'flax':
    raise UsageError('--dtype applies to --format=flax only (the Hugging Face export is float32)')
  loaded = model_path.load(_MODEL.value, step=_STEP.value)
  if _FORMAT.value == 'hf':
    pretrained_lib.save_hf(loaded.pretrained, _OUTPUT.value)
  else:
    pretrained_lib.save_flax(loaded.pretrained, _OUTPUT.value, dtype=_DTYPE.value)
  print(f'wrote {loaded.description} to {_OUTPUT.value} ({_FORMAT.value})')


if __name__ == '__main__':
  command_line.run(main)
