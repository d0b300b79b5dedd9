r"""Fine-tune an exported model on a downstream task.

  python -m launch.finetune --model=out/flax --task=classification \
      --config.data.train=train.tsv --config.data.eval=dev.tsv --workdir=runs/cls
  python -m launch.finetune --model=out/flax --task=sst2 --workdir=runs/sst2
  python -m launch.finetune --model=out/flax --task=span_qa \
      --config.data.train=train-v1.1.json --config.data.eval=dev-v1.1.json

--task picks a preset of experiments/configs/finetune.py (classification,
sst2, imdb, span_qa); every key can be overridden (`--config.train.num_steps=
500`). Rerunning with the same workdir resumes from its latest checkpoint.
Several processes join as for launch.pretrain (--distributed, or
--coordinator_address / --num_processes / --process_id).
"""

import os
import sys
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from albert_jax.data.errors import DataError
from albert_jax.finetune import trainer
from albert_jax.train import distributed
from albert_jax.train.errors import UsageError

_CONFIG_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'experiments', 'configs', 'finetune.py')
_MODEL = flags.DEFINE_string(
    'model', None, 'Pretrained model in the flax format (launch.export).')
_TASK = flags.DEFINE_string(
    'task', 'classification',
    'Preset of experiments/configs/finetune.py: classification, sst2, imdb, '
    'span_qa.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (checkpoints, metrics); default '
    'runs/finetune_TASK.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join the other processes of a Cloud TPU pod / SLURM '
    'job (found from the environment).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0, for a multi-process '
    'run.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0-based.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f'error: unexpected argument {argv[1]!r}; flags look like '
             '--name=value')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  if not _MODEL.value:
    sys.exit('error: pass --model=DIR, a pretrained model written by '
             'launch.export')
  config = flags.FLAGS.config
  workdir = _WORKDIR.value or os.path.join('runs', f'finetune_{_TASK.value}')
  distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, cluster=_DISTRIBUTED.value)
  try:
    result = trainer.finetune(config, _MODEL.value, workdir)
  except (UsageError, DataError) as e:
    sys.exit(f'error: {e}')
  if jax.process_index() != 0:
    return
  if result.eval_metrics:
    print(f'step {result.step}: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in result.eval_metrics.items()))
  print(f'checkpoints: {result.checkpoint_dir}\n'
        f'metrics:     {result.metrics_path}')


def parse_flags(argv: list[str]) -> list[str]:
  """Defines --config from --task and parses the command line; a bad flag
  exits with one line."""
  task = _TASK.default
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--task='):
      task = arg.split('=', 1)[1]
    elif arg == '--task' and i + 1 < len(argv):
      task = argv[i + 1]
  try:
    # Defined here, not at import: the default preset is --task's, and is
    # parsed (overrides included) as soon as it is defined.
    config_flags.DEFINE_config_file(
        'config', f'{_CONFIG_FILE}:{task}', 'Config file and preset, '
        'FILE:PRESET (default: the --task preset).', lock_config=True)
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    sys.exit(f'error: {lines[0]}' + (f' {lines[-1]}' if len(lines) > 1 else ''))
  except ValueError as e:  # get_config's unknown preset.
    sys.exit(f'error: {e}')
  except (AttributeError, KeyError) as e:  # An override of a key the config lacks.
    while e.args and isinstance(e.args[0], Exception):
      e = e.args[0]
    key = str(e.args[0] if e.args else e).splitlines()[0].strip('"\'')
    bad = [a.split('=')[0] for a in argv[1:]
           if a.startswith('--config.') and key in a.split('=')[0].split('.')]
    sys.exit(f'error: unknown config key {bad[0] if bad else key}: see '
             'experiments/configs/finetune.py for the keys')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
