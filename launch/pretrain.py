r"""Pretrain ALBERT.

  python -m launch.pretrain                      # tiny model, builtin corpus, CPU
  python -m launch.pretrain --config=experiments/configs/pretrain.py:base \
      --workdir=runs/base --config.train.batch_size=512 --config.mesh.fsdp=8

Every config key can be overridden (`--config.train.num_steps=200`). Rerunning
with the same workdir resumes from its latest checkpoint. Several processes
(one per host) join with `--distributed` on Cloud TPU pods and SLURM (see
launch/cluster.py), or anywhere with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I.
"""

import os
import sys
from collections.abc import Sequence

from absl import app
from absl import flags
import jax

from albert_jax.errors import DataError
from albert_jax.train import distributed
from albert_jax.train import trainer
from albert_jax.errors import UsageError
from launch import command_line

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'experiments', 'configs', 'pretrain.py') + ':tiny'
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (checkpoints, metrics, config); default runs/PRESET.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Join the other processes of a Cloud TPU pod / SLURM job (found from the '
    'environment).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0, for a multi-process run.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0-based.')


def main(argv: Sequence[str]) -> None:
  command_line.start(argv)
  config = flags.FLAGS.config
  workdir = _WORKDIR.value or os.path.join('runs', config.get('preset', 'run'))
  distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, cluster=_DISTRIBUTED.value)
  try:
    result = trainer.train(config, workdir)
  except (UsageError, DataError) as e:
    sys.exit(f'error: {e}')
  if jax.process_index() != 0:
    return
  if result.metrics:
    print(f'finished at step {result.step}: loss {result.metrics["loss"]:.4f}')
  print(f'checkpoints: {result.checkpoint_dir}\n'
        f'metrics:     {result.metrics_path}\n'
        f'tensorboard: tensorboard --logdir {result.tensorboard_dir}')


if __name__ == '__main__':
  app.run(main, flags_parser=command_line.config_parser(
      _DEFAULT_CONFIG, keys_file='experiments/configs/pretrain.py'))
