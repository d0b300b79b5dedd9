"""The shape of the training code: short functions a newcomer can follow."""

import ast
import pathlib

import pytest

from albert_jax.finetune.config import FinetuneConfig
from albert_jax.train.config import PretrainConfig, TrainConfig
from experiments.configs import finetune, pretrain

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 60  # Signature, docstring and body.


def test_no_long_functions_in_the_trainers():
  long = []
  paths = [ROOT / 'albert_jax/pretraining.py']
  for package in ('albert_jax/train', 'albert_jax/finetune'):
    paths += sorted((ROOT / package).glob('*.py'))
  for path in paths:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_LINES:
          long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)')
  assert not long, long


def test_trainers_assemble_their_run_in_one_place():
  """Pretraining, fine-tuning, benchmark and evaluation call run.assemble;
  none builds its own optimizer, initial state or jitted step."""
  for name in ('pretraining.py', 'finetune/trainer.py', 'benchmark.py', 'evaluate.py'):
    source = (ROOT / 'albert_jax' / name).read_text()
    assert 'step_lib.assemble(' in source, name
    for private in ('optimizer_and_schedule', 'initial_state(', 'jax.jit(functools'):
      assert private not in source, (name, private)


def _value_at(config, key: str):
  for part in key.split('.'):
    config = config[part]
  return config


@pytest.mark.parametrize('presets', [pretrain, finetune], ids=['pretrain', 'finetune'])
def test_no_preset_restates_a_records_default(presets):
  """Each setting is declared once, in its record: a preset states only what
  differs from the record's default (and every key it states exists)."""
  record_defaults = {
    'pretrain': PretrainConfig.defaults(),
    'finetune': FinetuneConfig.defaults(),
  }[presets.__name__.rsplit('.', 1)[1]]
  restated = [
    f'{name}: {key}={value!r}'
    for name in presets.PRESETS
    for key, value in presets.overrides(name).items()
    if key != 'preset' and _value_at(record_defaults, key) == value
  ]
  assert not restated, restated


def test_a_preset_is_the_records_defaults_and_its_overrides():
  config = pretrain.get_config('tiny')
  assert config.model.hidden_size == 64  # Stated by the preset.
  assert config.train.b2 == TrainConfig.b2  # Only in the record.
  assert config.train.num_epochs == 0.0  # Every key of the record is there.
  assert PretrainConfig.from_config(config).model.hidden_size == 64
