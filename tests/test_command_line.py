"""The launchers' shared command line (launch/command_line.py): --config in
--help, --print_config, the deprecated flag names, one line per error."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from albert_jax.train.config import PretrainConfig

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The launchers that take --config, and a command line each needs to have one.
CONFIG_LAUNCHERS = {
  'pretrain': [],
  'finetune': [],
  'benchmark': [],
  'memory_plan': [],
  'params': ['--config=experiments/configs/pretrain.py:base'],
  'cluster': [],
  'sweep': ['--sweep=experiments/ablations/sharing.py:tiny'],
}


def _popen(launcher: str, *args: str) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, '-m', f'launch.{launcher}', *args],
    cwd=REPO,
    env=train_testing.subprocess_env(),
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def _run(launcher: str, *args: str) -> subprocess.CompletedProcess:
  process = _popen(launcher, *args)
  stdout, stderr = process.communicate(timeout=300)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
  """The message of a launcher that failed with one `error: ...` line."""
  assert result.returncode == 1, result.stdout + result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  return lines[0]


def test_help_lists_config_and_print_config():
  # All at once: each is mostly the interpreter importing jax.
  processes = {name: _popen(name, *args, '--help') for name, args in CONFIG_LAUNCHERS.items()}
  for name, process in processes.items():
    stdout, stderr = process.communicate(timeout=300)  # absl's --help exits 1.
    assert '  --config: ' in stdout and '  --[no]print_config: ' in stdout, name
  pretrain = _run('pretrain', '--help').stdout
  config_help = pretrain.split('  --config: ', 1)[1].split('\n  --', 1)[0]
  assert "(default: '" in config_help and "pretrain.py:tiny')" in config_help


def test_print_config_applies_overrides_and_runs_nothing(tmp_path):
  workdir = tmp_path / 'run'
  result = _run(
    'pretrain',
    f'--workdir={workdir}',
    '--print_config',
    '--config.train.num_steps=7',
    '--config.model.hidden_size=96',
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert 'preset: tiny' in lines and '  num_steps: 7' in lines
  assert '  hidden_size: 96' in lines
  assert any(line.startswith('sharding_rules: [[batch, [data, fsdp]]') for line in lines), (
    result.stdout
  )
  assert not workdir.exists()


def test_print_config_applies_the_flags_that_set_keys():
  # launch.benchmark's --batch_size and --max_seq_length, the latter by the
  # deprecated name --seq_len.
  result = _run(
    'benchmark',
    '--config=experiments/configs/pretrain.py:tiny',
    '--batch_size=4',
    '--seq_len=16',
    '--print_config',
  )
  assert result.returncode == 0, result.stderr
  assert result.stderr == ('warning: --seq_len is deprecated; use --max_seq_length\n')
  lines = result.stdout.splitlines()
  assert '  batch_size: 4' in lines and '  max_seq_length: 16' in lines


@pytest.mark.parametrize(
  'launcher, args, old, new, error',
  [
    # The value reaches --source: the error is about the model, not a missing
    # --source.
    (
      'evaluate',
      ['--model=/nonexistent', '--data=builtin'],
      'data',
      'source',
      'error: .*/nonexistent',
    ),
    (
      'train_tokenizer',
      ['--input=text:/nonexistent/*.txt', '--output=/nonexistent'],
      'input',
      'source',
      'error: text:/nonexistent/[*].txt matches no files',
    ),
    # --prepared=DIR is --source=prepared:DIR.
    (
      'benchmark_data',
      ['--prepared=/nonexistent'],
      'prepared',
      'source',
      'error: prepared:/nonexistent is not prepared data',
    ),
    (
      'evaluate',
      ['--max_predictions=many'],
      'max_predictions',
      'max_predictions_per_seq',
      'error: flag --max_predictions_per_seq=many: invalid literal',
    ),
  ],
)
def test_deprecated_flag_names_work_and_warn(launcher, args, old, new, error):
  result = _run(launcher, *args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1
  # Once, first; the last line is the error (train_tokenizer's progress bar
  # comes between).
  assert lines[0] == f'warning: --{old} is deprecated; use --{new}', result.stderr
  assert result.stderr.count('deprecated') == 1
  assert re.match(error, lines[-1]), result.stderr


def test_a_library_error_is_one_line_without_traceback(tmp_path):
  # An AlbertError raised by the trainer, not by the command line.
  message = _one_error_line(
    _run('pretrain', f'--workdir={tmp_path}/run', '--config.train.optimizer=sgd')
  )
  assert 'sgd' in message


@pytest.mark.parametrize(
  'launcher, args, message',
  [
    (
      'prepare_data',
      ['--vocab=v', '--output=o', '--bogus=1'],
      "error: Unknown command line flag 'bogus'",
    ),
    (
      'prepare_data',
      ['--vocab=v', '--output=o', 'stray'],
      "error: unexpected argument 'stray'; flags look like --name=value",
    ),
    ('params', ['--print_config'], 'error: --print_config: no config on this command line'),
  ],
)
def test_command_line_mistakes_are_one_line(launcher, args, message):
  assert _one_error_line(_run(launcher, *args)) == message


def test_no_missing_backend_line_from_jax():
  # jax logs "Unable to initialize backend 'tpu': ... libtpu.so" at INFO on a
  # machine without a TPU; the launchers drop it, even at --verbosity=0.
  params = ['--config=experiments/configs/pretrain.py:tiny']
  benchmark = [
    '--config=experiments/configs/pretrain.py:tiny',
    '--batch_size=8',  # A multiple of the tests' 8 CPU devices.
    '--steps=1',
    '--rounds=1',
    '--warmup=0',
    '--json',
  ]
  processes = [
    _popen('params', *params),
    _popen('params', *params, '--verbosity=0'),
    _popen('benchmark', *benchmark),
  ]
  for process in processes:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert 'total' in stdout or 'tokens_per_sec' in stdout
    assert 'Unable to initialize backend' not in stdout + stderr, stderr


def _dotted(tree: dict, prefix: str = '') -> list[str]:
  keys = []
  for key, value in tree.items():
    if isinstance(value, dict):
      keys += _dotted(value, f'{prefix}{key}.')
    else:
      keys.append(prefix + key)
  return keys


def test_print_config_prints_every_key_of_the_records_once():
  result = _run('pretrain', '--config=experiments/configs/pretrain.py:base', '--print_config')
  assert result.returncode == 0, result.stderr
  printed = _dotted(yaml.safe_load(result.stdout))
  assert sorted(printed) == sorted(_dotted(PretrainConfig.defaults().to_dict()))
  # One line per key and per block: nothing printed twice.
  blocks = {key.split('.')[0] for key in printed if '.' in key}
  assert len(result.stdout.splitlines()) == len(printed) + len(blocks)


def test_warnings_are_plain_lines(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('A few words.\nNot enough for a vocabulary.\n')
  result = _run(
    'train_tokenizer',
    f'--source=text:{corpus}',
    '--vocab_size=5000',
    f'--output={tmp_path / "vocab"}',
  )
  assert result.returncode == 0, result.stderr
  assert re.fullmatch(
    r'warning: corpus too small for vocab_size=5000: trained \d+ pieces', result.stderr.strip()
  ), result.stderr
