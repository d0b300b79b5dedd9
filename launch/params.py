"""Prints ALBERT parameter counts of a config, without allocating weights.

  python -m launch.params --config=experiments/configs/pretrain.py:base
  python -m launch.params --config=experiments/configs/pretrain.py:base \
      --config.model.sharing=none --json
"""

import json
from collections.abc import Sequence

from absl import flags

from albert_jax.errors import UsageError
from albert_jax.param_count import count_params
from albert_jax.train.config import PretrainConfig
from launch import command_line

_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  config = flags.FLAGS.config
  if config is None:
    raise UsageError('pass --config=experiments/configs/pretrain.py:NAME')
  # The whole config: model.vocab_size 0 (the tokenizer's) counts the
  # data.vocab_size a run would train.
  counts = count_params(PretrainConfig.from_config(config).model)
  if _JSON.value:
    print(json.dumps(counts))
    return
  for group, count in counts.items():
    print(f'{group:<12}{count:>15,}')


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      None,
      keys_file='experiments/configs/pretrain.py',
      help_text='Config file, e.g. experiments/configs/pretrain.py:base.',
    ),
  )
