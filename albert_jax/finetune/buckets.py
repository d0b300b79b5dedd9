"""Batches at their real lengths: each padded only to the smallest bucket length
that holds its longest row, so that a run compiles a few shapes, not one per batch.

Features are encoded at data.max_seq_length ([N, max_seq_length], padding last);
a batch keeps the first `length` positions of its sequence features, where
`length` is the smallest multiple of data.bucket_multiple (at most max_seq_length)
not shorter than its longest row. The model sees the same tokens at the same
positions and masks the padding out (model.py: key lengths from input_mask), so
its outputs at the real positions are those of the fixed-length batch.

  bucket_length     the padded length of a batch
  trim              a batch cut to its bucket length
  grouped_batches   one epoch's batches of row indices: shuffled, and with
                    length grouping, of rows of similar lengths
"""

from collections.abc import Collection, Mapping

import numpy as np

# Features with a sequence axis (axis 1) that trimming cuts: the model inputs.
SEQUENCE_FEATURES = ('input_ids', 'input_mask', 'segment_ids')


def bucket_length(longest: int, multiple: int, max_seq_length: int) -> int:
  """The padded length of a batch whose longest row has `longest` tokens:
  the next multiple of `multiple`, at most `max_seq_length` (0: always it)."""
  if multiple <= 0:
    return max_seq_length
  return min(max_seq_length, max(multiple, -(-longest // multiple) * multiple))


def lengths(features: Mapping[str, np.ndarray]) -> np.ndarray:
  """Tokens of each row [N] (input_mask's ones, which come first)."""
  return np.asarray(features['input_mask']).sum(axis=1)


def trim(
  batch: Mapping[str, np.ndarray],
  multiple: int,
  keys: Collection[str] = SEQUENCE_FEATURES,
  longest: int | None = None,
) -> dict[str, np.ndarray]:
  """`batch` with `keys` [B, S] cut to [B, bucket_length] (see module
  docstring); other features (labels, positions) are kept whole. `longest`:
  the longest row of the global batch when `batch` is one process's share."""
  max_seq_length = batch['input_mask'].shape[1]
  if longest is None:
    longest = int(lengths(batch).max(initial=1))
  length = bucket_length(longest, multiple, max_seq_length)
  return {k: v[:, :length] if k in keys else v for k, v in batch.items()}


def grouped_batches(
  row_lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int, group_batches: int
) -> np.ndarray:
  """The row indices of epoch `epoch`'s batches [N // batch_size, batch_size].

  The rows are shuffled (a permutation drawn from (seed, epoch)); the N %
  batch_size left over are not used this epoch. With `group_batches` > 1,
  the shuffled rows are cut into groups of that many batches, sorted by length
  within each group (stable) and cut into batches, and then the batches of the
  whole epoch are shuffled: a batch holds rows of similar lengths (little
  padding), the order of batches stays random, and which rows share a group
  changes every epoch. `group_batches` 1: batches of randomly drawn rows.
  """
  rng = np.random.default_rng([seed, epoch])
  num_batches = len(row_lengths) // batch_size
  rows = rng.permutation(len(row_lengths))[: num_batches * batch_size]
  if group_batches <= 1:
    return rows.reshape(num_batches, batch_size)
  group = group_batches * batch_size
  for start in range(0, len(rows), group):
    part = rows[start : start + group]
    rows[start : start + group] = part[np.argsort(row_lengths[part], kind='stable')]
  return rows.reshape(num_batches, batch_size)[rng.permutation(num_batches)]
