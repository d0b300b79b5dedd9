r"""Pretrain ALBERT.

  python -m launch.pretrain                      # tiny model, builtin corpus, CPU
  python -m launch.pretrain --config=experiments/configs/pretrain.py:base \
      --workdir=runs/base --config.train.batch_size=512 --config.mesh.fsdp=8

--config.init_from=PATH starts from a model's params: any model path
(albert_jax/model_path.py), i.e. a flax export, a Hugging Face directory or
cached hub id, or a training workdir's latest checkpoint; its vocabulary is
the run's unless --config.data.vocab is set (then it must be the same).
Every config key can be overridden (`--config.train.num_steps=200`);
--print_config prints the config the run would use, and runs nothing. Rerunning
with the same workdir resumes from its latest checkpoint. Several processes
(one per host) join with `--distributed` on Cloud TPU pods and SLURM (see
launch/cluster.py), or anywhere with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I.
"""

import os
import shlex
from collections.abc import Sequence

import jax
from absl import flags

from albert_jax import pretraining
from albert_jax.train.config import PretrainConfig
from launch import command_line, process_flags

_DEFAULT_CONFIG = (
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'experiments',
    'configs',
    'pretrain.py',
  )
  + ':tiny'
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Run directory (checkpoints, metrics, config); default runs/PRESET.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  config = PretrainConfig.from_config(flags.FLAGS.config)
  workdir = _WORKDIR.value or os.path.join('runs', config.preset or 'run')
  process_flags.join()
  result = pretraining.train(config, workdir)
  if jax.process_index() != 0:
    return
  if result.train_metrics and not result.preempted:
    print(f'finished at step {result.step}: loss {result.train_metrics["loss"]:.4f}')
  print(
    f'checkpoints: {result.checkpoint_dir}\n'
    f'metrics:     {result.metrics_path}\n'
    f'tensorboard: tensorboard --logdir {shlex.quote(result.tensorboard_dir)}'
  )


if __name__ == '__main__':
  command_line.run(
    main, config=command_line.Config(_DEFAULT_CONFIG, keys_file='experiments/configs/pretrain.py')
  )
