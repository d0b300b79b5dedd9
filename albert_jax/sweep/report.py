"""A sweep directory's report, from its plan and the runs' results:

  results.csv       one row per finished run
  results.md        the paper's table layout: row groups and rows per
                    variant, mean ± standard deviation over seeds; then each
                    finding of the paper the sweep tests (variants.Comparison)
                    as a paired difference with its 95 % confidence interval
                    (albert_jax.sweep.stats) and a verdict
  mlm_accuracy.png  held-out MLM accuracy against steps, per variant: the
                    mean over seeds, a band from the lowest to the highest
                    seed, a marker at every evaluation
  params.png        final held-out MLM accuracy against backbone parameters,
                    per variant: the mean over seeds, bars from lowest to
                    highest
  sentence_accuracy.png  held-out accuracy of the sentence head on the
                    objective each variant trains (NSP or SOP) against steps,
                    as mlm_accuracy.png, with chance (50 %) marked; written
                    when a finished run trains one

The MLM columns are measured on the SOP examples (both segments from one
document) for every run, so that runs of any sentence objective compare. The
table, the comparisons and the last point of every curve read one number per
run, `results.mlm_accuracy` (the earlier points of a curve are the trainer's
evaluations: see albert_jax.sweep.results).
"""

import csv
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from albert_jax.errors import SweepError
from albert_jax.sweep import results, stats, variants
from albert_jax.sweep.plan import Plan

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


def collect(plan: Plan, root: str) -> list[dict[str, Any]]:
  """One row (COLUMNS) per run of `plan` that has a result."""
  rows = []
  for run in plan.runs:
    result = results.read_result(os.path.join(root, run.name))
    if result is None:
      continue
    sop, nsp = result['eval']['sop'], result['eval']['nsp']
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
      )
    )
  return rows


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
    f.write(markdown_table(plan, rows))
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
      chance=50,
    )
  return paths


def markdown_table(plan: Plan, rows: Sequence[dict[str, Any]]) -> str:
  """The table of the paper's layout: a row group column, a row label
  column, then the metrics (mean ± std over seeds when there are several)."""
  overrides = ' '.join(plan.base_overrides)
  lines = [
    f'### {plan.name}: {plan.title}',
    '',
    f'`{plan.spec}`' + (f' `{overrides}`' if overrides else '') + f', {_describe(rows)}.',
    '',
    '| | | ' + ' | '.join(header for header, _, _ in _TABLE) + ' |',
    '|---|---|' + '---:|' * len(_TABLE),
  ]
  previous_group = None
  for variant in dict.fromkeys(run.variant for run in plan.runs):
    mine = [row for row in rows if row['variant'] == variant]
    if not mine:
      continue
    group = mine[0]['group']
    cells = [group if group != previous_group else '', mine[0]['label']]
    cells += [_cell([row[key] for row in mine], fmt) for _, key, fmt in _TABLE]
    lines.append('| ' + ' | '.join(cells) + ' |')
    previous_group = group
  finished = {row['run'] for row in rows}
  missing = [run.name for run in plan.runs if run.name not in finished]
  if missing:
    lines += ['', f'Not finished: {", ".join(missing)}.']
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


_METRIC_NAMES = {
  'mlm': 'MLM acc. (SOP examples)',
  'sop': 'sentence head on SOP',
  'nsp': 'sentence head on NSP',
}


def comparison_table(plan: Plan, root: str) -> str:
  """The sweep's comparisons, one row each: the paired difference of the
  finished, evaluated runs of the two variants (points), its interval, the
  seeds it pairs and the verdict on the paper's direction; '' without any."""
  if not plan.comparisons:
    return ''
  lines = [
    '',
    f"#### The paper's findings: paired differences, {stats.CONFIDENCE:.0%} CI",
    '',
    'Each difference is first variant minus second, in accuracy points, over the seeds '
    'both have finished (same seed: same data order and held-out examples); its interval '
    "is a bootstrap over seeds and held-out examples. Verdict on the paper's direction "
    '(first ahead; or, where the paper finds the two alike, first no more than a margin '
    'behind): reproduced / not reproduced / inconclusive (CI spans 0 or the margin, or '
    f'fewer than {stats.MIN_SEEDS} seeds).',
    '',
    '| comparison | measured | paper | difference | CI | seeds × examples | verdict |',
    '|---|---|---|---:|---:|---:|---|',
  ]
  by_variant = {run.variant: run for run in plan.runs}
  for comparison in plan.comparisons:
    ahead, behind = by_variant.get(comparison.ahead), by_variant.get(comparison.behind)
    if ahead is None or behind is None:
      continue  # Not in this plan (e.g. an older sweep.json).
    if ahead.group == behind.group:
      name = f'{ahead.label} − {behind.label} ({ahead.group})'
    else:
      name = f'{ahead.group} {ahead.label} − {behind.group} {behind.label}'
    cells = [name, _METRIC_NAMES[comparison.metric], comparison.paper]
    try:
      paired = _paired(plan, root, comparison)
    except SweepError as e:
      cells += ['n/a', '', '', str(e)]
    else:
      cells += [
        f'{100 * paired.difference:+.2f}',
        f'[{100 * paired.low:+.2f}, {100 * paired.high:+.2f}]',
        f'{paired.seeds} × {paired.examples}',
        stats.verdict(paired, comparison.margin),
      ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _paired(plan: Plan, root: str, comparison: variants.Comparison) -> stats.Paired:
  """The comparison's paired difference over the seeds whose runs of both
  variants have per-example outcomes; SweepError (a table cell) when none."""
  objective, kind = variants.METRICS[comparison.metric]
  runs = {(run.variant, run.seed): run.name for run in plan.runs}
  correct_a, correct_b, weights = [], [], []
  for (variant, seed), name in runs.items():
    other = runs.get((comparison.behind, seed))
    if variant != comparison.ahead or other is None:
      continue
    a, b = (results.read_outcomes(os.path.join(root, n)) for n in (name, other))
    if a is None or b is None:
      continue
    if kind == 'mlm':
      weight = a[f'{objective}_mlm_weight']
      # The same masks in both runs, or the pairing is broken.
      if not np.array_equal(weight, b[f'{objective}_mlm_weight']):
        raise SweepError(f'not paired: {name} and {other} were evaluated on different examples')
    else:
      weight = np.ones_like(a[f'{objective}_sentence_correct'])
    correct_a.append(a[f'{objective}_{kind}_correct'])
    correct_b.append(b[f'{objective}_{kind}_correct'])
    weights.append(weight)
  if not weights:
    raise SweepError('no seed with both runs evaluated')
  try:
    return stats.paired_difference(correct_a, correct_b, weights)
  except ValueError:
    raise SweepError('not paired: the runs were evaluated on different examples') from None


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
  chance: float | None = None,
) -> None:
  """Plots `curve` (results.mlm_curve or results.sentence_curve) of the
  finished runs against steps, and `chance` (%) as a line; a variant with
  an empty curve is left out."""
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
  if chance is not None:
    axes.axhline(chance, color='gray', linestyle='--', linewidth=1, label='chance')
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
