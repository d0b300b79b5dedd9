r"""Tokenizes a corpus once into ArrayRecord shards, for `prepared:DIR`.

  python -m launch.prepare_data --source=text:corpus/*.txt.gz \
      --vocab=vocab/ --output=prepared/

Then train with --config.data.source=prepared:prepared/ (the vocabulary is
read from prepared/vocab/). The source's parts (its files, or ranges of tfds
records) are read, tokenized and written in --num_workers processes, one part
per process at a time; masks are drawn on the fly at training time, fresh
each epoch. Writing goes into prepared.partial/, renamed to prepared/ at the
end: after a crash or a kill, the same command resumes there, keeping the
finished parts. SIGTERM or Ctrl-C stops the workers first and says how many
parts are kept (exit status 143 or 130).

  python -m launch.prepare_data --verify=prepared/

checks every shard of prepared/ against the sizes and sha256 checksums of its
metadata.json (training checks them too, as it starts).
"""

import os
import signal
from collections.abc import Sequence

from absl import flags

from albert_jax.data import prepared
from albert_jax.errors import Interrupted, UsageError
from launch import command_line, source_flags

# The data-reading flags are this launcher's own: listed by --help.
flags.adopt_module_key_flags(source_flags)

_SOURCE = flags.DEFINE_string('source', 'builtin', 'Data source to tokenize.')
_VOCAB = flags.DEFINE_string(
  'vocab', None, 'Tokenizer directory (spiece.model, tokenizer.json or vocab.txt).'
)
_OUTPUT = flags.DEFINE_string('output', None, 'New directory to write.')
_VERIFY = flags.DEFINE_string(
  'verify', None, 'Check the prepared data in this directory (sizes, sha256) and exit.'
)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', os.cpu_count() or 1, 'Tokenizing processes.')
_DOCUMENTS_PER_SHARD = flags.DEFINE_integer(
  'documents_per_shard', 100_000, 'Documents per ArrayRecord file.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  if _VERIFY.value:
    metadata = prepared.verify(_VERIFY.value.rstrip('/'))
    print(f'{_VERIFY.value}: all {len(metadata["shards"])} shards match {prepared.METADATA_FILE}')
    return
  for name, value in (('vocab', _VOCAB.value), ('output', _OUTPUT.value)):
    if not value:
      raise UsageError(f'--{name} is required (or --verify=DIR to check prepared data)')
  signal.signal(signal.SIGTERM, _stop)
  metadata = prepared.prepare(
    _SOURCE.value,
    _VOCAB.value,
    _OUTPUT.value,
    options=source_flags.options(),
    num_workers=_NUM_WORKERS.value,
    documents_per_shard=_DOCUMENTS_PER_SHARD.value,
    progress=True,
  )
  print(
    f'wrote {_OUTPUT.value}: {metadata["num_documents"]} documents, '
    f'{metadata["num_tokens"]} tokens in {len(metadata["shards"])} shards'
  )


def _stop(signum, frame) -> None:
  """SIGTERM as an exception in the main thread: prepare stops its workers
  and says what it kept."""
  del frame
  raise Interrupted('stopped by SIGTERM: rerun the same command to resume', signum)


if __name__ == '__main__':
  command_line.run(main)
