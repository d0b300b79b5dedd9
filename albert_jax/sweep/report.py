"""A sweep directory's report, from its plan and the runs' results:

  results.csv       one row per finished run
  results.md        the paper's table layout: row groups and rows per
                    variant, mean ± standard deviation over seeds
  mlm_accuracy.png  held-out MLM accuracy against steps, per finished run
                    (the trainer's eval_ records of metrics.jsonl: examples
                    of the run's own sentence objective)
  params.png        final held-out MLM accuracy against backbone parameters

The MLM columns are measured on the SOP examples (both segments from one
document) for every run, so that runs of any sentence objective compare.
"""

import csv
import os
import statistics
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from albert_jax.errors import SweepError
from albert_jax.sweep import results
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
        mlm_accuracy=sop['mlm_accuracy'],
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
  _plot_curves(plan, root, {row['run'] for row in rows}, paths[2])
  _plot_params(plan, rows, paths[3])
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


def _plot_curves(plan: Plan, root: str, finished: set[str], path: str) -> None:
  figure = Figure(figsize=(7, 4.5), layout='constrained')
  axes = figure.subplots()
  colors = _colors(plan)
  labelled = set()
  for run in plan.runs:
    if run.name not in finished:
      continue
    records = [
      r for r in results.read_metrics(os.path.join(root, run.name)) if 'eval_mlm_accuracy' in r
    ]
    if not records:
      continue
    label = None if run.variant in labelled else f'{run.group} {run.label}'
    labelled.add(run.variant)
    axes.plot(
      [r['step'] for r in records],
      [100 * r['eval_mlm_accuracy'] for r in records],
      color=colors[run.variant],
      label=label,
      alpha=0.8,
    )
  axes.set(xlabel='step', ylabel='held-out MLM accuracy (%)', title=f'{plan.name}: {plan.title}')
  if labelled:
    axes.legend(fontsize='small')
  figure.savefig(path, dpi=100)


def _plot_params(plan: Plan, rows: Sequence[dict[str, Any]], path: str) -> None:
  figure = Figure(figsize=(7, 4.5), layout='constrained')
  axes = figure.subplots()
  colors = _colors(plan)
  for variant in dict.fromkeys(row['variant'] for row in rows):
    mine = [row for row in rows if row['variant'] == variant]
    axes.scatter(
      [row['params'] for row in mine],
      [100 * row['mlm_accuracy'] for row in mine],
      color=colors[variant],
      label=f'{mine[0]["group"]} {mine[0]["label"]}',
    )
  axes.set_xscale('log')
  axes.set(
    xlabel='backbone parameters',
    ylabel='held-out MLM accuracy (%)',
    title=f'{plan.name}: accuracy against parameters',
  )
  axes.legend(fontsize='small')
  figure.savefig(path, dpi=100)


def _colors(plan: Plan) -> dict[str, Any]:
  variants = list(dict.fromkeys(run.variant for run in plan.runs))
  return {v: f'C{i % 10}' for i, v in enumerate(variants)}
