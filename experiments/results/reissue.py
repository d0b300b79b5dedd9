"""Re-issues the committed tables under the sweep report's new method, from
their results.csv alone (their per-example outcomes were not kept): for each
comparison of the sweep, the seeds' paired differences, the Student-t 95 %
interval over them, the p-value, Holm's adjustment over the table and the
verdicts, beside the verdict its results.md committed. The seeds'
differences are exactly those the report computes from outcomes (a seed's
difference of accuracy over the same examples), so only the checks that
need outcomes (example ids, collapsed predictions) are missing; equal
accuracies of two variants of one seed stand in for the latter.

  python -m experiments.results.reissue    # from the repository root
"""

import csv
import os

from albert_jax.sweep import stats, variants

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Directory under experiments/results/ -> its sweep file and scale.
TABLES = {
  'embedding_debian_mini': 'embedding_size.py:mini',
  'sharing_debian_mini1k': 'sharing.py:mini',
  'sentence_debian_mini': 'sentence_objective.py:mini',
  'sharing_debian_mini': 'sharing.py:mini',
  'sharing': 'sharing.py:tiny',
}
COLUMNS = {'mlm': 'mlm_accuracy', 'sop': 'sop_accuracy', 'nsp': 'nsp_accuracy'}


def committed_verdicts(directory: str) -> dict[tuple[str, str], str]:
  """(comparison, measured) -> the verdict of the directory's results.md."""
  verdicts = {}
  with open(os.path.join(directory, 'results.md')) as f:
    for line in f:
      cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
      if ' − ' in line and len(cells) >= 7:
        verdicts[cells[0], cells[1]] = f'{cells[3]} {cells[4]} {cells[-1]}'
  return verdicts


def stuck_runs(rows: list[dict[str, str]]) -> set[str]:
  """Runs whose MLM, NSP and SOP accuracies equal, bit for bit, those of
  another variant's run of the same seed: constant predictions."""
  seen = {}
  for row in rows:
    key = (row['seed'], row['mlm_accuracy'], row['nsp_accuracy'], row['sop_accuracy'])
    seen.setdefault(key, []).append(row['run'])
  return {run for runs in seen.values() if len(runs) > 1 for run in runs}


def table(name: str, spec: str) -> list[str]:
  directory = os.path.join(REPO, 'experiments', 'results', name)
  with open(os.path.join(directory, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  sweep = variants.load_sweep(os.path.join(REPO, 'experiments', 'ablations', spec))
  by_variant = {v.name: v for v in sweep.variants}
  old = committed_verdicts(directory)
  stuck = stuck_runs(rows)
  measured = []
  for comparison in sweep.comparisons:
    value = {(r['variant'], r['seed']): r for r in rows}
    seeds = [s for (v, s) in value if v == comparison.ahead and (comparison.behind, s) in value]
    if not seeds:
      continue
    column = COLUMNS[comparison.metric]
    pairs = [(value[comparison.ahead, s], value[comparison.behind, s]) for s in seeds]
    differences = [float(a[column]) - float(b[column]) for a, b in pairs]
    untrained = sorted({r['run'] for pair in pairs for r in pair} & stuck)
    measured.append(
      (comparison, differences, stats.paired(differences, int(rows[0]['eval_examples'])), untrained)
    )
  tested = [m for m in measured if not m[3]]
  holm = dict(
    zip(
      (id(m) for m in tested),
      stats.holm([stats.p_value(m[2], m[0].margin) for m in tested]),
    )
  )
  lines = [
    f'#### `{name}/`',
    '',
    '| comparison | measured | seeds (points) | committed: difference, CI, verdict | t 95 % CI '
    '| p | p (Holm) | verdict per comparison | verdict, Holm |',
    '|---|---|---|---|---:|---:|---:|---|---|',
  ]
  for m in measured:
    comparison, differences, paired, untrained = m
    ahead, behind = by_variant[comparison.ahead], by_variant[comparison.behind]
    label = f'{ahead.label} − {behind.label} ({ahead.group})'
    metric = {'mlm': 'MLM acc. (SOP examples)', 'sop': 'sentence head on SOP'}.get(
      comparison.metric, 'sentence head on NSP'
    )
    seeds = ', '.join(f'{100 * d:+.2f}' for d in differences)
    before = old.get((label, metric), 'none committed')
    interval = f'[{100 * paired.low:+.2f}, {100 * paired.high:+.2f}]'
    p = stats.p_value(paired, comparison.margin)
    if untrained:
      withdrawn = f'withdrawn: {", ".join(untrained)} not trained'
      cells = ['', withdrawn, withdrawn]
    else:
      adjusted = holm[id(m)]
      cells = [
        f'{adjusted:.2g}',
        stats.verdict(paired, comparison.margin),
        stats.verdict(paired, comparison.margin, adjusted),
      ]
    row = [label, metric, seeds, before, interval, f'{p:.2g}', *cells]
    lines.append('| ' + ' | '.join(row) + ' |')
  return lines + ['']


def main() -> None:
  for name, spec in TABLES.items():
    print('\n'.join(table(name, spec)))


if __name__ == '__main__':
  main()
