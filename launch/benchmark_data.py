r"""Measures input-pipeline throughput, in examples per second.

  python -m launch.benchmark_data --seq_len=512 --json

One process pinned to one core, num_workers=0 (no worker processes, no
prefetch thread), reading prepared data: builtin is tokenized and prepared
into a temporary directory first (not timed) unless --prepared=DIR is given.
Prints one JSON object with --json, a line of text otherwise.
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

from albert_jax.data import pipeline, prepared, sources
from albert_jax.errors import DataError
from albert_jax.data.tokenizer import train_tokenizer
from experiments.configs import pretrain
from launch import command_line

_SEQ_LEN = flags.DEFINE_integer('seq_len', 512, 'max_seq_length.')
_MAX_PREDICTIONS = flags.DEFINE_integer('max_predictions', 20,
                                        'max_predictions_per_seq.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Examples per batch.')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', 20_000,
                                     'Examples timed.')
_VOCAB_SIZE = flags.DEFINE_integer(
    'vocab_size', 2000, 'Pieces of the tokenizer trained on builtin.')
_OBJECTIVE = flags.DEFINE_string('sentence_objective', 'sop', 'sop|nsp|none.')
_PREPARED = flags.DEFINE_string('prepared', '',
                                'Prepared data to read; empty: builtin.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')


def main(argv):
  command_line.check_no_arguments(argv)
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  try:
    with tempfile.TemporaryDirectory() as tmp:
      directory = _PREPARED.value or _prepare_builtin(tmp)
      result = _measure(directory)
  except DataError as e:
    sys.exit(f'error: {e}')
  if _JSON.value:
    print(json.dumps(result))
  else:
    print(f'{result["examples_per_sec"]:.0f} examples/s at seq '
          f'{result["seq_len"]} ({result["num_examples"]} examples, one core)')


def _prepare_builtin(tmp: str) -> str:
  train_tokenizer(sources.read_sentences('builtin'), f'{tmp}/vocab',
                  vocab_size=_VOCAB_SIZE.value)
  prepared.prepare('builtin', f'{tmp}/vocab', f'{tmp}/prepared', num_workers=1)
  return f'{tmp}/prepared'


def _measure(directory: str) -> dict:
  data = pretrain.get_config('tiny').data
  data.source = f'prepared:{directory}'
  data.eval_documents = 0
  data.max_seq_length = _SEQ_LEN.value
  data.max_predictions_per_seq = _MAX_PREDICTIONS.value
  data.sentence_objective = _OBJECTIVE.value
  data.num_workers = 0
  data.prefetch_buffer_size = 0
  tokenizer = prepared.load_tokenizer(directory)
  corpus = pipeline.load_corpus(data, tokenizer)
  ds = pipeline.make_pretraining_dataset(
      corpus.train, data, tokenizer, global_batch_size=_BATCH_SIZE.value,
      shuffle=True, process_index=0, process_count=1)
  it = iter(ds)
  next(it)  # Warm up.
  num_batches = max(1, _NUM_EXAMPLES.value // _BATCH_SIZE.value)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  seconds = time.perf_counter() - start
  num_examples = num_batches * _BATCH_SIZE.value
  return dict(examples_per_sec=num_examples / seconds, seq_len=_SEQ_LEN.value,
              max_predictions_per_seq=_MAX_PREDICTIONS.value,
              batch_size=_BATCH_SIZE.value, num_examples=num_examples,
              seconds=seconds, num_workers=0, cores=1,
              sentence_objective=_OBJECTIVE.value,
              vocab_size=tokenizer.vocab_size,
              source=directory if _PREPARED.value else 'prepared builtin')


if __name__ == '__main__':
  app.run(main)
