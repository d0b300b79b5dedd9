"""A sweep directory's report, from its plan and the runs' results:

  results.csv       one row per finished run
  results.md        the paper's table layout: row groups and rows per
                    variant, mean ± standard deviation over seeds; then each
                    finding of the paper the sweep tests (variants.Comparison)
                    as a paired difference with its 95 % confidence interval
                    (albert_jax.sweep.stats: Student-t over the seeds'
                    paired differences), Holm-adjusted p-value and verdict;
                    runs stuck at constant predictions are named and carry
                    no verdict; the sentence heads' chance (the eval set's
                    majority class) and whether the evaluation is large
                    enough to tell a head from it; with a downstream task
                    (Plan.downstream), a column of each run's dev accuracy
                    after fine-tuning, the runs not fine-tuned, the dev
                    set's chance, and the comparisons on it
  mlm_accuracy.png  held-out MLM accuracy against steps, per variant: the
                    mean over seeds, a band from the lowest to the highest
                    seed, a marker at every evaluation
  params.png        final held-out MLM accuracy against backbone parameters,
                    per variant: the mean over seeds, bars from lowest to
                    highest
  sentence_accuracy.png  held-out accuracy of the sentence head on the
                    objective each variant trains (NSP or SOP) against steps,
                    as mlm_accuracy.png, with chance (the eval set's
                    majority class) marked; written when a finished run
                    trains one

results.md is a function of sweep.json and each run's sweep_result.json and
sweep_outcomes.npz (and downstream_result.json and downstream_outcomes.npz)
alone: `launch.sweep --report=DIR` rebuilds it byte for byte from those
files (docs/sweeps.md: what to commit).

The MLM columns are measured on the SOP examples (both segments from one
document) for every run, so that runs of any sentence objective compare. The
table, the comparisons and the last point of every curve read one number per
run, `results.mlm_accuracy` (the earlier points of a curve are the trainer's
evaluations: see albert_jax.sweep.results).
"""

import csv
import dataclasses
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from albert_jax.errors import SweepError
from albert_jax.sweep import downstream, results, stats, variants
from albert_jax.sweep.plan import FINETUNE_TASK, Plan, Run

COLUMNS = (
  'run',
  'variant',
  'group',
  'label',
  'seed',
  'objective',
  'steps',
  'params',
  'mlm_loss',
  'mlm_accuracy',
  'nsp_accuracy',
  'sop_accuracy',
  'eval_examples',
  'step_time',
  'tokens_per_sec',
  'downstream_accuracy',  # Empty: not fine-tuned (or no downstream task).
  'downstream_examples',
)
# Markdown columns: (header, row key, format of the mean).
_TABLE = (
  ('Params', 'params', None),
  ('MLM loss', 'mlm_loss', '{:.3f}'),
  ('MLM acc. %', 'mlm_accuracy', 'percent'),
  ('NSP acc. %', 'nsp_accuracy', 'percent'),
  ('SOP acc. %', 'sop_accuracy', 'percent'),
  ('s/step', 'step_time', '{:.3f}'),
  ('tokens/s', 'tokens_per_sec', '{:,.0f}'),
)
# With a downstream task, after the SOP column.
_DOWNSTREAM_COLUMN = ('Downstream acc. %', 'downstream_accuracy', 'percent')


def _columns(plan: Plan) -> tuple[tuple[str, str, str | None], ...]:
  """The markdown table's columns of `plan`: the downstream one only when
  the sweep has a downstream task."""
  if plan.downstream is None:
    return _TABLE
  return (*_TABLE[:5], _DOWNSTREAM_COLUMN, *_TABLE[5:])


def collect(plan: Plan, root: str) -> list[dict[str, Any]]:
  """One row (COLUMNS) per run of `plan` that has a result."""
  rows = []
  for run in plan.runs:
    result = results.read_result(os.path.join(root, run.name))
    if result is None:
      continue
    sop, nsp = result['eval']['sop'], result['eval']['nsp']
    scored = downstream.read_result(os.path.join(root, run.name)) or {}
    rows.append(
      dict(
        run=run.name,
        variant=run.variant,
        group=run.group,
        label=run.label,
        seed='' if run.seed is None else run.seed,
        objective=result['objective'],
        steps=result['step'],
        params=result['params'],
        mlm_loss=sop['mlm_loss'],
        mlm_accuracy=results.mlm_accuracy(result),
        nsp_accuracy=nsp['nsp_accuracy'],
        sop_accuracy=sop['sop_accuracy'],
        eval_examples=int(sop['examples']),
        step_time=result['step_time'],
        tokens_per_sec=result['tokens_per_sec'],
        downstream_accuracy=scored.get('accuracy'),
        downstream_examples=scored.get('examples'),
      )
    )
  return rows


# A sentence head's accuracy over this many examples or fewer is within more
# than 5 points of chance (95 %, at 50 %) by luck alone: too few to tell a
# head from chance.
SMALL_EVALUATION = 384


def write_report(plan: Plan, root: str) -> list[str]:
  """Writes the report files into `root`; returns their paths."""
  rows = collect(plan, root)
  if not rows:
    raise SweepError(f'{root} has no finished runs to report: run the sweep first')
  paths = [
    os.path.join(root, name)
    for name in ('results.csv', 'results.md', 'mlm_accuracy.png', 'params.png')
  ]
  with open(paths[0], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  with open(paths[1], 'w') as f:
    f.write(markdown_table(plan, rows, root))
    f.write(comparison_table(plan, root))
  finished = {row['run'] for row in rows}
  _plot_curves(plan, root, finished, paths[2], results.mlm_curve, 'MLM accuracy')
  _plot_params(plan, rows, paths[3])
  if any(row['objective'] != 'none' for row in rows):
    paths.append(os.path.join(root, 'sentence_accuracy.png'))
    _plot_curves(
      plan,
      root,
      finished,
      paths[-1],
      results.sentence_curve,
      'accuracy on its sentence objective',
      chance=chance(plan, root, finished),
    )
  return paths


def markdown_table(plan: Plan, rows: Sequence[dict[str, Any]], root: str) -> str:
  """The table of the paper's layout: a row group column, a row label
  column, then the metrics (mean ± std over seeds when there are several);
  below it the runs not run or not finished, those not trained, the
  sentence heads' chance, and the downstream task and its chance."""
  overrides = ' '.join(plan.base_overrides)
  table = _columns(plan)
  lines = [
    f'### {plan.name}: {plan.title}',
    '',
    f'`{plan.spec}`' + (f' `{overrides}`' if overrides else '') + f', {_describe(rows)}.',
    '',
    '| | | ' + ' | '.join(header for header, _, _ in table) + ' |',
    '|---|---|' + '---:|' * len(table),
  ]
  previous_group = None
  for variant in dict.fromkeys(run.variant for run in plan.runs):
    mine = [row for row in rows if row['variant'] == variant]
    if not mine:
      continue
    group = mine[0]['group']
    cells = [group if group != previous_group else '', mine[0]['label']]
    cells += [_cell([row[key] for row in mine], fmt) for _, key, fmt in table]
    lines.append('| ' + ' | '.join(cells) + ' |')
    previous_group = group
  finished = {row['run'] for row in rows}
  missing = [run for run in plan.runs if run.name not in finished]
  left_out = [run.name for run in missing if plan.selected and run.variant not in plan.selected]
  unfinished = [run.name for run in missing if run.name not in left_out]
  notes = []
  if left_out:
    notes.append(f'Not run (no --only chose them): {", ".join(left_out)}.')
  if unfinished:
    notes.append(f'Not finished: {", ".join(unfinished)}.')
  stuck = _untrained(plan, root, finished)
  if stuck:
    notes.append(
      'Not trained (stuck at constant predictions; their comparisons carry no verdict): '
      + '; '.join(f'{name} ({why})' for name, why in stuck.items())
      + '.'
    )
  notes += _chance_notes(plan, root, finished)
  notes += _downstream_notes(plan, root, [row['run'] for row in rows])
  if notes:
    lines += ['', *notes]
  return '\n'.join(lines) + '\n'


def _describe(rows: Sequence[dict[str, Any]]) -> str:
  steps = sorted({row['steps'] for row in rows})
  seeds = sorted({row['seed'] for row in rows if row['seed'] != ''})
  text = f'{"/".join(map(str, steps))} steps'
  if len(seeds) > 1:
    text += f', seeds {", ".join(map(str, seeds))} (mean ± std)'
  return text + (
    f', {rows[0]["eval_examples"]} held-out examples per objective; MLM on the SOP examples'
  )


def _cell(values: list[Any], fmt: str | None) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return 'n/a'
  if fmt is None:  # Params: the paper's 'M' with three digits.
    return f'{values[0] / 1e6:.3g}M'
  scale = 100 if fmt == 'percent' else 1
  fmt = '{:.1f}' if fmt == 'percent' else fmt
  mean = fmt.format(statistics.mean(values) * scale)
  if len(values) == 1:
    return mean
  return f'{mean} ± {fmt.format(statistics.stdev(values) * scale)}'


def _outcomes(plan: Plan, root: str, finished: set[str]) -> dict[str, dict[str, np.ndarray]]:
  """The per-example outcomes of the finished runs that have them, by run."""
  found = {}
  for run in plan.runs:
    if run.name in finished:
      outcomes = results.read_outcomes(os.path.join(root, run.name))
      if outcomes is not None:
        found[run.name] = outcomes
  return found


def _untrained(plan: Plan, root: str, finished: set[str]) -> dict[str, str]:
  """The finished runs stuck at constant predictions, with why: by their own
  outcomes (results.untrained), or because their MLM and sentence outcomes
  are those of another variant's run of the same seed, example for example."""
  found = _outcomes(plan, root, finished)
  stuck = {name: why for name, o in found.items() if (why := results.untrained(o))}
  runs = [run for run in plan.runs if run.name in found]
  keys = ('sop_mlm_correct', 'sop_sentence_correct', 'nsp_sentence_correct')
  for i, run in enumerate(runs):
    for other in runs[i + 1 :]:
      if other.seed == run.seed and all(
        np.array_equal(found[run.name][k], found[other.name][k]) for k in keys
      ):
        for name, twin in ((run.name, other.name), (other.name, run.name)):
          stuck.setdefault(name, f'the same outcome on every example as {twin}')
  return {run.name: stuck[run.name] for run in runs if run.name in stuck}


def chance(plan: Plan, root: str, finished: set[str]) -> dict[str, float]:
  """Each sentence objective's chance: the mean over the finished runs of
  the majority-class rate of their held-out examples, by objective."""
  found = _outcomes(plan, root, finished).values()
  if not found:
    return {}
  return {o: statistics.mean(results.majority_rate(f, o) for f in found) for o in ('nsp', 'sop')}


def _chance_notes(plan: Plan, root: str, finished: set[str]) -> list[str]:
  rates = chance(plan, root, finished)
  if not rates:
    return []
  examples = min(len(o['sop_sentence_correct']) for o in _outcomes(plan, root, finished).values())
  half = max(1.96 * np.sqrt(r * (1 - r) / examples) for r in rates.values())
  note = (
    "Sentence heads: chance is the eval set's majority class, "
    + ', '.join(f'{o.upper()} {100 * r:.1f} %' for o, r in rates.items())
    + f'; over {examples} examples a head is within ±{100 * half:.1f} points of it by luck '
    '(95 %).'
  )
  if examples <= SMALL_EVALUATION:
    note += (
      f' Too few examples to tell a head from chance: evaluate more than {SMALL_EVALUATION} '
      '(--eval_batches).'
    )
  return [note]


def _downstream_notes(plan: Plan, root: str, finished: Sequence[str]) -> list[str]:
  """With a downstream task: what the column measures and its chance (the
  dev set's majority class, with the band of luck over its examples), the
  classifiers stuck at one class, and the finished runs without a
  downstream result."""
  if plan.downstream is None:
    return []
  scored = {}
  for name in finished:
    outcomes = downstream.read_outcomes(os.path.join(root, name))
    if outcomes is not None:
      scored[name] = outcomes
  task = plan.downstream
  settings = ' '.join(f'`{o}`' for o in task.overrides)
  note = (
    f'Downstream: dev accuracy on `{task.dev}` of each run fine-tuned on `{task.train}` by '
    f'`launch.finetune --task={FINETUNE_TASK}`' + (f' with {settings}' if settings else '') + '.'
  )
  if scored:
    rate = statistics.mean(downstream.majority_rate(o) for o in scored.values())
    examples = min(len(o['correct']) for o in scored.values())
    half = 1.96 * np.sqrt(rate * (1 - rate) / examples)
    note += (
      f" Chance is the dev set's majority class, {100 * rate:.1f} %; over {examples} examples "
      f'a classifier is within ±{100 * half:.1f} points of it by luck (95 %).'
    )
  notes = [note]
  constant = [name for name in finished if name in scored and downstream.constant(scored[name])]
  if constant:
    notes.append(
      f'One class to every dev example (no verdict where one is ahead): {", ".join(constant)}.'
    )
  unscored = [name for name in finished if name not in scored]
  if unscored:
    notes.append(f'Not fine-tuned: {", ".join(unscored)}.')
  return notes


METRIC_NAMES = {
  'mlm': 'MLM acc. (SOP examples)',
  'sop': 'sentence head on SOP',
  'nsp': 'sentence head on NSP',
  'downstream': 'downstream dev acc.',
}
# results.csv's column of each comparison metric.
METRIC_COLUMNS = {
  'mlm': 'mlm_accuracy',
  'sop': 'sop_accuracy',
  'nsp': 'nsp_accuracy',
  'downstream': 'downstream_accuracy',
}


def comparison_name(ahead: variants.Variant | Run, behind: variants.Variant | Run) -> str:
  """A comparison's row name: 'E=128 − E=64 (ALBERT mini all-shared)'."""
  if ahead.group == behind.group:
    return f'{ahead.label} − {behind.label} ({ahead.group})'
  return f'{ahead.group} {ahead.label} − {behind.group} {behind.label}'


def comparison_table(plan: Plan, root: str) -> str:
  """The sweep's comparisons, one row each: the paired difference of the
  finished, evaluated runs of the two variants (points), its interval, its
  Holm-adjusted p-value, the seeds it pairs and the verdict on the paper's
  direction; '' without any."""
  if not plan.comparisons:
    return ''
  lines = [
    '',
    f"#### The paper's findings: paired differences, {stats.CONFIDENCE:.0%} CI",
    '',
    'Each difference is first variant minus second, in accuracy points, the mean over the '
    'seeds both have finished of their paired differences (same seed: same data order and '
    'held-out or dev examples, checked by example id); its interval is Student-t over those seeds '
    f"({stats.CONFIDENCE:.0%}, per comparison). Verdict on the paper's direction (first "
    'ahead; or, where the paper finds the two alike, first no more than a margin behind): '
    'reproduced / not reproduced / inconclusive (CI spans 0 or the margin, Holm-adjusted p '
    f'≥ {1 - stats.CONFIDENCE:.2g}, or fewer than {stats.MIN_SEEDS} seeds). The verdicts are '
    "corrected together: p (Holm) is each comparison's p-value adjusted over the table's "
    'comparisons that have a verdict. A comparison of a run stuck at constant predictions '
    'carries none.',
    '',
    '| comparison | measured | paper | difference | CI | p (Holm) | seeds × examples | verdict |',
    '|---|---|---|---:|---:|---:|---:|---|',
  ]
  finished = {run.name for run in plan.runs if results.read_result(os.path.join(root, run.name))}
  stuck = _untrained(plan, root, finished)
  by_variant = {run.variant: run for run in plan.runs}
  measured = []
  for comparison in plan.comparisons:
    if comparison.metric == 'downstream' and plan.downstream is None:
      continue  # No downstream task: nothing measures it.
    ahead, behind = by_variant.get(comparison.ahead), by_variant.get(comparison.behind)
    if ahead is None or behind is None:
      continue  # Not in this plan (e.g. an older sweep.json).
    cells = [comparison_name(ahead, behind), METRIC_NAMES[comparison.metric], comparison.paper]
    left_out = [
      v for v in (comparison.ahead, comparison.behind) if plan.selected and v not in plan.selected
    ]
    try:
      if left_out:
        raise SweepError(f'not run: no --only chose {" or ".join(left_out)}')
      paired, names = _paired(plan, root, comparison)
    except SweepError as e:
      measured.append(_Measured(comparison, cells, None, str(e)))
    else:
      blocked = _blocked(comparison, names, stuck, root)
      measured.append(_Measured(comparison, cells, paired, blocked))
  tested = [m for m in measured if m.paired and not m.blocked and m.paired.seeds >= stats.MIN_SEEDS]
  adjusted = stats.holm([stats.p_value(m.paired, m.comparison.margin) for m in tested])
  holm = {id(m): p for m, p in zip(tested, adjusted)}
  for m in measured:
    lines.append('| ' + ' | '.join([*m.cells, *_cells(m, holm.get(id(m)))]) + ' |')
  return '\n'.join(lines) + '\n'


@dataclasses.dataclass(frozen=True)
class _Measured:
  comparison: variants.Comparison
  cells: list[str]  # Comparison, measured, paper.
  paired: stats.Paired | None  # None: not measured, `blocked` says why.
  blocked: str  # Why no verdict ('' when there is one).


def _cells(m: _Measured, adjusted_p: float | None) -> list[str]:
  """Difference, CI, p (Holm), seeds × examples and verdict of `m`."""
  if m.paired is None:
    return ['n/a', '', '', '', m.blocked]
  paired = m.paired
  if paired.seeds < stats.MIN_SEEDS:
    verdict = stats.verdict(paired)
  elif m.blocked:
    verdict = m.blocked
  else:
    verdict = stats.verdict(paired, m.comparison.margin, adjusted_p)
  return [
    f'{100 * paired.difference:+.2f}',
    'n/a' if paired.seeds < 2 else f'[{100 * paired.low:+.2f}, {100 * paired.high:+.2f}]',
    '' if adjusted_p is None else f'{adjusted_p:.2g}',
    f'{paired.seeds} × {paired.examples}',
    verdict,
  ]


def _blocked(
  comparison: variants.Comparison,
  names: list[tuple[str, str]],
  stuck: dict[str, str],
  root: str,
) -> str:
  """Why the comparison of the paired runs `names` ([(ahead, behind)] per
  seed) carries no verdict ('' when it does): a run not trained, or for a
  sentence head, an ahead run whose head answers every example alike (a
  constant head can beat another by the label balance alone)."""
  untrained = [n for pair in names for n in pair if n in stuck]
  if untrained:
    return f'no verdict: {", ".join(untrained)} not trained'
  objective, kind = variants.METRICS[comparison.metric]
  if kind == 'sentence':
    constant = [
      a
      for a, _ in names
      if results.constant_head(results.read_outcomes(os.path.join(root, a)), objective)
    ]
    if constant:
      return f'no verdict: the head of {", ".join(constant)} gives one answer to every example'
  if kind == 'downstream':
    constant = [
      a for a, _ in names if downstream.constant(downstream.read_outcomes(os.path.join(root, a)))
    ]
    if constant:
      return f'no verdict: the classifier of {", ".join(constant)} gives one class to every example'
  return ''


def _paired(
  plan: Plan, root: str, comparison: variants.Comparison
) -> tuple[stats.Paired, list[tuple[str, str]]]:
  """The comparison's paired difference over the seeds whose runs of both
  variants have per-example outcomes, and those runs' names (ahead, behind)
  per seed; SweepError (a table cell) when none, or when two runs' example
  ids differ."""
  runs = {(run.variant, run.seed): run.name for run in plan.runs}
  differences, names, examples = [], [], []
  for (variant, seed), name in runs.items():
    other = runs.get((comparison.behind, seed))
    if variant != comparison.ahead or other is None:
      continue
    a, b = (_measured(root, n, comparison.metric) for n in (name, other))
    if a is None or b is None:
      continue
    if a.ids.shape != b.ids.shape or not np.array_equal(a.ids, b.ids):
      raise SweepError(f'not paired: {name} and {other} were evaluated on different examples')
    differences.append(stats.seed_difference(a.correct, b.correct, a.weight))
    names.append((name, other))
    examples.append(len(a.weight))
  if not differences:
    done = 'fine-tuned' if comparison.metric == 'downstream' else 'evaluated'
    raise SweepError(f'no seed with both runs {done}')
  return stats.paired(differences, min(examples)), names


@dataclasses.dataclass(frozen=True)
class _Outcomes:
  """One run's per-example outcomes on one metric, [examples] each."""

  ids: np.ndarray  # Example ids, by which two runs are paired.
  correct: np.ndarray  # Hits (for MLM: the example's correct masked tokens).
  weight: np.ndarray  # What the hits are out of (1 but for MLM).


def _measured(root: str, name: str, metric: str) -> _Outcomes | None:
  """Run `name`'s outcomes on `metric` (a key of variants.METRICS); None
  when it has none."""
  workdir = os.path.join(root, name)
  objective, kind = variants.METRICS[metric]
  if kind == 'downstream':
    scored = downstream.read_outcomes(workdir)
    if scored is None:
      return None
    return _Outcomes(scored['example_id'], scored['correct'], np.ones(scored['correct'].shape))
  outcomes = results.read_outcomes(workdir)
  if outcomes is None:
    return None
  ids = outcomes[f'{objective}_example_id']
  weight = outcomes[f'{objective}_mlm_weight'] if kind == 'mlm' else np.ones(ids.shape)
  return _Outcomes(ids, outcomes[f'{objective}_{kind}_correct'], weight)


def _variant_runs(plan: Plan, finished: set[str]) -> dict[str, list[Any]]:
  """The finished runs of each variant, variants in the plan's order."""
  by_variant = {}
  for run in plan.runs:
    if run.name in finished:
      by_variant.setdefault(run.variant, []).append(run)
  return by_variant


def _plot_curves(
  plan: Plan,
  root: str,
  finished: set[str],
  path: str,
  curve: Callable[[str, dict[str, Any]], list[tuple[int, float]]],
  measured: str,
  chance: dict[str, float] | None = None,
) -> None:
  """Plots `curve` (results.mlm_curve or results.sentence_curve) of the
  finished runs against steps, and the `chance` of each objective the runs
  train (a rate, `chance`'s) as a line; a variant with an empty curve is
  left out."""
  figure = Figure(figsize=(8, 5), layout='constrained')
  axes = figure.subplots()
  colors = _colors(plan)
  steps_seen = set()
  for variant, runs in _variant_runs(plan, finished).items():
    curves = []
    for run in runs:
      workdir = os.path.join(root, run.name)
      curves.append(dict(curve(workdir, results.read_result(workdir))))
    if not all(curves):
      continue
    # The steps every seed evaluated at, so that mean and band are over all.
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = 100 * np.array([[c[step] for step in steps] for c in curves])
    steps_seen.update(steps)
    axes.plot(
      steps,
      values.mean(0),
      marker='o',
      color=colors[variant],
      label=f'{runs[0].group} {runs[0].label}' + _seeds(len(runs)),
    )
    if len(runs) > 1:
      axes.fill_between(steps, values.min(0), values.max(0), color=colors[variant], alpha=0.15)
  trained = set()
  if chance:
    trained = {
      results.read_result(os.path.join(root, run.name))['objective']
      for run in plan.runs
      if run.name in finished
    }
  for objective, style in (('nsp', '--'), ('sop', ':')):
    if objective in trained:
      axes.axhline(
        100 * chance[objective],
        color='gray',
        linestyle=style,
        linewidth=1,
        label=f'chance on {objective.upper()} (majority class, {100 * chance[objective]:.1f} %)',
      )
  axes.set(
    xlabel='step',
    ylabel=f'held-out {measured} (%)',
    title=f'{plan.name}: {plan.title}',
  )
  if 0 < len(steps_seen) <= 12:
    axes.set_xticks(sorted(steps_seen))
  else:
    axes.xaxis.set_major_locator(ticker.MaxNLocator(10, integer=True))
  _finish(axes, 'mean over seeds; band: lowest to highest seed')
  figure.savefig(path, dpi=100)


def _plot_params(plan: Plan, rows: Sequence[dict[str, Any]], path: str) -> None:
  figure = Figure(figsize=(8, 5), layout='constrained')
  axes = figure.subplots()
  colors = _colors(plan)
  for variant in dict.fromkeys(row['variant'] for row in rows):
    mine = [row for row in rows if row['variant'] == variant]
    accuracy = 100 * np.array([row['mlm_accuracy'] for row in mine])
    mean = accuracy.mean()
    axes.errorbar(
      [mine[0]['params']],
      [mean],
      yerr=[[mean - accuracy.min()], [accuracy.max() - mean]],
      fmt='o',
      capsize=4,
      color=colors[variant],
      label=f'{mine[0]["group"]} {mine[0]["label"]}' + _seeds(len(mine)),
    )
  axes.set_xscale('log')
  # Parameter counts as '0.25M' on major and minor ticks: a sweep spans
  # less than a decade, where a log axis has one labelled tick or none.
  millions = ticker.FuncFormatter(lambda x, _: f'{x / 1e6:.3g}M')
  axes.xaxis.set_major_formatter(millions)
  axes.xaxis.set_minor_formatter(millions)
  axes.tick_params(axis='x', which='minor', labelsize='small')
  axes.set(
    xlabel='backbone parameters',
    ylabel='held-out MLM accuracy (%)',
    title=f'{plan.name}: accuracy against parameters',
  )
  _finish(axes, 'mean over seeds; bars: lowest to highest seed')
  figure.savefig(path, dpi=100)


def _seeds(count: int) -> str:
  return f' ({count} seeds)' if count > 1 else ''


def _finish(axes: Any, band: str) -> None:
  axes.yaxis.set_major_formatter(ticker.FormatStrFormatter('%.1f'))
  axes.grid(alpha=0.3)
  axes.legend(fontsize='small', title=band, title_fontsize='small')


def _colors(plan: Plan) -> dict[str, Any]:
  variants = list(dict.fromkeys(run.variant for run in plan.runs))
  return {v: f'C{i % 10}' for i, v in enumerate(variants)}
