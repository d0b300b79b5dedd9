"""What every launcher does the same way: parse the flags, refuse stray
arguments, log quietly, and turn an `AlbertError` into one `error: ...` line.

  def main(argv):
    config = flags.FLAGS.config
    ...

  if __name__ == '__main__':
    command_line.run(main, config=command_line.Config(
        'experiments/configs/pretrain.py:tiny',
        keys_file='experiments/configs/pretrain.py'))

Logging is quiet: warnings and errors only unless --verbosity is given, and
never jax's "Unable to initialize backend 'tpu'" of a machine without one.

A launcher given a `Config` takes --config=FILE:PRESET, overrides
--config.KEY=VALUE and --print_config. A bad flag, value or config key is one
line and exit status 1, as is an `AlbertError` raised by main (or by the
library under it); the deprecated flag names of DEPRECATED_FLAGS still work,
with a warning.

This is the one boundary where errors become lines (`one_line`): ours, and
the operating system's and the file readers' (OSError, JSON, csv,
safetensors), each as one line naming the path and the cause, exit status 1,
no traceback. Anything else is a bug and keeps its traceback. Ctrl-C is exit
status 130; a run stopped by a signal it handled (errors.Interrupted) exits
128 + the signal's number, as the shell reports one.
"""

import csv
import dataclasses
import errno
import json
import logging as std_logging
import os
import re
import resource
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import safetensors
import yaml
from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from albert_jax.errors import AlbertError, Interrupted, UsageError

# Old flag name -> (its name now, a prefix its value gains). One name per idea
# across the launchers; the old names go after one release.
DEPRECATED_FLAGS: dict[str, tuple[str, str]] = {
  'input': ('source', ''),  # launch.train_tokenizer
  'data': ('source', ''),  # launch.evaluate
  'prepared': ('source', 'prepared:'),  # launch.benchmark_data
  'seq_len': ('max_seq_length', ''),  # launch.benchmark, launch.benchmark_data
  'max_predictions': ('max_predictions_per_seq', ''),  # launch.benchmark_data
  'workdir': ('model', ''),  # launch.export (the launchers that train keep --workdir)
  'from_hf': ('model', ''),  # launch.export
}


@dataclasses.dataclass(frozen=True)
class Config:
  """A launcher's --config flag.

  Attributes:
    default: FILE:PRESET (None: no config unless --config is given), or a
      function of the command line giving it (it may raise an AlbertError).
    keys_file: the config file an unknown key's message points to.
    help_text: --config's help.
    lock_config: refuse new keys in the config (see config_flags).
    resolve: applies the launcher's own flags that set config keys (e.g.
      --batch_size), in place, before --print_config and main see the config.
  """

  default: str | None | Callable[[Sequence[str]], str | None]
  keys_file: str
  help_text: str = 'Config file and preset, FILE:PRESET.'
  lock_config: bool = True
  resolve: Callable[[config_dict.ConfigDict], None] | None = None


def run(
  main: Callable[[list[str]], int | None],
  *,
  config: Config | None = None,
  takes_arguments: bool = False,
) -> NoReturn:
  """Parses the command line and runs `main(argv)`, as absl's app.run.

  Args:
    main: the launcher; argv[1:] holds the arguments that are not flags.
    config: the launcher's --config flag, if it has one (it also gains
      --print_config).
    takes_arguments: allow arguments besides flags (otherwise one is an error).
  """
  # Installed before anything can start a jax backend (flag parsing may), and
  # kept whatever --verbosity says.
  std_logging.getLogger('jax._src.xla_bridge').addFilter(_not_missing_backend)
  sys.unraisablehook = _without_closed_loop_reports(sys.unraisablehook)
  # The same failed writes' tasks, reported again by asyncio when collected.
  std_logging.getLogger('asyncio').addFilter(
    lambda record: not record.getMessage().startswith('Task exception was never retrieved')
  )
  app.run(
    lambda argv: _main(main, argv, config, takes_arguments),
    flags_parser=lambda argv: _parse(argv, config),
  )


def _without_closed_loop_reports(unraisablehook: Callable[[Any], None]) -> Callable[[Any], None]:
  """`unraisablehook` but for 'Event loop is closed' raised in asyncio itself.

  After a checkpoint read or write fails (a truncated file, a full disk),
  tensorstore still completes the failed operation's other reads and writes
  and reports each into orbax's event loop, closed by then; each refusal is
  unraisable (it happens in tensorstore's threads). The failure itself
  reaches the user as one line; these echoes of it are dropped.
  """

  def hook(unraisable: Any) -> None:
    frames = traceback.extract_tb(unraisable.exc_traceback)
    if (
      unraisable.exc_type is RuntimeError
      and str(unraisable.exc_value) == 'Event loop is closed'
      and frames
      and all(f.filename.endswith(os.path.join('asyncio', 'base_events.py')) for f in frames)
    ):
      return
    unraisablehook(unraisable)

  return hook


def flag_value(argv: Sequence[str], name: str, default: str | None = None) -> str | None:
  """The value of --name on the command line, read before the flags are
  parsed (the last one wins, as in absl)."""
  value = default
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg == '--':
      break
    if re.fullmatch(f'--?{name}=.*', arg):
      value = arg.split('=', 1)[1]
    elif re.fullmatch(f'--?{name}', arg) and i + 1 < len(args):
      value = args[i + 1]
  return value


def config_overrides(argv: Sequence[str]) -> list[str]:
  """The --config.KEY=VALUE overrides of the (parsed) command line, as given,
  for a launcher that passes them on to another."""
  overrides = []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg == '--':
      break
    match = re.fullmatch(r'--?(no)?(config\.[^=]+)(=.*)?', arg)
    if not match:
      continue
    overrides.append(arg)
    # `--config.KEY VALUE`: the value is the next argument, unless KEY is a bool.
    name = match.group(2)
    if (
      not match.group(1)
      and not match.group(3)
      and i + 1 < len(args)
      and name in flags.FLAGS
      and not flags.FLAGS[name].boolean
    ):
      overrides.append(args[i + 1])
  return overrides


def format_config(config: config_dict.ConfigDict) -> str:
  """The config as YAML: one key a line, lists on one line."""

  class Dumper(yaml.SafeDumper):
    pass

  for kind in (list, tuple):
    Dumper.add_representer(
      kind,
      lambda dumper, value: dumper.represent_sequence(
        'tag:yaml.org,2002:seq', value, flow_style=True
      ),
    )
  return yaml.dump(
    config.copy_and_resolve_references().to_dict(), Dumper=Dumper, sort_keys=True, width=100
  )


def _not_orbax(record: std_logging.LogRecord) -> bool:
  return f'{os.sep}orbax{os.sep}' not in record.pathname


def _not_missing_backend(record: std_logging.LogRecord) -> bool:
  """Drops jax's INFO "Unable to initialize backend 'tpu': ... libtpu.so"
  (any backend that may fail quietly: jax then picks another one), which
  absl's default verbosity would print on every machine without that
  accelerator. A backend asked for by JAX_PLATFORMS fails loudly still."""
  return record.levelno >= std_logging.WARNING or not str(record.msg).startswith(
    'Unable to initialize backend'
  )


def _main(
  main: Callable[[list[str]], int | None],
  argv: list[str],
  config: Config | None,
  takes_arguments: bool,
) -> int | None:
  """Refuses stray arguments, quietens logging, applies --print_config, and
  runs main, with an AlbertError as one line."""
  try:
    if not takes_arguments and len(argv) > 1:
      raise UsageError(f'unexpected argument {argv[1]!r}; flags look like --name=value')
    _check_address_space()
    if not flags.FLAGS['verbosity'].present:
      # Warnings and errors only (orbax logs every save at INFO). Orbax's own
      # error logs go too: its failures reach the library as exceptions, which
      # end as one line here, and its logs would repeat them with tracebacks.
      logging.set_verbosity(logging.WARNING)
      logging.get_absl_handler().addFilter(_not_orbax)
    if config is not None:
      _check_config_loads()
      if flags.FLAGS.config is not None and config.resolve is not None:
        config.resolve(flags.FLAGS.config)
      if flags.FLAGS.print_config:
        if flags.FLAGS.config is None:
          raise UsageError('--print_config: no config on this command line')
        print(format_config(flags.FLAGS.config), end='')
        return 0
    return main(argv)
  except Interrupted as e:
    # It said what it kept; the exit status says which signal stopped it.
    if str(e):
      print(str(e), file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)
  except Exception as e:
    message = one_line(e)
    if message is None:
      raise
    _exit(message)
  except KeyboardInterrupt:
    # Ctrl-C where no handler saves anything (see distributed.PreemptionWatcher).
    _exit('interrupted (Ctrl-C): nothing was being saved', status=128 + signal.SIGINT)


def _check_address_space() -> None:
  """UsageError under an address-space limit (ulimit -v): near it, XLA's CPU
  runtime (jaxlib 0.10) computes wrong values without an error (a tiny run's
  grad_norm 1629 for 1.03, same loss) before a thread fails to start; a
  limit on resident memory (cgroups: SLURM's --mem, docker --memory) is the
  one to use."""
  soft, _ = resource.getrlimit(resource.RLIMIT_AS)
  if soft != resource.RLIM_INFINITY:
    raise UsageError(
      f'the address space is limited to {soft >> 20} MiB (ulimit -v): JAX may then compute '
      'wrong values without an error; run with `ulimit -v unlimited` (limit memory with '
      'cgroups instead, e.g. SLURM --mem)'
    )


def _check_config_loads() -> None:
  """UsageError naming the --config file that cannot be loaded (config_flags
  defers the failure to the first use, as a many-line OSError)."""
  loaded = flags.FLAGS.config
  if loaded is None:
    return
  try:
    loaded.keys  # noqa: B018 (one that failed to load raises on any use)
  except OSError as e:
    spec = flags.FLAGS['config'].serialize().partition('=')[2]
    path = spec.partition(':')[0]
    if not os.path.isfile(path):
      raise UsageError(f'--config={spec}: no config file {path}; pass FILE:PRESET') from None
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise UsageError(f'--config={spec}: cannot load it ({lines[-1]})') from None


def one_line(error: Exception) -> str | None:
  """The one line that says what `error` means to the user, and what to do;
  None for an error that is a bug (its traceback is wanted).

  Ours (AlbertError) say it themselves. An OSError or a reading library's own
  error type (JSON, csv, safetensors) is an operating-system or file
  problem at the edge of a run, named with its path.
  """
  if isinstance(error, AlbertError):
    return str(error)
  if isinstance(error, OSError):
    return _os_error(error)
  if isinstance(error, json.JSONDecodeError):
    return f'invalid JSON at line {error.lineno} column {error.colno}: {error.msg}'
  if isinstance(error, csv.Error):
    return f'unreadable CSV/TSV data: {error}'
  if isinstance(error, safetensors.SafetensorError):
    return f'safetensors: {error}'
  return None


def _os_error(error: OSError) -> str:
  """'no space left on device: PATH', or 'PATH: permission denied'."""
  path = error.filename or ''
  if error.filename2:
    path = f'{path} -> {error.filename2}'
  if error.errno == errno.ENOSPC:
    return f'no space left on device: {path or error}'
  reason = (error.strerror or str(error)).lower()
  if not path:
    return reason
  hint = {
    errno.EROFS: ': choose a writable path',
    errno.EACCES: ': check its permissions',
    errno.ENOTDIR: ': a part of the path is a file',
    errno.ENOENT: ': check the path',
    errno.EEXIST: ': a file is in the way (a directory is needed there)',
  }.get(error.errno, '')
  return f'{path}: {reason}{hint}'


def _parse(argv: list[str], config: Config | None) -> list[str]:
  """Defines --config (and --print_config), then parses the command line.
  A bad flag, value or config key exits with one line."""
  try:
    if config is not None:
      default = config.default(argv) if callable(config.default) else config.default
      # Defined here, not at import: with no --config on the command line the
      # default is parsed (overrides included) as soon as it is defined, and
      # finetune's default depends on --task.
      _define_for_main_module(
        config_flags.DEFINE_config_file(
          'config', default, config.help_text, lock_config=config.lock_config
        )
      )
      _define_for_main_module(
        flags.DEFINE_bool(
          'print_config',
          False,
          'Print the config (after the --config.KEY=VALUE '
          'overrides and the flags that set keys) and exit.',
        )
      )
    return flags.FLAGS(_rewrite_deprecated(argv))
  except AlbertError as e:
    _exit(str(e))
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _exit(lines[0] + (f' {lines[-1]}' if len(lines) > 1 else ''))
  except (AttributeError, KeyError) as e:  # An override of a key the config lacks.
    while e.args and isinstance(e.args[0], Exception):  # AttributeError(KeyError(...))
      e = e.args[0]
    lines = str(e.args[0] if e.args else e).splitlines()
    key = lines[0].strip('"\'')
    hint = f' ({lines[1]})' if len(lines) > 1 else ''
    bad = [
      a.split('=')[0]
      for a in argv[1:]
      if a.startswith('--config.') and key in a.split('=')[0].split('.')
    ]
    keys_file = config.keys_file if config is not None else 'the config file'
    _exit(f'unknown config key {bad[0] if bad else key}{hint}: see {keys_file} for the keys')


def _define_for_main_module(holder: flags.FlagHolder) -> None:
  """Lists a flag defined here in the launcher's --help (which shows the
  flags of the main module only)."""
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


def _rewrite_deprecated(argv: list[str]) -> list[str]:
  """argv with each deprecated flag name of this launcher replaced by its
  name now, and a warning for each on stderr."""
  rewritten = [argv[0]]
  args = iter(argv[1:])
  for arg in args:
    match = re.fullmatch(r'(--?)([a-z_]+)(=.*)?', arg)
    old = match and match.group(2)
    if arg == '--':
      rewritten += [arg, *args]
      break
    if (
      old not in DEPRECATED_FLAGS
      or old in flags.FLAGS
      or DEPRECATED_FLAGS[old][0] not in flags.FLAGS
    ):
      rewritten.append(arg)
      continue
    new, prefix = DEPRECATED_FLAGS[old]
    print(f'warning: --{old} is deprecated; use --{new}', file=sys.stderr)
    value = match.group(3)[1:] if match.group(3) else next(args, None)
    if value is None:  # absl says what is missing.
      rewritten.append(f'--{new}')
    else:
      rewritten.append(f'--{new}={prefix if value else ""}{value}')
  return rewritten


def _exit(message: str, status: int = 1) -> NoReturn:
  """Exits with `status` and `message` as one line on stderr."""
  print(
    'error: ' + ' '.join(line.strip() for line in message.splitlines() if line.strip()),
    file=sys.stderr,
  )
  sys.exit(status)
