"""Model FLOPs of one ALBERT pretraining example (forward + backward).

Counted as model FLOPs are for MFU (PaLM, Chowdhery et al. 2022, appendix B):
6 FLOPs per matmul parameter per token it is applied to (2 forward, 4
backward), where a shared layer counts once per application, plus attention
scores and mixing (12 * applications * seq^2 * H), plus the MLM head on the
masked positions only. Embedding lookups, LayerNorms, activations and
softmax are not matmuls and are left out.
"""

from albert_jax.config import ModelConfig


def layer_matmul_params(config: ModelConfig) -> int:
  """Matmul weights of one encoder layer: Q, K, V, output, FFN in and out."""
  h, f = config.hidden_size, config.intermediate_size
  return 4 * h * h + 2 * h * f


def train_flops_per_example(config: ModelConfig, seq_len: int, num_masked: int) -> float:
  """Forward + backward FLOPs of one example of `seq_len` tokens with
  `num_masked` MLM predictions."""
  h, e = config.hidden_size, config.embedding_size
  applications = config.num_layer_applications
  per_token = applications * layer_matmul_params(config)
  if config.has_projection:
    per_token += e * h
  per_example = h * h + 2 * h  # Pooler and sentence head, on [CLS] only.
  per_masked = h * e + e * config.vocab_size  # MLM dense + tied output layer.
  matmul = 6 * (seq_len * per_token + per_example + num_masked * per_masked)
  attention = 12 * applications * seq_len**2 * h
  return float(matmul + attention)
