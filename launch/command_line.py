"""Command-line handling that the launchers share: --config from a config
file, with one line for a bad flag, value or config key; main's prologue (no
stray arguments, quiet logging).

  def main(argv):
    command_line.start(argv)
    config = flags.FLAGS.config
    ...

  if __name__ == '__main__':
    app.run(main, flags_parser=command_line.config_parser(
        'experiments/configs/pretrain.py:tiny',
        keys_file='experiments/configs/pretrain.py'))
"""

from collections.abc import Callable, Sequence
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags


def config_parser(
    default: str | None | Callable[[Sequence[str]], str], *, keys_file: str,
    help_text: str = 'Config file and preset, FILE:PRESET.',
    lock_config: bool = True) -> Callable[[list[str]], list[str]]:
  """An absl flags parser that defines --config and parses the command line.

  A bad flag, value or config key exits with one line.

  Args:
    default: the --config default, FILE:PRESET (None: none), or a function
      of the command line giving it.
    keys_file: the config file an unknown key's message points to.
    help_text: --config's help.
    lock_config: refuse new keys in the config (see config_flags).
  """
  def parse(argv: list[str]) -> list[str]:
    try:
      # Defined here, not at import: with no --config on the command line the
      # default is parsed (overrides included) as soon as it is defined.
      config_flags.DEFINE_config_file(
          'config', default(argv) if callable(default) else default,
          help_text, lock_config=lock_config)
      return flags.FLAGS(argv)
    except flags.Error as e:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      sys.exit(f'error: {lines[0]}' + (f' {lines[-1]}' if len(lines) > 1 else ''))
    except (AttributeError, KeyError) as e:  # An override of a key the config lacks.
      while e.args and isinstance(e.args[0], Exception):  # AttributeError(KeyError(...))
        e = e.args[0]
      lines = str(e.args[0] if e.args else e).splitlines()
      key = lines[0].strip('"\'')
      hint = f' ({lines[1]})' if len(lines) > 1 else ''
      bad = [a.split('=')[0] for a in argv[1:]
             if a.startswith('--config.') and key in a.split('=')[0].split('.')]
      sys.exit(f'error: unknown config key {bad[0] if bad else key}{hint}: '
               f'see {keys_file} for the keys')
  return parse


def check_no_arguments(argv: Sequence[str]) -> None:
  """Exits with one line when the command line holds more than flags."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected argument {argv[1]!r}; flags look like --name=value')


def quiet_logging() -> None:
  """Warnings and errors only, unless --verbosity is given (orbax logs every
  save at INFO)."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def start(argv: Sequence[str]) -> None:
  """The prologue of a launcher's main: flags only, quiet logging."""
  check_no_arguments(argv)
  quiet_logging()
