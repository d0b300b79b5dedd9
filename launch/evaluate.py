r"""Evaluate a model on held-out text: MLM loss, accuracy and perplexity,
and sentence-order (SOP) and next-sentence (NSP) accuracy.

  python -m launch.evaluate --model=out/flax --source=text:heldout/*.txt
  python -m launch.evaluate --model=path/to/hf_albert --source=tfds:lm1b:test \
      --max_seq_length=128 --batch_size=64 --num_batches=20 --json
  python -m launch.evaluate --model=runs/base --step=5000 --source=text:heldout/*.txt

--model is any model path (albert_jax/model_path.py): a flax export, a
Hugging Face directory, a training workdir (latest checkpoint, or --step) or
a hub id in the local Hugging Face cache. A model loaded without an MLM or
sentence head (initialised on loading) gets a warning: its numbers are those
of random weights.

--source takes the sources of pretraining (builtin, text:GLOB, parquet:GLOB,
jsonl:GLOB, tfds:NAME[/CONFIG][:SPLIT], prepared:DIR), read as
--text_format, --drop_markup and --language say. Examples are built as the
trainer's evaluation builds them (unshuffled, masks from --seed), so with a
run's data settings and held-out documents, and --num_batches =
train.eval_steps, the numbers are the run's eval_ numbers at the exported
step. Other example settings (masking rate, n-grams) are the pretraining
defaults of experiments/configs/pretrain.py.
"""

import dataclasses
import json
from collections.abc import Sequence

from absl import flags, logging

from albert_jax import evaluate, model_path
from albert_jax.data import pipeline
from albert_jax.data.config import DataConfig
from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib
from launch import command_line, source_flags

# The data-reading flags are this launcher's own: listed by --help.
flags.adopt_module_key_flags(source_flags)

_MODEL = flags.DEFINE_string(
  'model', None, 'Flax export, Hugging Face directory or hub id, or training workdir.'
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir; default: the latest.')
_SOURCE = flags.DEFINE_string(
  'source', None, 'Held-out text: builtin, text:GLOB, tfds:NAME[/CONFIG][:SPLIT] or prepared:DIR.'
)
_MAX_SEQ_LENGTH = flags.DEFINE_integer(
  'max_seq_length',
  None,
  "Tokens per example; default: the model's max_position_embeddings, at most 512.",
)
_MAX_PREDICTIONS = flags.DEFINE_integer(
  'max_predictions_per_seq', 20, 'Masked positions per example, at most.'
)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Examples per batch.', lower_bound=1)
_NUM_BATCHES = flags.DEFINE_integer(
  'num_batches', 0, 'Batches per objective; 0: one pass over the examples.', lower_bound=0
)
_BUCKET_MULTIPLE = flags.DEFINE_integer(
  'bucket_multiple',
  32,
  'Each batch padded to the next multiple of this holding its longest example '
  '(the same numbers, less padding); 0: every batch at --max_seq_length.',
  lower_bound=0,
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the masks and pairs.')
_OBJECTIVES = flags.DEFINE_multi_enum(
  'objective',
  list(evaluate.OBJECTIVES),
  evaluate.OBJECTIVES,
  'Sentence objectives to build examples for (repeat the flag).',
)
_JSON = flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')

_COLUMNS = ('mlm_loss', 'mlm_accuracy', 'mlm_perplexity', 'sentence_accuracy', 'examples')


def main(argv: Sequence[str]) -> None:
  del argv  # Flags only.
  if not _MODEL.value or not _SOURCE.value:
    raise UsageError('pass --model=PATH (a model or workdir) and --source=SOURCE (held-out text)')
  results = _evaluate()
  if _JSON.value:
    print(json.dumps(results, indent=2))
    return
  print(f'{"objective":<10}' + ''.join(f'{c:>19}' for c in _COLUMNS))
  for objective, metrics in results.items():
    row = dict(metrics, sentence_accuracy=metrics[f'{objective}_accuracy'])
    print(
      f'{objective:<10}'
      + ''.join(f'{row[c]:>19,.0f}' if c == 'examples' else f'{row[c]:>19.4f}' for c in _COLUMNS)
    )


def _evaluate() -> dict[str, dict[str, float]]:
  loaded = model_path.load(_MODEL.value, step=_STEP.value)
  pretrained = loaded.pretrained
  untrained = [p for p in pretrained.initialised if p in ('predictions', 'sop_classifier')]
  if untrained:
    logging.warning(
      '%s has no trained %s: its numbers are those of a random head',
      loaded.description,
      ' or '.join(untrained),
    )
  data = DataConfig(
    source=_SOURCE.value,
    **dataclasses.asdict(source_flags.options()),
    eval_documents=0,  # All of --source is held out.
    max_seq_length=_MAX_SEQ_LENGTH.value or min(512, pretrained.config.max_position_embeddings),
    max_predictions_per_seq=_MAX_PREDICTIONS.value,
    seed=_SEED.value,
  )
  documents = pipeline.load_corpus(data, pretrained.tokenizer).train
  return evaluate.evaluate(
    pretrained,
    documents,
    data,
    batch_size=_BATCH_SIZE.value,
    num_batches=_NUM_BATCHES.value,
    mesh=mesh_lib.make_mesh({'data': -1}),
    rules=mesh_lib.DEFAULT_RULES,
    objectives=_OBJECTIVES.value,
    bucket_multiple=_BUCKET_MULTIPLE.value,
  )


if __name__ == '__main__':
  command_line.run(main)
