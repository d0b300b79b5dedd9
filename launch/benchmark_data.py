r"""Measures input-pipeline throughput, in examples per second.

  python -m launch.benchmark_data --max_seq_length=512 --json
  python -m launch.benchmark_data --source=prepared:prepared/ --json

One process pinned to one core, num_workers=0 (no worker processes, no
prefetch thread), reading prepared data: --source=prepared:DIR (from
launch.prepare_data), or builtin (the default), tokenized and prepared into a
temporary directory first (not timed).
Prints one JSON object with --json, a line of text otherwise.
"""

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from absl import flags

from albert_jax.data import pipeline, prepared, sources
from albert_jax.data.config import DataConfig
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import UsageError
from launch import command_line

_MAX_SEQ_LENGTH = flags.DEFINE_integer('max_seq_length', 512, 'Tokens per example.')
_MAX_PREDICTIONS = flags.DEFINE_integer(
  'max_predictions_per_seq', 20, 'Masked positions per example, at most.'
)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Examples per batch.')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', 20_000, 'Examples timed.')
_VOCAB_SIZE = flags.DEFINE_integer(
  'vocab_size', 2000, 'Pieces of the tokenizer trained on builtin.'
)
_OBJECTIVE = flags.DEFINE_string('sentence_objective', 'sop', 'sop|nsp|none.')
_SOURCE = flags.DEFINE_string(
  'source', 'builtin', 'Data to read: prepared:DIR, or builtin (prepared first, untimed).'
)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  source = _SOURCE.value or 'builtin'
  if source != 'builtin' and not source.startswith('prepared:'):
    raise UsageError(
      f'--source={source}: give prepared:DIR (prepare it with launch.prepare_data) or builtin'
    )
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  with tempfile.TemporaryDirectory() as tmp:
    if source == 'builtin':
      result = _measure(_prepare_builtin(tmp), 'prepared builtin')
    else:
      directory = source.split(':', 1)[1]
      result = _measure(directory, directory)
  if _JSON.value:
    print(json.dumps(result))
  else:
    print(
      f'{result["examples_per_sec"]:.0f} examples/s at seq '
      f'{result["seq_len"]} ({result["num_examples"]} examples, one core)'
    )


def _prepare_builtin(tmp: str) -> str:
  # Its summary line goes to stderr: stdout holds the result alone (--json).
  with contextlib.redirect_stdout(sys.stderr):
    train_tokenizer(sources.read_sentences('builtin'), f'{tmp}/vocab', vocab_size=_VOCAB_SIZE.value)
  prepared.prepare('builtin', f'{tmp}/vocab', f'{tmp}/prepared', num_workers=1)
  return f'{tmp}/prepared'


def _measure(directory: str, name: str) -> dict:
  """Examples per second of the training pipeline reading `directory`;
  `name` is its source in the record."""
  data = DataConfig(
    source=f'prepared:{directory}',
    eval_documents=0,
    max_seq_length=_MAX_SEQ_LENGTH.value,
    max_predictions_per_seq=_MAX_PREDICTIONS.value,
    sentence_objective=_OBJECTIVE.value,
    num_workers=0,
    prefetch_buffer_size=0,
  )
  tokenizer = prepared.load_tokenizer(directory)
  corpus = pipeline.load_corpus(data, tokenizer)
  ds = pipeline.make_pretraining_dataset(
    corpus.train,
    data,
    tokenizer,
    global_batch_size=_BATCH_SIZE.value,
    shuffle=True,
    process_index=0,
    process_count=1,
  )
  it = iter(ds)
  next(it)  # Warm up.
  num_batches = max(1, _NUM_EXAMPLES.value // _BATCH_SIZE.value)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  seconds = time.perf_counter() - start
  num_examples = num_batches * _BATCH_SIZE.value
  return dict(
    examples_per_sec=num_examples / seconds,
    seq_len=_MAX_SEQ_LENGTH.value,
    max_predictions_per_seq=_MAX_PREDICTIONS.value,
    batch_size=_BATCH_SIZE.value,
    num_examples=num_examples,
    seconds=seconds,
    num_workers=0,
    cores=1,
    sentence_objective=_OBJECTIVE.value,
    vocab_size=tokenizer.vocab_size,
    source=name,
  )


if __name__ == '__main__':
  command_line.run(main)
