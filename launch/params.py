"""Prints ALBERT parameter counts of a config, without allocating weights.

  python -m launch.params --config=experiments/configs/pretrain.py:base
  python -m launch.params --config=experiments/configs/pretrain.py:base \
      --config.model.sharing=none --json
"""

import json
import sys

from absl import app
from absl import flags

from albert_jax.config import ModelConfig
from albert_jax.param_count import count_params
from launch import command_line

_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')


def main(argv: list[str]) -> None:
  command_line.check_no_arguments(argv)
  config = flags.FLAGS.config
  if config is None:
    sys.exit('error: pass --config=experiments/configs/pretrain.py:NAME')
  try:
    model_config = ModelConfig.from_config(config.model)
  except ValueError as e:
    sys.exit(f'error: {e}')
  counts = count_params(model_config)
  if _JSON.value:
    print(json.dumps(counts))
    return
  for group, count in counts.items():
    print(f'{group:<12}{count:>15,}')


if __name__ == '__main__':
  app.run(main, flags_parser=command_line.config_parser(
      None, keys_file='experiments/configs/pretrain.py',
      help_text='Config file, e.g. experiments/configs/pretrain.py:base.'))
