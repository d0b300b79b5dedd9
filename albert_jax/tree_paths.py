"""Names of arrays in a pytree, as '/'-joined paths: 'params/albert/encoder/layer/ffn/dense/kernel'.

Weight-decay rules are matched against these names, and error messages use them.
"""

from collections.abc import Sequence
from typing import Any

import jax


def path_str(path: Sequence[Any]) -> str:
  """'albert/pooler/kernel' for a key path from jax.tree_util.*_with_path."""

  def name(key):
    if isinstance(key, jax.tree_util.DictKey):
      return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
      return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
      return str(key.idx)
    return str(key)

  return '/'.join(name(k) for k in path)


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the leaves of a tree of arrays (or of array metadata)."""
  return {
    path_str(path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }
