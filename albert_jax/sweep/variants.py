"""Sweep definitions: what a file under experiments/ablations/ returns.

A sweep file defines `get_sweep(scale: str) -> Sweep`, its variants being
config overrides of preset `scale` of experiments/configs/pretrain.py.
`load_sweep('FILE:SCALE')` imports the file by path, as config files are.
"""

import dataclasses
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

from albert_jax.errors import SweepError

# The scales a sweep file answers, presets of experiments/configs/pretrain.py:
# tiny and mini for this CPU (H = 64, a few minutes a run; H = 256, <= 15
# minutes a run), and the paper's ALBERT-base for accelerators.
SCALES = ('tiny', 'mini', 'base')
# What a comparison measures, (examples, measure): on the held-out examples
# of albert_jax.evaluate, MLM accuracy on the SOP examples (every run,
# whatever its objective), or the sentence head's accuracy on the SOP or the
# NSP examples; or the dev accuracy of the run fine-tuned on the sweep's
# downstream task (albert_jax.sweep.downstream; compared only when the sweep
# has one).
METRICS = {
  'mlm': ('sop', 'mlm'),
  'sop': ('sop', 'sentence'),
  'nsp': ('nsp', 'sentence'),
  'downstream': ('dev', 'downstream'),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the paper's table."""

  name: str  # Its sub-workdir, e.g. 'E128-none'.
  group: str  # The table's row group, e.g. 'ALBERT base E=128'.
  label: str  # The row label within the group, e.g. 'not-shared'.
  overrides: Mapping[str, Any]  # e.g. {'model.sharing': 'none'}.


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A finding of the paper as a paired difference between two variants:
  `ahead` minus `behind` on `metric` (a key of METRICS), which the paper
  finds positive, or with a `margin` above -margin (`ahead` no worse than
  `behind` by more than margin, in accuracy)."""

  ahead: str  # Variant names.
  behind: str
  metric: str
  paper: str  # What the paper reports, e.g. 'Table 4: not-shared ahead'.
  margin: float = 0.0


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str  # e.g. 'sharing'.
  title: str  # The paper's table it follows.
  preset: str  # Of experiments/configs/pretrain.py: the scale.
  variants: tuple[Variant, ...]
  comparisons: tuple[Comparison, ...] = ()


def downstream_twins(comparisons: Sequence[Comparison]) -> tuple[Comparison, ...]:
  """Each MLM comparison of `comparisons` again on downstream accuracy: the
  paper's Tables 3 and 4 report downstream accuracy, for which held-out MLM
  accuracy stands in when a sweep has no downstream task."""
  return tuple(
    dataclasses.replace(c, metric='downstream') for c in comparisons if c.metric == 'mlm'
  )


def check_scale(scale: str) -> None:
  """SweepError unless `scale` is one of SCALES."""
  if scale not in SCALES:
    raise SweepError(f'unknown scale {scale!r}: choose one of {", ".join(SCALES)}')


def load_sweep(spec: str) -> Sweep:
  """The sweep of 'FILE:SCALE' (e.g. 'experiments/ablations/sharing.py:tiny')."""
  path, _, scale = spec.partition(':')
  if not path.endswith('.py') or not os.path.isfile(path):
    raise SweepError(
      f'--sweep={spec}: no sweep file {path!r}; pass FILE:SCALE, '
      'e.g. experiments/ablations/sharing.py:tiny'
    )
  module_spec = importlib.util.spec_from_file_location('_sweep_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'{path} defines no get_sweep(scale): it is not a sweep file')
  try:
    sweep = module.get_sweep(scale or 'tiny')
  except SweepError as e:  # The sweep file's own refusal (e.g. check_scale).
    raise SweepError(f'--sweep={spec}: {e}') from None
  names = [v.name for v in sweep.variants]
  if len(set(names)) != len(names):
    raise SweepError(f'{path}: variant names repeat: {", ".join(names)}')
  for comparison in sweep.comparisons:
    unknown = {comparison.ahead, comparison.behind} - set(names)
    if unknown or comparison.metric not in METRICS:
      raise SweepError(
        f'{path}: comparison {comparison.ahead} vs {comparison.behind} on '
        f'{comparison.metric!r} names no variant or metric of the sweep'
      )
  return sweep
