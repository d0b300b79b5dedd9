"""Re-issues the tables committed before the sweeps kept per-example
outcomes, under the report's method, from their results.csv alone: for each
comparison, the seeds' paired differences, the Student-t 95 % interval over
them, the p-value, Holm's adjustment over the table and the verdict. A seed's
difference is the difference of the two runs' accuracies over the same
examples, which results.csv holds to float precision, so these are the
numbers the report computes from outcomes. Only the checks that need
outcomes (example ids, collapsed predictions) cannot be made; two variants of
one seed with bitwise-equal MLM, NSP and SOP accuracies stand in for the
latter.

It rewrites each table's findings section in its results.md (from the
"#### The paper's findings" heading to the end) and prints REISSUE.md's
tables, with the verdict per comparison beside the one after Holm's
correction.

  python -m experiments.results.reissue    # from the repository root
"""

import csv
import dataclasses
import os

from albert_jax.sweep import report, stats, variants

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Directory under experiments/results/ -> its sweep file and scale.
TABLES = {
  'embedding_debian_mini': 'embedding_size.py:mini',
  'sharing_debian_mini1k': 'sharing.py:mini',
  'sentence_debian_mini': 'sentence_objective.py:mini',
  'sharing_debian_mini': 'sharing.py:mini',
  'sharing': 'sharing.py:tiny',
}
FINDINGS = "#### The paper's findings"


@dataclasses.dataclass(frozen=True)
class Row:
  label: str
  comparison: variants.Comparison
  differences: list[float]  # One per seed, seed order of results.csv.
  paired: stats.Paired
  untrained: list[str]  # Runs stuck at constant predictions: no verdict.
  adjusted_p: float | None  # Holm's, over the rows with a verdict.


def stuck_runs(rows: list[dict[str, str]]) -> set[str]:
  """Runs whose MLM, NSP and SOP accuracies equal, bit for bit, those of
  another variant's run of the same seed: constant predictions."""
  seen = {}
  for row in rows:
    key = (row['seed'], row['mlm_accuracy'], row['nsp_accuracy'], row['sop_accuracy'])
    seen.setdefault(key, []).append(row['run'])
  return {run for runs in seen.values() if len(runs) > 1 for run in runs}


def measure(name: str, spec: str) -> list[Row]:
  """The table's comparisons that both variants' runs measured."""
  with open(os.path.join(REPO, 'experiments', 'results', name, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  sweep = variants.load_sweep(os.path.join(REPO, 'experiments', 'ablations', spec))
  by_variant = {v.name: v for v in sweep.variants}
  value = {(r['variant'], r['seed']): r for r in rows}
  stuck = stuck_runs(rows)
  measured = []
  for comparison in sweep.comparisons:
    seeds = [s for (v, s) in value if v == comparison.ahead and (comparison.behind, s) in value]
    column = report.METRIC_COLUMNS[comparison.metric]
    if not seeds or column not in rows[0]:
      continue  # Not run, or downstream: these tables have no such column.
    pairs = [(value[comparison.ahead, s], value[comparison.behind, s]) for s in seeds]
    differences = [float(a[column]) - float(b[column]) for a, b in pairs]
    measured.append(
      Row(
        label=report.comparison_name(by_variant[comparison.ahead], by_variant[comparison.behind]),
        comparison=comparison,
        differences=differences,
        paired=stats.paired(differences, int(rows[0]['eval_examples'])),
        untrained=sorted({r['run'] for pair in pairs for r in pair} & stuck),
        adjusted_p=None,
      )
    )
  tested = [m for m in measured if not m.untrained]
  adjusted = stats.holm([stats.p_value(m.paired, m.comparison.margin) for m in tested])
  holm = {id(m): p for m, p in zip(tested, adjusted)}
  return [dataclasses.replace(m, adjusted_p=holm.get(id(m))) for m in measured]


def _seeds(row: Row) -> str:
  return ', '.join(f'{100 * d:+.2f}' for d in row.differences)


def _interval(row: Row) -> str:
  return f'[{100 * row.paired.low:+.2f}, {100 * row.paired.high:+.2f}]'


def _verdict(row: Row, corrected: bool) -> str:
  if row.untrained:
    return f'no verdict: {", ".join(row.untrained)} not trained'
  return stats.verdict(row.paired, row.comparison.margin, row.adjusted_p if corrected else None)


def _holm(row: Row) -> str:
  return '' if row.adjusted_p is None else f'{row.adjusted_p:.2g}'


def findings(measured: list[Row]) -> list[str]:
  """results.md's findings section, in the report's columns and the seeds'
  differences."""
  lines = [
    f'{FINDINGS}: paired differences, 95% CI (re-issued)',
    '',
    'Re-computed from `results.csv` by `experiments/results/reissue.py`; these runs kept no '
    'per-example outcomes. Each difference is first variant minus second, in accuracy points, '
    'the mean over the seeds of their paired differences (same seed: same data order and '
    'held-out examples); its interval is Student-t over those seeds (95%, per comparison), and '
    "p (Holm) is each comparison's p-value adjusted over the table's comparisons that have a "
    "verdict. Verdict on the paper's direction (first ahead; or, where the paper finds the two "
    'alike, first no more than a margin behind): reproduced / not reproduced / inconclusive (CI '
    'spans 0 or the margin, or Holm-adjusted p ≥ 0.05). Not checked, for want of outcomes: the '
    'pairing by example id; two variants of one seed with bitwise-equal MLM, NSP and SOP '
    "accuracies stand for runs stuck at constant predictions. The retired bootstrap's intervals "
    'and verdicts are in `../REISSUE.md`.',
    '',
    '| comparison | measured | paper | seeds (points) | difference | CI | p (Holm) '
    '| seeds × examples | verdict |',
    '|---|---|---|---|---:|---:|---:|---:|---|',
  ]
  for row in measured:
    cells = [
      row.label,
      report.METRIC_NAMES[row.comparison.metric],
      row.comparison.paper,
      _seeds(row),
      f'{100 * row.paired.difference:+.2f}',
      _interval(row),
      _holm(row),
      f'{row.paired.seeds} × {row.paired.examples}',
      _verdict(row, corrected=True),
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def reissue_table(name: str, measured: list[Row]) -> list[str]:
  """REISSUE.md's table: the verdict per comparison beside Holm's."""
  lines = [
    f'#### `{name}/`',
    '',
    '| comparison | measured | seeds (points) | t 95 % CI | p | p (Holm) '
    '| verdict per comparison | verdict, Holm |',
    '|---|---|---|---:|---:|---:|---|---|',
  ]
  for row in measured:
    p = stats.p_value(row.paired, row.comparison.margin)
    cells = [
      row.label,
      report.METRIC_NAMES[row.comparison.metric],
      _seeds(row),
      _interval(row),
      f'{p:.2g}',
      _holm(row),
      _verdict(row, corrected=False),
      _verdict(row, corrected=True),
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines + ['']


def rewrite_findings(name: str, measured: list[Row]) -> None:
  """Replaces the findings section of the table's results.md, if it has one."""
  path = os.path.join(REPO, 'experiments', 'results', name, 'results.md')
  with open(path) as f:
    text = f.read()
  start = text.find(FINDINGS)
  if start < 0:
    return
  with open(path, 'w') as f:
    f.write(text[:start] + '\n'.join(findings(measured)) + '\n')


def main() -> None:
  for name, spec in TABLES.items():
    measured = measure(name, spec)
    rewrite_findings(name, measured)
    print('\n'.join(reissue_table(name, measured)))


if __name__ == '__main__':
  main()
