"""Paired differences between two variants of a sweep, with a bootstrap
confidence interval over seeds and held-out examples.

Two runs of one seed share the data order and the held-out examples (masks,
swaps and pairs are drawn from data.seed), so each example is measured once by
each variant. A seed's difference is that of the two accuracies over its
examples, sum(correct_a - correct_b) / sum(weight) (weight: masked tokens of
an example for MLM, 1 for a sentence head); the estimate is the mean over
seeds. The interval is the percentile interval of a two-stage bootstrap:
seeds drawn with replacement, then each drawn seed's examples drawn with
replacement, so that both the training noise between seeds and the sampling
of the held-out examples widen it. (scipy.stats.bootstrap resamples a single
level: over seeds alone it ignores how few examples each accuracy rests on,
over pooled examples it ignores the seeds.) The generator is seeded: a report
rebuilt from the same runs prints the same interval.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

REPLICATES = 4000
CONFIDENCE = 0.95
MIN_SEEDS = 3  # Fewer: no verdict, whatever the interval.
# Random indices drawn at once, at most: bounds the memory of a resample.
_CHUNK = 4_000_000


@dataclasses.dataclass(frozen=True)
class Paired:
  difference: float  # Mean over seeds of accuracy(a) - accuracy(b).
  low: float  # The confidence interval of `difference`.
  high: float
  seeds: int
  examples: int  # Held-out examples per seed (the fewest, if they differ).


def paired_difference(
  correct_a: Sequence[np.ndarray],
  correct_b: Sequence[np.ndarray],
  weight: Sequence[np.ndarray],
  *,
  replicates: int = REPLICATES,
  confidence: float = CONFIDENCE,
  seed: int = 0,
) -> Paired:
  """The difference of accuracy between variants a and b, with its interval.

  Args:
    correct_a, correct_b: per seed, each held-out example's hits ([examples];
      for MLM the correct masked tokens of the example, else 0 or 1).
    weight: per seed, what each example's hits are out of (the same for a
      and b: the examples are the same).
    replicates: bootstrap resamples.
    confidence: of the interval.
    seed: of the bootstrap's generator.
  """
  if not correct_a or len(correct_a) != len(correct_b) or len(correct_a) != len(weight):
    raise ValueError('give the outcomes of a and b and the weights for the same seeds')
  diffs, weights = [], []
  for a, b, w in zip(correct_a, correct_b, weight):
    a, b, w = (np.asarray(x, np.float64) for x in (a, b, w))
    if not (a.shape == b.shape == w.shape) or a.ndim != 1 or not a.size:
      raise ValueError('each seed needs one outcome per held-out example, alike for a and b')
    diffs.append(a - b)
    weights.append(w)
  estimate = np.mean([d.sum() / max(w.sum(), 1.0) for d, w in zip(diffs, weights)])
  rng = np.random.default_rng(seed)
  num_seeds = len(diffs)
  totals = np.zeros(replicates)
  # Slot k of every replicate: a seed drawn with replacement, then a resample
  # of that seed's examples.
  for _ in range(num_seeds):
    drawn = rng.integers(0, num_seeds, replicates)
    for s, (d, w) in enumerate(zip(diffs, weights)):
      rows = np.flatnonzero(drawn == s)
      step = max(1, _CHUNK // d.size)
      for start in range(0, rows.size, step):
        chunk = rows[start : start + step]
        picks = rng.integers(0, d.size, (chunk.size, d.size))
        totals[chunk] += d[picks].sum(1) / np.maximum(w[picks].sum(1), 1.0)
  tail = (1 - confidence) / 2
  low, high = np.quantile(totals / num_seeds, [tail, 1 - tail])
  return Paired(
    difference=float(estimate),
    low=float(low),
    high=float(high),
    seeds=num_seeds,
    examples=min(d.size for d in diffs),
  )


def verdict(paired: Paired, margin: float = 0.0) -> str:
  """Whether the paper's finding shows: a ahead of b (a difference above 0),
  or with a `margin`, a no worse than b by more than it (a difference above
  -margin). 'reproduced' when the whole interval is above that bound, 'not
  reproduced' when it is below, 'inconclusive' when it spans it or seeds are
  too few."""
  if paired.seeds < MIN_SEEDS:
    return f'inconclusive ({paired.seeds} seed{"s" * (paired.seeds > 1)}; {MIN_SEEDS} needed)'
  if paired.low > -margin:
    return 'reproduced'
  if not margin:
    return (
      'not reproduced (the opposite direction)' if paired.high < 0 else 'inconclusive (CI spans 0)'
    )
  points = f'{100 * margin:g} point' + 's' * (round(100 * margin, 9) != 1)
  if paired.high < -margin:
    return f'not reproduced (more than {points} behind)'
  return f'inconclusive (CI spans −{points})'
