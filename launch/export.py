r"""Export a pretrained model, or import one from Hugging Face.

  # A training run's checkpoint -> Hugging Face transformers
  python -m launch.export --workdir=runs/base --format=hf --output=out/hf
  # -> this codebase's flax format (params only), optionally in bfloat16
  python -m launch.export --workdir=runs/base --step=5000 --format=flax \
      --dtype=bfloat16 --output=out/flax
  # A local Hugging Face ALBERT directory -> the flax format
  python -m launch.export --from_hf=path/to/albert-base-v2 --output=out/flax

The flax format is what launch.fill_mask, launch.evaluate, launch.finetune
and `--config.init_from` of launch.pretrain read. An existing non-empty
--output is never touched.
"""

from collections.abc import Sequence

from absl import flags

from albert_jax import export
from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import UsageError
from launch import command_line

_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Training run (launch.pretrain --workdir) to export.'
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to export; default: the latest.')
_FROM_HF = flags.DEFINE_string(
  'from_hf', None, 'Local Hugging Face ALBERT directory to import instead.'
)
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
  if bool(_WORKDIR.value) == bool(_FROM_HF.value):
    raise UsageError(
      'pass either --workdir=RUN (export a training run) or '
      '--from_hf=DIR (import a Hugging Face model)'
    )
  if _FROM_HF.value and _FORMAT.value != 'flax':
    raise UsageError('--from_hf writes the flax format; drop --format=hf')
  if _DTYPE.value and _FORMAT.value != 'flax':
    raise UsageError('--dtype applies to --format=flax only (the Hugging Face export is float32)')
  if _FROM_HF.value:
    if _STEP.value is not None:
      raise UsageError('--step chooses a checkpoint of --workdir; drop it with --from_hf')
    pretrained = pretrained_lib.load_hf(_FROM_HF.value)
    source = f'the Hugging Face model {_FROM_HF.value}'
  else:
    restored = export.restore_from_workdir(_WORKDIR.value, _STEP.value)
    pretrained = restored.pretrained
    source = f'the params of step {restored.step} of {_WORKDIR.value}'
  if _FORMAT.value == 'hf':
    pretrained_lib.save_hf(pretrained, _OUTPUT.value)
  else:
    pretrained_lib.save_flax(pretrained, _OUTPUT.value, dtype=_DTYPE.value)
  print(f'wrote {source} to {_OUTPUT.value} ({_FORMAT.value})')


if __name__ == '__main__':
  command_line.run(main)
