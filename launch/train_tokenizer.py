r"""Trains an ALBERT tokenizer: SentencePiece unigram or BERT WordPiece.

  python -m launch.train_tokenizer --source=text:corpus/*.txt \
      --vocab_size=30000 --output=vocab/
  python -m launch.train_tokenizer --model_type=wordpiece \
      --source=text:zh/*.txt --vocab_size=21128 --output=vocab_zh/

--source is any raw data source (builtin, text:GLOB, parquet:GLOB, jsonl:GLOB,
tfds:NAME[/CONFIG][:SPLIT]); --text_format, --drop_markup and --language shape
its reading as the data.* keys of the same names.
--model_type=unigram (the default) writes OUTPUT/spiece.model (loadable by
Hugging Face's AlbertTokenizer) and OUTPUT/normalization.json (the
normalisation, reapplied on load). --model_type=wordpiece writes a BERT
vocabulary, OUTPUT/vocab.txt with OUTPUT/tokenizer_config.json (loadable by
BertTokenizer), ids [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, CJK characters
one per word: the usual choice for Chinese.
"""

from collections.abc import Sequence

from absl import flags

from albert_jax.data import sources
from albert_jax.data.tokenizer import MODEL_TYPES, Normalization
from albert_jax.data.vocabulary import train_tokenizer
from launch import command_line, source_flags

# The data-reading flags are this launcher's own: listed by --help.
flags.adopt_module_key_flags(source_flags)

_SOURCE = flags.DEFINE_string('source', 'builtin', 'Data source to train on.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write.', required=True)
_MODEL_TYPE = flags.DEFINE_enum(
  'model_type', 'unigram', MODEL_TYPES, 'SentencePiece unigram, or BERT WordPiece.'
)
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 30000, 'Pieces, at most.')
_LOWERCASE = flags.DEFINE_bool('lowercase', True, 'Lowercase text.')
_STRIP_ACCENTS = flags.DEFINE_bool('strip_accents', True, 'NFKD, then drop combining accents.')
_COLLAPSE_WHITESPACE = flags.DEFINE_bool(
  'collapse_whitespace', True, 'Collapse runs of whitespace (unigram; WordPiece always splits).'
)
_CHARACTER_COVERAGE = flags.DEFINE_float(
  'character_coverage',
  0.99995,
  'Share of characters the vocabulary covers (1.0 keeps every one; unigram only).',
)
_MAX_SENTENCES = flags.DEFINE_integer(
  'max_sentences', 10_000_000, 'Sentences sampled for training, at most.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  train_tokenizer(  # Prints what it trained, in one line.
    sources.read_sentences(
      _SOURCE.value,
      source_flags.options(),
    ),
    _OUTPUT.value,
    vocab_size=_VOCAB_SIZE.value,
    model_type=_MODEL_TYPE.value,
    normalization=Normalization(
      collapse_whitespace=_COLLAPSE_WHITESPACE.value,
      strip_accents=_STRIP_ACCENTS.value,
      lowercase=_LOWERCASE.value,
    ),
    character_coverage=_CHARACTER_COVERAGE.value,
    max_sentences=_MAX_SENTENCES.value,
  )


if __name__ == '__main__':
  command_line.run(main)
