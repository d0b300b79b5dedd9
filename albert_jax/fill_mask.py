"""Fill-mask inference with an exported model: top-k fills of each [MASK].

  pretrained = albert_jax.pretrained.load_pretrained('OUT')
  fill = FillMask(pretrained)
  fill('the cat sat on the [MASK] .', top_k=5)
  # -> [[('mat', 0.91), ('floor', 0.03), ...]]   one list per [MASK]

"[MASK]" in the text is the control id 4, never text: the text is split on
it, each piece encoded on its own and the pieces joined with id 4 (the
normalisation would otherwise lowercase it into ordinary pieces). The input
is [CLS] text [SEP], one segment, as Hugging Face's fill-mask pipeline
builds it; every mask is predicted in the same forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.data.tokenizer import CLS_ID, MASK_ID, SEP_ID, Tokenizer
from albert_jax.errors import DataError
from albert_jax.model import AlbertForPreTraining
from albert_jax.pretrained import Pretrained

MASK_TOKEN = '[MASK]'


def encode_with_masks(tokenizer: Tokenizer, text: str) -> list[int]:
  """Token ids of `text`, each "[MASK]" becoming MASK_ID."""
  ids = []
  for i, piece in enumerate(text.split(MASK_TOKEN)):
    if i:
      ids.append(MASK_ID)
    ids.extend(tokenizer.encode(piece))
  return ids


class FillMask:
  """Predicts the tokens hidden behind [MASK] with an AlbertForPreTraining."""

  def __init__(self, pretrained: Pretrained):
    self.tokenizer = pretrained.tokenizer
    self.config = pretrained.config
    self._params = jax.device_put(pretrained.params)
    self._model = AlbertForPreTraining(pretrained.config)

  @functools.partial(jax.jit, static_argnums=(0, 5))
  def _top_k(
    self, params, input_ids: jax.Array, input_mask: jax.Array, positions: jax.Array, top_k: int
  ) -> tuple[jax.Array, jax.Array]:
    """[1, S] ids and mask, [1, P] mask positions -> [P, k] probabilities
    and ids."""
    logits = self._model.apply(
      {'params': params}, input_ids, input_mask, jnp.zeros_like(input_ids), positions
    )['mlm_logits'][0]
    return jax.lax.top_k(jax.nn.softmax(logits, axis=-1), top_k)

  def __call__(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """(token, probability) pairs, best first, for each [MASK] of `text`.

    Raises DataError for text without [MASK] or longer than the model takes.
    """
    ids = [CLS_ID, *encode_with_masks(self.tokenizer, text), SEP_ID]
    positions = [i for i, t in enumerate(ids) if t == MASK_ID]
    if not positions:
      raise DataError(
        f'the text has no {MASK_TOKEN}: write {MASK_TOKEN} where a word should be predicted'
      )
    if len(ids) > self.config.max_position_embeddings:
      raise DataError(
        f'the text is {len(ids)} tokens long with [CLS] and [SEP], the model '
        f'takes at most {self.config.max_position_embeddings}: shorten it'
      )
    top_k = max(1, min(top_k, self.config.vocab_size))
    # Padded to a power of two: texts of similar length share a compilation.
    length = min(1 << (len(ids) - 1).bit_length(), self.config.max_position_embeddings)
    input_ids = np.zeros((1, length), np.int32)
    input_ids[0, : len(ids)] = ids
    scores, token_ids = jax.device_get(
      self._top_k(
        self._params,
        input_ids,
        (input_ids > 0).astype(np.int32),
        np.asarray([positions], np.int32),
        top_k,
      )
    )
    return [
      [(self.tokenizer.decode([t]), float(s)) for s, t in zip(mask_scores, mask_ids)]
      for mask_scores, mask_ids in zip(scores, token_ids)
    ]
