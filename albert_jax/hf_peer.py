"""The reference peer of `launch.benchmark --peer=hf`: Hugging Face transformers'
PyTorch `AlbertForPreTraining`, trained with `torch.optim.AdamW` on the same
config and batch as the JAX step.

As Hugging Face runs it: MLM logits at every position (labels -100 where
nothing is masked), the default attention implementation, eager mode.
Imports torch: only `launch.benchmark --peer=hf` imports this module.
"""

import time
from collections.abc import Mapping

import numpy as np
import torch
import transformers

from albert_jax import hf
from albert_jax.config import ModelConfig

_IGNORE = -100  # Hugging Face's label for positions without a loss.


class TorchTrainer:
  """Runs training steps of AlbertForPreTraining on one fixed batch."""

  def __init__(self, config: ModelConfig, batch: Mapping[str, np.ndarray], *,
               learning_rate: float, weight_decay: float, b1: float, b2: float,
               eps: float, clip_norm: float, num_threads: int, seed: int = 0):
    """`batch` follows the data contract (albert_jax.benchmark.synthetic_batch);
    `num_threads` intra-op threads, as many as XLA uses."""
    torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    self.model = transformers.AlbertForPreTraining(
        transformers.AlbertConfig(**hf.to_hf_config(config)))
    self.model.train()
    self.optimizer = torch.optim.AdamW(
        self.model.parameters(), lr=learning_rate, betas=(b1, b2), eps=eps,
        weight_decay=weight_decay)
    self._clip_norm = clip_norm
    labels = np.full(batch['input_ids'].shape, _IGNORE, np.int64)
    np.put_along_axis(labels, batch['masked_lm_positions'],
                      np.where(batch['masked_lm_weights'] > 0,
                               batch['masked_lm_ids'], _IGNORE), axis=1)
    tensor = lambda x: torch.from_numpy(np.asarray(x, np.int64))
    self._inputs = dict(
        input_ids=tensor(batch['input_ids']),
        attention_mask=tensor(batch['input_mask']),
        token_type_ids=tensor(batch['segment_ids']),
        labels=tensor(labels),
        sentence_order_label=tensor(batch['sentence_order_label']))

  @property
  def attention_implementation(self) -> str:
    return self.model.config._attn_implementation  # pylint: disable=protected-access

  def step(self) -> float:
    """One optimizer update; returns the loss."""
    loss = self.model(**self._inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self._clip_norm)
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    return loss.item()

  def run(self, num_steps: int) -> float:
    """Seconds for `num_steps` steps."""
    start = time.perf_counter()
    for _ in range(num_steps):
      loss = self.step()
    elapsed = time.perf_counter() - start
    if not np.isfinite(loss):
      raise FloatingPointError(f'the Hugging Face peer gave loss {loss}')
    return elapsed
