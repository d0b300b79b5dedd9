"""The tests' tiny model (tests/test_model.py, test_hf_parity.py,
test_hf_heads.py, test_scan_structure.py, test_flops.py): width 32, 4 layers,
a 99-piece vocabulary; a test needing another shape replaces a field."""

from albert_jax.config import ModelConfig

TINY = ModelConfig(
  vocab_size=99,
  embedding_size=16,
  hidden_size=32,
  num_layers=4,
  num_heads=4,
  intermediate_size=64,
  max_position_embeddings=16,
)
