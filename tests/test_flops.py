"""Model FLOPs per pretraining example."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import model_testing
import numpy as np

from albert_jax.flops import train_flops_per_example
from albert_jax.model import AlbertForPreTraining
from albert_jax.param_count import count_params

TINY = dataclasses.replace(model_testing.TINY, num_layers=3)


def test_matmul_flops_are_six_per_param_per_token():
  """Untied, E == H-free parts: 6 x matmul weights x tokens + attention."""
  config = dataclasses.replace(TINY, sharing='none')
  seq, masked = 16, 4
  counts = count_params(config)
  h, e, layers = config.hidden_size, config.embedding_size, config.num_layers
  # Matmul weights = encoder params minus biases and LayerNorms.
  per_layer_other = 4 * h + config.intermediate_size + h + 4 * h
  encoder_matmul = counts['encoder'] - layers * per_layer_other
  expected = (
    6 * (seq * (encoder_matmul + e * h) + h * h + 2 * h + masked * (h * e + e * config.vocab_size))
    + 12 * layers * seq**2 * h
  )
  assert train_flops_per_example(config, seq, masked) == expected


def test_shared_layer_counts_once_per_application():
  none = dataclasses.replace(TINY, sharing='none')
  for config in (TINY, dataclasses.replace(TINY, sharing='attention')):
    assert train_flops_per_example(config, 16, 4) == train_flops_per_example(none, 16, 4)
  inner = dataclasses.replace(TINY, inner_group_num=2)
  deeper = dataclasses.replace(TINY, num_layers=6)
  assert train_flops_per_example(inner, 16, 4) == train_flops_per_example(deeper, 16, 4)


def test_forward_third_agrees_with_xla_cost_analysis():
  """The forward pass (1/3 of the count) against XLA's own FLOP count of the
  unrolled program (which also counts elementwise work: within 10%)."""
  # Wide enough for matmuls to dominate the elementwise work.
  config = dataclasses.replace(
    TINY,
    unroll=2,  # num_layers: no loop.
    hidden_size=256,
    intermediate_size=1024,
    embedding_size=64,
    vocab_size=512,
    num_layers=2,
  )
  seq, masked = 16, 4
  ids = jnp.ones((2, seq), jnp.int32)
  positions = jnp.zeros((2, masked), jnp.int32)
  model = AlbertForPreTraining(config)
  params = jax.eval_shape(model.init, jax.random.key(0), ids, ids, ids, positions)
  compiled = jax.jit(model.apply).lower(nn.unbox(params), ids, ids, ids, positions).compile()
  xla_flops = compiled.cost_analysis()['flops'] / 2  # Per example.
  ours = train_flops_per_example(config, seq, masked) / 3
  np.testing.assert_allclose(xla_flops, ours, rtol=0.1)
