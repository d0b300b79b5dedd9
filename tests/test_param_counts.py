"""Parameter counts match the ALBERT paper's architectures, number for number.

Backbone = embeddings + projection + encoder + pooler (vocab 30000), from the
real param tree via jax.eval_shape.
"""

import json
import os
import subprocess
import sys

import pytest

from albert_jax.config import ModelConfig
from albert_jax.param_count import count_params
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain

BACKBONES = [
  # (preset, model overrides, backbone params)
  ('base', dict(), 11_683_584),
  ('base', dict(sharing='none'), 89_650_176),
  ('base', dict(sharing='attention'), 63_647_232),
  ('base', dict(sharing='ffn'), 37_686_528),
  ('base', dict(embedding_size=768), 31_114_752),
  ('base', dict(embedding_size=768, sharing='none'), 109_081_344),
  ('base', dict(embedding_size=768, sharing='attention'), 83_078_400),
  ('base', dict(embedding_size=768, sharing='ffn'), 57_117_696),
  ('base', dict(embedding_size=64), 9_681_408),
  ('base', dict(embedding_size=64, sharing='none'), 87_648_000),
  ('base', dict(embedding_size=256), 15_687_936),
  ('base', dict(embedding_size=256, sharing='none'), 93_654_528),
  ('large', dict(), 17_683_968),
  ('xlarge', dict(), 58_724_864),
  ('xxlarge', dict(), 222_595_584),
]


def _config(preset: str, **overrides) -> ModelConfig:
  config = pretrain.get_config(preset)
  config.model.update(overrides)
  return PretrainConfig.from_config(config).model


@pytest.mark.parametrize('preset, overrides, backbone', BACKBONES)
def test_backbone_counts(preset, overrides, backbone):
  counts = count_params(_config(preset, **overrides))
  assert counts['backbone'] == backbone
  assert counts['backbone'] == sum(
    counts[group] for group in ('embeddings', 'projection', 'encoder', 'pooler')
  )
  assert counts['total'] == counts['backbone'] + counts['heads']


def test_count_groups_of_base():
  counts = count_params(_config('base'))
  v, e, h = 30000, 128, 768
  assert counts['embeddings'] == (v + 512 + 2) * e + 2 * e
  assert counts['projection'] == e * h + h
  assert counts['pooler'] == h * h + h
  # MLM head (dense H -> E, LayerNorm, output bias; decoder tied) + SOP head.
  assert counts['heads'] == (h * e + e) + 2 * e + v + (2 * h + 2)
  assert count_params(_config('base', embedding_size=768))['projection'] == 0


def test_launch_params_reports_counts():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def run(*flags):
    return subprocess.run(
      [
        sys.executable,
        '-m',
        'launch.params',
        '--config=experiments/configs/pretrain.py:xxlarge',
        *flags,
      ],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=120,
    )

  result = run('--json')
  assert result.returncode == 0, result.stderr
  counts = json.loads(result.stdout)
  assert set(counts) == {
    'embeddings',
    'projection',
    'encoder',
    'pooler',
    'heads',
    'backbone',
    'total',
  }
  assert counts['backbone'] == 222_595_584

  # Overrides reach the model; a table by default.
  result = run(
    '--config.model.hidden_size=768',
    '--config.model.num_heads=12',
    '--config.model.intermediate_size=3072',
    '--config.model.sharing=none',
  )
  assert result.returncode == 0, result.stderr
  assert 'backbone' in result.stdout and '89,650,176' in result.stdout

  result = run('--config.model.num_heads=7')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
    'error: model.num_heads=7 must divide model.hidden_size=4096'
  )
