"""Fill-mask inference: top-k fills of each [MASK] of a text.

  pretrained = albert_jax.model_path.load('OUT').pretrained
  fill = FillMask(pretrained)
  fill('the cat sat on the [MASK] .', top_k=5)
  # -> [[('mat', 0.91), ('floor', 0.03), ...]]   one list per [MASK]

The mask token in the text (the tokenizer's `mask_token`, "[MASK]" for
ALBERT's and BERT's vocabularies) is the vocabulary's mask id, never text:
the text is split on it, each piece encoded on its own and the pieces joined
with the mask id (the normalisation would otherwise lowercase it into
ordinary pieces). The input is [CLS] text [SEP], one segment, as Hugging
Face's fill-mask pipeline builds it; every mask is predicted in the same
forward pass. A model whose MLM head was initialised on loading (an
AlbertModel or a fine-tuned classifier) is refused: it would fill at random.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.data.tokenizer import Tokenizer
from albert_jax.errors import DataError, ExportError
from albert_jax.model import AlbertForPreTraining
from albert_jax.pretrained import Pretrained


def encode_with_masks(tokenizer: Tokenizer, text: str) -> list[int]:
  """Token ids of `text`, each mask token becoming the mask id."""
  ids = []
  for i, piece in enumerate(text.split(tokenizer.mask_token)):
    if i:
      ids.append(tokenizer.mask_id)
    ids.extend(tokenizer.encode(piece))
  return ids


class FillMask:
  """Predicts the tokens hidden behind [MASK] with an AlbertForPreTraining."""

  def __init__(self, pretrained: Pretrained, *, source: str = 'the model'):
    """Raises ExportError when `pretrained` has no trained MLM head
    (`source` names it)."""
    if any(p == 'predictions' or p.startswith('predictions/') for p in pretrained.initialised):
      raise ExportError(
        f'{source} has no masked-LM head (it was initialised on loading): fill-mask needs a '
        'model trained with one (AlbertForMaskedLM, AlbertForPreTraining, a pretraining run)'
      )
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
    tokenizer, mask = self.tokenizer, self.tokenizer.mask_token
    ids = [tokenizer.cls_id, *encode_with_masks(tokenizer, text), tokenizer.sep_id]
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
    if not positions:
      raise DataError(f'the text has no {mask}: write {mask} where a word should be predicted')
    if len(ids) > self.config.max_position_embeddings:
      raise DataError(
        f'the text is {len(ids)} tokens long with [CLS] and [SEP], the model '
        f'takes at most {self.config.max_position_embeddings}: shorten it'
      )
    top_k = max(1, min(top_k, self.config.vocab_size))
    # Padded to a power of two: texts of similar length share a compilation.
    length = min(1 << (len(ids) - 1).bit_length(), self.config.max_position_embeddings)
    input_ids = np.full((1, length), tokenizer.pad_id, np.int32)
    input_ids[0, : len(ids)] = ids
    scores, token_ids = jax.device_get(
      self._top_k(
        self._params,
        input_ids,
        (np.arange(length) < len(ids)).astype(np.int32)[None],
        np.asarray([positions], np.int32),
        top_k,
      )
    )
    return [
      [(self.tokenizer.decode([t]), float(s)) for s, t in zip(mask_scores, mask_ids)]
      for mask_scores, mask_ids in zip(scores, token_ids)
    ]
