"""The runs of a sweep and their commands, saved as DIR/sweep.json.

A run is a variant at one seed. Its command is `launch.pretrain` on the
sweep's preset of the pretraining config file (the caller names it) with the
base overrides of the command line and the run's own, working in DIR/RUN; the
runner runs it, `--emit` writes it, and `--report=DIR` reads sweep.json to
know the runs and their table rows.

With a downstream task (`Downstream`), each run is then fine-tuned by
`launch.finetune --task=classification` in DIR/RUN/downstream
(`Plan.finetune_arguments`); albert_jax/sweep/downstream.py scores it.
"""

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from albert_jax.cluster import pretrain_command
from albert_jax.errors import SweepError
from albert_jax.sweep.variants import Comparison, Sweep

PLAN_FILE = 'sweep.json'
DOWNSTREAM_SUBDIR = 'downstream'  # Of a run's workdir: its fine-tuning run.
# The fine-tuning preset of experiments/configs/finetune.py the runs take.
FINETUNE_TASK = 'classification'
# Set by `Downstream` itself, per run: refused as its overrides.
_DOWNSTREAM_KEYS = ('data.train', 'data.eval')


@dataclasses.dataclass(frozen=True)
class Downstream:
  """The classification task every run is fine-tuned on (launch.sweep
  --downstream), its dev accuracy reported beside the pretraining measures."""

  train: str  # PATH.tsv | PATH.csv | tfds:NAME..., as launch.finetune reads it.
  dev: str  # The dev set, scored example by example.
  # Fine-tuning config overrides, 'KEY=VALUE' (e.g. 'train.num_epochs=1').
  overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # Sub-workdir: the variant's name, '-seedS' appended with seeds.
  variant: str
  group: str
  label: str
  seed: int | None  # None: the config's seeds.
  overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Plan:
  spec: str  # --sweep, e.g. 'experiments/ablations/sharing.py:tiny'.
  name: str
  title: str
  config: str  # 'experiments/configs/pretrain.py:PRESET'.
  base_overrides: tuple[str, ...]  # '--config.train.num_steps=20', ...
  runs: tuple[Run, ...]
  comparisons: tuple[Comparison, ...] = ()  # The sweep's, for the report.
  # The variants some --only chose to run or emit so far; (): all of them.
  # The report marks the others as left out, not as unfinished.
  selected: tuple[str, ...] = ()
  downstream: Downstream | None = None  # None: pretraining measures only.

  def only(self, variants: Sequence[str]) -> 'Plan':
    """The plan of the runs of `variants` (all when empty), e.g. to run or
    emit part of a sweep; unknown names are refused."""
    known = list(dict.fromkeys(run.variant for run in self.runs))
    unknown = [v for v in variants if v not in known]
    if unknown:
      raise SweepError(
        f'--only: no variant {unknown[0]!r} in the {self.name} sweep: '
        f'choose from {", ".join(known)}'
      )
    if not variants:
      return self
    return dataclasses.replace(self, runs=tuple(r for r in self.runs if r.variant in variants))

  def command(self, run: Run, root: str, *, distributed: bool = False) -> list[str]:
    """`python -m launch.pretrain ...` of `run`, working in `root`/RUN: what
    `--emit` writes, to run from the repository root."""
    return pretrain_command(
      self.config, os.path.join(root, run.name), self._overrides(run), distributed=distributed
    )

  def arguments(self, run: Run, root: str) -> list[str]:
    """The flags of `run`'s single-process `launch.pretrain`, as in
    `command`."""
    return [
      f'--config={self.config}',
      f'--workdir={os.path.join(root, run.name)}',
      *self._overrides(run),
    ]

  def finetune_arguments(self, run: Run, root: str) -> list[str]:
    """The flags of `launch.finetune` fine-tuning `run` (its pretraining
    workdir `root`/RUN as the model) on the downstream task in
    `root`/RUN/downstream; with a seed, the run's seed orders and drops out
    the fine-tuning too, so that a seed's variants are fine-tuned alike."""
    if self.downstream is None:
      raise SweepError(f'the {self.name} sweep has no downstream task: pass --downstream')
    workdir = os.path.join(root, run.name)
    seeds = [] if run.seed is None else [f'train.seed={run.seed}', f'data.seed={run.seed}']
    settings = [
      f'data.train={self.downstream.train}',
      f'data.eval={self.downstream.dev}',
      *seeds,
      *self.downstream.overrides,
    ]
    return [
      f'--model={workdir}',
      f'--task={FINETUNE_TASK}',
      f'--workdir={os.path.join(workdir, DOWNSTREAM_SUBDIR)}',
      *(f'--config.{setting}' for setting in settings),
    ]

  def _overrides(self, run: Run) -> list[str]:
    own = [f'--config.{key}={value}' for key, value in run.overrides.items()]
    return [*self.base_overrides, *own]

  def save(self, root: str, *, only: Sequence[str] = ()) -> 'Plan':
    """Writes `root`/sweep.json, adding the variants of `only` (the --only
    of this invocation; empty: all) to those selected before, and returns
    the plan saved (what the report reads); refuses a directory of another
    sweep."""
    existing = load_plan(root) if os.path.isfile(os.path.join(root, PLAN_FILE)) else None
    if existing is not None and existing.name != self.name:
      raise SweepError(f'{root} holds the {existing.name!r} sweep: choose another --workdir')
    downstream = self.downstream or (existing.downstream if existing else None)
    if existing and existing.downstream and downstream != existing.downstream:
      raise SweepError(
        f'{root} was fine-tuned on --downstream={existing.downstream.train},'
        f'{existing.downstream.dev} (settings {" ".join(existing.downstream.overrides) or "none"}):'
        ' pass the same or choose another --workdir'
      )
    selected = ()
    if only and (existing is None or existing.selected):
      chosen = {*only, *(existing.selected if existing else ())}
      selected = tuple(v for v in dict.fromkeys(r.variant for r in self.runs) if v in chosen)
    saved = dataclasses.replace(self, selected=selected, downstream=downstream)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, PLAN_FILE), 'w') as f:
      json.dump(dataclasses.asdict(saved), f, indent=2)
    return saved


def make_plan(
  sweep: Sweep,
  spec: str,
  base_overrides: Sequence[str],
  seeds: Sequence[int],
  *,
  config_file: str,
  downstream: Downstream | None = None,
) -> Plan:
  """The runs of `sweep`: each variant once, or once per seed (setting
  train.seed and data.seed: init, data order and masks), each fine-tuned
  on `downstream` when given.

  `config_file` is the pretraining config file holding the sweep's preset,
  as `launch.pretrain --config` takes it (e.g. relative to where the runs
  start).
  """
  runs = []
  # Seed-major: a sweep stopped early holds whole seeds.
  for seed in seeds or [None]:
    for variant in sweep.variants:
      overrides = dict(variant.overrides)
      if seed is not None:
        overrides.update({'train.seed': seed, 'data.seed': seed})
      runs.append(
        Run(
          name=variant.name + ('' if seed is None else f'-seed{seed}'),
          variant=variant.name,
          group=variant.group,
          label=variant.label,
          seed=seed,
          overrides=overrides,
        )
      )
  given = {arg.split('=')[0].removeprefix('--config.') for arg in base_overrides}
  if seeds and given & {'train.seed', 'data.seed'}:
    raise SweepError(
      '--seeds sets train.seed and data.seed per run: drop --config.train.seed / --config.data.seed'
    )
  for variant in sweep.variants:
    clash = sorted(given & set(variant.overrides))
    if clash:
      raise SweepError(f'--config.{clash[0]} is set per variant by the {sweep.name} sweep: drop it')
  if downstream is not None:
    _check_downstream(downstream, bool(seeds))
  return Plan(
    spec=spec,
    name=sweep.name,
    title=sweep.title,
    config=f'{config_file}:{sweep.preset}',
    base_overrides=tuple(base_overrides),
    runs=tuple(runs),
    comparisons=sweep.comparisons,
    downstream=downstream,
  )


def _check_downstream(downstream: Downstream, seeded: bool) -> None:
  """SweepError for a fine-tuning override that is not KEY=VALUE or that
  the sweep sets per run (the data, and with --seeds the seeds)."""
  own = _DOWNSTREAM_KEYS + (('train.seed', 'data.seed') if seeded else ())
  for setting in downstream.overrides:
    key, equals, _ = setting.partition('=')
    if not equals or not key:
      raise SweepError(f'--downstream_config={setting}: give KEY=VALUE, e.g. train.num_epochs=1')
    if key in own:
      raise SweepError(
        f'--downstream_config={setting}: the sweep sets {key} per run'
        + (' (--downstream)' if key in _DOWNSTREAM_KEYS else ' (--seeds)')
        + ': drop it'
      )


def load_plan(root: str) -> Plan:
  """The plan saved in `root`/sweep.json."""
  path = os.path.join(root, PLAN_FILE)
  if not os.path.isfile(path):
    raise SweepError(
      f'{root} holds no sweep ({PLAN_FILE} not found): pass the --workdir of a launch.sweep run'
    )
  try:
    with open(path) as f:
      saved = json.load(f)
    runs = tuple(Run(**run) for run in saved.pop('runs'))
    # Absent from the plans of sweeps before the report compared variants.
    comparisons = tuple(Comparison(**c) for c in saved.pop('comparisons', ()))
    selected = tuple(saved.pop('selected', ()))  # Absent before --only was noted.
    downstream = saved.pop('downstream', None)  # Absent before downstream tasks.
    if downstream is not None:
      downstream = Downstream(**{**downstream, 'overrides': tuple(downstream['overrides'])})
    return Plan(
      **{**saved, 'base_overrides': tuple(saved['base_overrides'])},
      runs=runs,
      comparisons=comparisons,
      selected=selected,
      downstream=downstream,
    )
  except (ValueError, TypeError, KeyError) as e:
    raise SweepError(
      f'{path} is not a sweep plan ({e}): rerun the sweep with --workdir=' + root
    ) from None
