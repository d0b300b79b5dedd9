"""Speed settings chosen for the backend: what they choose, and that the
chosen step trains exactly like the plain loop of one layer and one batch."""

import jax
import numpy as np
import pytest

from albert_jax import backend_defaults, benchmark
from albert_jax.config import ModelConfig
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain


@pytest.mark.parametrize(
  'configured, depth, backend, remat, expected',
  [
    (0, 12, 'cpu', False, 12),
    (0, 24, 'gpu', False, 24),
    (0, 48, 'cpu', False, 1),  # Deeper than MAX_UNROLLED_LAYERS: compile time.
    (0, 12, 'tpu', False, 12),  # Without remat a loop stacks every layer's activations.
    (0, 12, 'tpu', True, 1),  # With remat the loop needs less than unrolled layers.
    (0, 12, 'cpu', True, 12),
    (3, 12, 'cpu', False, 3),  # Set: kept.
  ],
)
def test_layer_unroll(configured, depth, backend, remat, expected):
  model = ModelConfig(num_layers=depth, unroll=configured, remat_policy='full' if remat else 'none')
  assert backend_defaults.layer_unroll(model, backend) == expected


@pytest.mark.parametrize(
  'configured, examples, splits, tokens, width, backend, expected',
  [
    (0, 8, 8, 128, 768, 'cpu', 2),  # 4 examples of 128 = 512 tokens each.
    (0, 8, 8, 512, 768, 'cpu', 4),  # At least 2 examples, over the token budget.
    (0, 1, 1, 512, 768, 'cpu', 1),  # A single example.
    (0, 6, 6, 128, 768, 'cpu', 2),  # 6 = 2 x 3, the fewest that fit.
    (0, 8, 4, 128, 768, 'cpu', 2),  # 2 processes: micro-batches split 4 ways.
    (0, 8, 0, 128, 768, 'cpu', 1),  # The batch does not split: the check says so.
    (0, 8, 8, 128, 1024, 'cpu', 2),  # Wider than base: base's budget.
    (0, 16, 16, 128, 64, 'cpu', 2),  # H = 64: 512 x sqrt(12) = 1,773 tokens.
    (0, 32, 32, 128, 64, 'cpu', 4),
    (0, 256, 256, 512, 768, 'tpu', 32),  # 8 x 512 = 4,096 tokens per chip.
    (0, 16, 16, 128, 64, 'tpu', 1),
    (0, 64, 64, 512, 768, 'gpu', 1),
    (4, 8, 8, 128, 768, 'cpu', 4),  # Set: kept.
  ],
)
def test_grad_accum_steps(configured, examples, splits, tokens, width, backend, expected):
  steps = backend_defaults.grad_accum_steps(
    configured,
    examples_per_device=examples,
    splits_into=splits,
    tokens_per_example=tokens,
    hidden_size=width,
    backend=backend,
  )
  assert steps == expected


def _config(*, unroll: int, grad_accum_steps: int) -> PretrainConfig:
  config = pretrain.get_config('tiny')
  config.model.vocab_size = 128
  config.model.unroll = unroll
  config.data.max_seq_length = 64
  config.data.max_predictions_per_seq = 8
  config.train.batch_size = 32
  config.train.grad_accum_steps = grad_accum_steps
  return PretrainConfig.from_config(config)


def _train(step: benchmark.CompiledStep, batches: list[dict]) -> tuple[list[float], dict]:
  """Losses of `batches`, one step each from fresh params, and the final params."""
  state, losses = step.init_state(), []
  with mesh_lib.activate(step.mesh, step.rules):
    for batch in batches:
      state, metrics = step.compiled(state, jax.device_put(batch, step.batch_sharding))
      losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params)


def test_chosen_defaults_train_like_the_plain_loop():
  """Three steps from the same params on the same batches: the CPU's choice
  (unrolled layers, micro-batches) against one layer per loop iteration and
  one batch per step gives the same losses and params (fp32 tolerance)."""
  device = jax.devices()[:1]  # 32 x 64 tokens on one device: 2 micro-batches.
  chosen = benchmark.compile_train_step(_config(unroll=0, grad_accum_steps=0), device)
  plain = benchmark.compile_train_step(_config(unroll=1, grad_accum_steps=1), device)
  assert jax.default_backend() == 'cpu'
  assert chosen.layer_unroll > 1 and chosen.grad_accum_steps > 1  # Not the plain program.
  assert (plain.layer_unroll, plain.grad_accum_steps) == (1, 1)

  rng = np.random.default_rng(0)
  masked = benchmark.num_masked_positions(_config(unroll=1, grad_accum_steps=1).data)
  batches = [benchmark.synthetic_batch(rng, 32, 64, masked, 128)] * 3  # Learnable: one batch.
  chosen_losses, chosen_params = _train(chosen, batches)
  plain_losses, plain_params = _train(plain, batches)
  np.testing.assert_allclose(chosen_losses, plain_losses, rtol=1e-5)
  assert chosen_losses[-1] < chosen_losses[0]  # The steps do train.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), chosen_params, plain_params
  )
