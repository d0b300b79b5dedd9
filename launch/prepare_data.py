r"""Tokenizes a corpus once into ArrayRecord shards, for `prepared:DIR`.

  python -m launch.prepare_data --source=text:corpus/*.txt.gz \
      --vocab=vocab/ --output=prepared/

Then train with --config.data.source=prepared:prepared/ (the vocabulary is
read from prepared/vocab/). The source's parts (its files, or ranges of tfds
records) are read, tokenized and written in --num_workers processes, one part
per process at a time; masks are drawn on the fly at training time, fresh
each epoch. Writing goes into prepared.partial/, renamed to prepared/ at the
end: after a crash or a kill, the same command resumes there, keeping the
finished parts.
"""

import os
from collections.abc import Sequence

from absl import flags

from albert_jax.data import prepared, sources
from launch import command_line

_SOURCE = flags.DEFINE_string('source', 'builtin', 'Data source to tokenize.')
_VOCAB = flags.DEFINE_string(
  'vocab', None, 'Tokenizer directory (spiece.model, tokenizer.json or vocab.txt).', required=True
)
_OUTPUT = flags.DEFINE_string('output', None, 'New directory to write.', required=True)
_TEXT_FEATURE = flags.DEFINE_string(
  'text_feature', 'text', 'Text column, field or feature of a parquet:, jsonl: or tfds: source.'
)
_TEXT_FORMAT = flags.DEFINE_enum(
  'text_format',
  'lines',
  sources.TEXT_FORMATS,
  "text: files: a sentence per line ('lines') or each file one document of prose paragraphs.",
)
_DROP_MARKUP = flags.DEFINE_bool(
  'drop_markup', False, 'Drop code and table lines (albert_jax/data/markup.py).'
)
_LANGUAGE = flags.DEFINE_string('language', 'en', "The sentence splitter's language (ISO 639).")
_NUM_WORKERS = flags.DEFINE_integer('num_workers', os.cpu_count() or 1, 'Tokenizing processes.')
_DOCUMENTS_PER_SHARD = flags.DEFINE_integer(
  'documents_per_shard', 100_000, 'Documents per ArrayRecord file.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  metadata = prepared.prepare(
    _SOURCE.value,
    _VOCAB.value,
    _OUTPUT.value,
    options=sources.SourceOptions(
      text_feature=_TEXT_FEATURE.value,
      text_format=_TEXT_FORMAT.value,
      drop_markup=_DROP_MARKUP.value,
      language=_LANGUAGE.value,
    ),
    num_workers=_NUM_WORKERS.value,
    documents_per_shard=_DOCUMENTS_PER_SHARD.value,
    progress=True,
  )
  print(
    f'wrote {_OUTPUT.value}: {metadata["num_documents"]} documents, '
    f'{metadata["num_tokens"]} tokens in {len(metadata["shards"])} shards'
  )


if __name__ == '__main__':
  command_line.run(main)
