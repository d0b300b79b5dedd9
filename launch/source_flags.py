"""The flags of a raw text source's reading options, shared by the launchers
that read one (train_tokenizer, prepare_data, evaluate): --text_feature,
--text_format, --drop_markup and --language, as `sources.SourceOptions`."""

from absl import flags

from albert_jax.data import sources

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


def options() -> sources.SourceOptions:
  """The reading options the command line gives."""
  return sources.SourceOptions(
    text_feature=_TEXT_FEATURE.value,
    text_format=_TEXT_FORMAT.value,
    drop_markup=_DROP_MARKUP.value,
    language=_LANGUAGE.value,
  )
