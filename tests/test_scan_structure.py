"""Depth does not grow the program: layers run under nn.scan in every mode.

The lowered HLO of a training step (forward + backward of the pretraining
model) has the same number of instructions at 2 (or 4) layers and at 24;
an unrolled loop (model.unroll >= depth) shows the contrast.
"""

import dataclasses

import jax
import jax.numpy as jnp
import model_testing
import pytest

from albert_jax.config import ModelConfig
from albert_jax.model import AlbertForPreTraining
from albert_jax.param_count import param_shapes

# A loop of two layers, whatever the backend would choose.
TINY = dataclasses.replace(model_testing.TINY, num_layers=2, unroll=1)


def _num_instructions(config: ModelConfig) -> int:
  """Instructions in the lowered HLO of grad(loss) for `config`."""
  ids = jnp.ones((2, 8), jnp.int32)
  positions = jnp.zeros((2, 3), jnp.int32)

  def loss(params):
    out = AlbertForPreTraining(config).apply({'params': params}, ids, ids, ids, positions)
    return out['mlm_logits'].sum() + out['sentence_logits'].sum()

  text = jax.jit(jax.grad(loss)).lower(param_shapes(config)).as_text(dialect='hlo')
  return sum(' = ' in line for line in text.splitlines())


MODES = {
  'all': dict(),
  'none': dict(sharing='none'),
  'attention': dict(sharing='attention'),
  'ffn': dict(sharing='ffn'),
  # Both shallow and deep have groups, repeats and inner layers to scan.
  'groups': dict(num_hidden_groups=2, inner_group_num=2),
}


@pytest.mark.parametrize('mode', list(MODES))
def test_depth_does_not_grow_the_program(mode):
  shallow = dataclasses.replace(TINY, **MODES[mode])
  if mode == 'groups':
    shallow = dataclasses.replace(shallow, num_layers=4)
  deep = dataclasses.replace(shallow, num_layers=24)
  assert _num_instructions(shallow) == _num_instructions(deep)


@pytest.mark.parametrize('mode', ['all', 'none'])
def test_unrolled_program_grows_with_depth(mode):
  shallow = dataclasses.replace(TINY, unroll=24, **MODES[mode])
  deep = dataclasses.replace(shallow, num_layers=24)
  assert _num_instructions(deep) > _num_instructions(shallow)
