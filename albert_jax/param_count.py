"""Parameter counts of ALBERT, read from the real param tree.

The tree comes from `jax.eval_shape` of `AlbertForPreTraining.init`: shapes
only, nothing allocated or compiled, so even xxlarge is cheap to count.
"""

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.config import ModelConfig
from albert_jax.model import AlbertForPreTraining

# Groups reported, in table order; 'backbone' and 'total' are sums.
GROUPS = ('embeddings', 'projection', 'encoder', 'pooler', 'heads')
BACKBONE = ('embeddings', 'projection', 'encoder', 'pooler')


def param_shapes(config: ModelConfig) -> Mapping[str, object]:
  """The unboxed params tree of AlbertForPreTraining as ShapeDtypeStructs."""
  ids = jnp.zeros((1, 1), jnp.int32)
  variables = jax.eval_shape(
    lambda: AlbertForPreTraining(config).init(jax.random.key(0), ids, ids, ids, ids)
  )
  return nn.unbox(variables['params'])


def _group(path: tuple[str, ...]) -> str:
  """Which reported group the param at `path` belongs to."""
  if path[0] != 'albert':
    return 'heads'  # predictions (MLM head), sop_classifier.
  if path[1] == 'encoder' and path[2] == 'embedding_hidden_mapping_in':
    return 'projection'
  return path[1]


def count_params(config: ModelConfig) -> dict[str, int]:
  """Param counts by group: embeddings (word + position + type + LayerNorm),
  projection (E -> H, 0 when E == H), encoder, pooler, heads (MLM + sentence),
  backbone (all but the heads) and total."""
  counts = dict.fromkeys(GROUPS, 0)
  leaves = jax.tree_util.tree_flatten_with_path(param_shapes(config))[0]
  for path, leaf in leaves:
    keys = tuple(entry.key for entry in path)
    counts[_group(keys)] += math.prod(leaf.shape)
  counts['backbone'] = sum(counts[group] for group in BACKBONE)
  counts['total'] = counts['backbone'] + counts['heads']
  return counts
