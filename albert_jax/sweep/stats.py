"""Paired differences between two variants of a sweep: a Student-t interval
over the seeds' paired differences, a verdict on the paper's direction, and
Holm's correction over the comparisons of a table.

Two runs of one seed share the data order and the held-out examples (masks,
swaps and pairs are drawn from data.seed; albert_jax.sweep.report checks
their example ids), so each example is measured once by each variant. A
seed's difference is that of the two accuracies over its examples,
d_s = sum(correct_a - correct_b) / sum(weight) (weight: masked tokens of an
example for MLM, 1 for a sentence head): the examples are averaged within
the seed. The estimate is the mean of the d_s over the n seeds and the
interval mean ± t(n - 1) · sd(d_s) / sqrt(n), Student's t with n - 1 degrees
of freedom.

Why this interval. d_s = true difference + the seed's training noise + the
sampling noise of its held-out examples, and both noises are independent
across seeds (each seed trains anew and draws its own masks and pairs), so
the d_s are independent draws with one variance holding both; their sample
variance estimates it whatever the split between the two, and the mean of
a seed's ~1,000 examples is close to normal. The t interval is then exact
for normal d_s, at any n >= 2, and robust to symmetric departures from it;
tests/test_sweep.py simulates sweeps at the committed tables' noise levels
(seed sd 0.2-1.0 point, example sd 0.07-0.14 point): 94.6-95.4 % coverage
at 3 and 5 seeds, a false verdict in 2.3-2.7 % of sweeps (the figures, and
skewed seed noise, where it undercovers: docs/sweeps.md). What it estimates
is the difference on the held-out documents of the sweep (every seed
evaluates the same documents), not on other corpora.

The two-stage bootstrap it replaces (seeds drawn with replacement, then each
seed's examples) undercovers at few seeds: a resample of 3 seeds lands all on
the lowest (or highest) with probability 1/27 = 3.7 % > 2.5 %, so its 95 %
interval is about [lowest seed, highest seed], which holds the true mean of
3 normal seeds with probability 1 - 2 · (1/2)^3 = 75 %; it also divides the
seed variance by n, not n - 1, and takes normal quantiles where 3 seeds call
for t(2)'s 4.30 instead of 1.96. Simulated at a true difference of 0 it
excluded 0 in 18-26 % of sweeps; where example noise dominates it is instead
conservative (the example noise, already inside each seed's spread, counted
a second time). Without randomness, a report rebuilt from the same outcomes
prints the same interval.

A verdict tests `difference = -margin` (0 for "a ahead of b"); its two-sided
p-value is below 1 - CONFIDENCE exactly when the interval excludes -margin.
A table's comparisons are corrected together with Holm's step-down method
(`holm`): the family-wise chance of any false verdict stays below 5 %.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MIN_SEEDS = 3  # Fewer: no verdict, whatever the interval.


@dataclasses.dataclass(frozen=True)
class Paired:
  difference: float  # Mean over seeds of accuracy(a) - accuracy(b).
  low: float  # The confidence interval of `difference` (nan with one seed).
  high: float
  seeds: int
  examples: int  # Held-out examples per seed (the fewest, if they differ).
  standard_error: float  # sd(d_s) / sqrt(seeds); nan with one seed.


def seed_difference(correct_a: np.ndarray, correct_b: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """The seeds' differences of accuracy, examples averaged within a seed.

  Args:
    correct_a, correct_b: each held-out example's hits [..., examples] (for
      MLM the correct masked tokens of the example, else 0 or 1).
    weight: what each example's hits are out of [..., examples] (the same
      for a and b: the examples are the same).
  Returns: [...] sum(correct_a - correct_b) / sum(weight) over the examples.
  """
  a, b, w = (np.asarray(x, np.float64) for x in (correct_a, correct_b, weight))
  if not (a.shape == b.shape == w.shape) or a.ndim < 1 or not a.shape[-1]:
    raise ValueError('each seed needs one outcome per held-out example, alike for a and b')
  return (a - b).sum(-1) / np.maximum(w.sum(-1), 1.0)


def t_interval(
  differences: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean, low and high of the Student-t interval over the last axis.

  Args:
    differences: the seeds' paired differences [..., seeds], seeds >= 2.
    confidence: of the interval.
  Returns: three arrays [...].
  """
  d = np.asarray(differences, np.float64)
  n = d.shape[-1]
  if n < 2:
    raise ValueError('a t interval needs at least 2 seeds')
  mean = d.mean(-1)
  half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * d.std(-1, ddof=1) / np.sqrt(n)
  return mean, mean - half, mean + half


def paired(differences: Sequence[float], examples: int, confidence: float = CONFIDENCE) -> Paired:
  """The paired difference of the seeds' `differences` (`seed_difference`
  of each seed), with its interval; `examples` per seed, for the table."""
  d = np.asarray(differences, np.float64)
  if d.ndim != 1 or not d.size:
    raise ValueError('give one difference per seed')
  if d.size == 1:
    nan = float('nan')
    return Paired(float(d[0]), nan, nan, 1, examples, nan)
  mean, low, high = t_interval(d, confidence)
  return Paired(
    difference=float(mean),
    low=float(low),
    high=float(high),
    seeds=int(d.size),
    examples=examples,
    standard_error=float(d.std(ddof=1) / np.sqrt(d.size)),
  )


def paired_difference(
  correct_a: Sequence[np.ndarray],
  correct_b: Sequence[np.ndarray],
  weight: Sequence[np.ndarray],
  *,
  confidence: float = CONFIDENCE,
) -> Paired:
  """The difference of accuracy between variants a and b, with its interval,
  from each seed's per-example outcomes (lists over seeds of [examples]
  arrays; see `seed_difference`)."""
  if not correct_a or len(correct_a) != len(correct_b) or len(correct_a) != len(weight):
    raise ValueError('give the outcomes of a and b and the weights for the same seeds')
  differences = [seed_difference(a, b, w) for a, b, w in zip(correct_a, correct_b, weight)]
  return paired(differences, min(len(w) for w in weight), confidence)


def p_value(result: Paired, margin: float = 0.0) -> float:
  """Two-sided p-value of `difference = -margin` (Student's t, seeds - 1
  degrees of freedom); nan with one seed."""
  if result.seeds < 2:
    return float('nan')
  distance = result.difference + margin
  if result.standard_error == 0:
    return 0.0 if distance else 1.0
  return float(2 * scipy_stats.t.sf(abs(distance) / result.standard_error, result.seeds - 1))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values of a family, in its order: the
  k-th smallest times (m - k + 1), never below the one before, at most 1."""
  order = np.argsort(p_values, kind='stable')
  m = len(order)
  adjusted, running = [0.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * float(p_values[i])))
    adjusted[i] = running
  return adjusted


def verdict(result: Paired, margin: float = 0.0, adjusted_p: float | None = None) -> str:
  """Whether the paper's finding shows: a ahead of b (a difference above 0),
  or with a `margin`, a no worse than b by more than it (a difference above
  -margin). 'reproduced' when the test of `difference = -margin` rejects it
  with the difference above (the interval wholly above -margin), 'not
  reproduced' when below, 'inconclusive' when it does not reject or seeds
  are too few. With `adjusted_p` (Holm's, over the table), the test is that
  p-value's instead of the interval's."""
  if result.seeds < MIN_SEEDS:
    return f'inconclusive ({result.seeds} seed{"s" * (result.seeds > 1)}; {MIN_SEEDS} needed)'
  alpha = 1 - CONFIDENCE
  excluded = result.low > -margin or result.high < -margin
  if adjusted_p is not None and excluded and adjusted_p >= alpha:
    return f'inconclusive (Holm-adjusted p = {adjusted_p:.2g})'
  if result.low > -margin:
    return 'reproduced'
  points = f'{100 * margin:g} point' + 's' * (round(100 * margin, 9) != 1)
  if result.high < -margin:
    return (
      'not reproduced ('
      + (f'more than {points} behind' if margin else 'the opposite direction')
      + ')'
    )
  return f'inconclusive (CI spans {f"−{points}" if margin else "0"})'
