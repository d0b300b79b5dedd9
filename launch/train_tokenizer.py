r"""Trains an ALBERT SentencePiece tokenizer.

  python -m launch.train_tokenizer --source=text:corpus/*.txt \
      --vocab_size=30000 --output=vocab/

--source is any data source (builtin, text:GLOB, tfds:NAME[/CONFIG][:SPLIT]).
Writes OUTPUT/spiece.model (loadable by Hugging Face's AlbertTokenizer) and
OUTPUT/normalization.json (the normalisation, reapplied on load).
"""

from collections.abc import Sequence

from absl import flags

from albert_jax.data import sources
from albert_jax.data.tokenizer import Normalization, train_tokenizer
from launch import command_line

_SOURCE = flags.DEFINE_string('source', 'builtin', 'Data source to train on.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write.', required=True)
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 30000, 'Pieces, at most.')
_TEXT_FEATURE = flags.DEFINE_string('text_feature', 'text', 'Text feature of a tfds: source.')
_LOWERCASE = flags.DEFINE_bool('lowercase', True, 'Lowercase text.')
_STRIP_ACCENTS = flags.DEFINE_bool('strip_accents', True, 'NFKD, then drop combining accents.')
_COLLAPSE_WHITESPACE = flags.DEFINE_bool(
  'collapse_whitespace', True, 'Collapse runs of whitespace.'
)
_CHARACTER_COVERAGE = flags.DEFINE_float(
  'character_coverage', 0.99995, 'Share of characters the vocabulary covers (1.0 keeps every one).'
)
_MAX_SENTENCES = flags.DEFINE_integer(
  'max_sentences', 10_000_000, 'Sentences sampled for training, at most.'
)


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  train_tokenizer(  # Prints what it trained, in one line.
    sources.read_sentences(_SOURCE.value, text_feature=_TEXT_FEATURE.value),
    _OUTPUT.value,
    vocab_size=_VOCAB_SIZE.value,
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
