r"""Evaluate an exported model on held-out text: MLM loss, accuracy and
perplexity, and sentence-order (SOP) and next-sentence (NSP) accuracy.

  python -m launch.evaluate --model=out/flax --data=text:heldout/*.txt
  python -m launch.evaluate --model=out/flax --data=tfds:lm1b:test \
      --max_seq_length=128 --batch_size=64 --num_batches=20 --json

--data takes the sources of pretraining (builtin, text:GLOB,
tfds:NAME[/CONFIG][:SPLIT], prepared:DIR). Examples are built as the
trainer's evaluation builds them (unshuffled, masks from --seed), so with a
run's data settings and held-out documents, and --num_batches =
train.eval_steps, the numbers are the run's eval_ numbers at the exported
step. Other example settings (masking rate, n-grams) are the pretraining
defaults of experiments/configs/pretrain.py.
"""

import json
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from albert_jax import evaluate
from albert_jax import export
from albert_jax.data import pipeline
from albert_jax.errors import DataError
from albert_jax.train import mesh as mesh_lib
from albert_jax.errors import UsageError
from experiments.configs import pretrain
from launch import command_line

_MODEL = flags.DEFINE_string(
    'model', None, 'Model directory in the flax format (launch.export).')
_DATA = flags.DEFINE_string(
    'data', None, 'Held-out text: builtin, text:GLOB, tfds:NAME[/CONFIG][:SPLIT] '
    'or prepared:DIR.')
_TEXT_FEATURE = flags.DEFINE_string(
    'text_feature', 'text', 'Text feature of a tfds: source.')
_MAX_SEQ_LENGTH = flags.DEFINE_integer(
    'max_seq_length', None,
    "Tokens per example; default: the model's max_position_embeddings, at "
    'most 512.')
_MAX_PREDICTIONS = flags.DEFINE_integer(
    'max_predictions_per_seq', 20, 'Masked positions per example, at most.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Examples per batch.')
_NUM_BATCHES = flags.DEFINE_integer(
    'num_batches', 0, 'Batches per objective; 0: one pass over the examples.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the masks and pairs.')
_OBJECTIVES = flags.DEFINE_multi_enum(
    'objective', list(evaluate.OBJECTIVES), evaluate.OBJECTIVES,
    'Sentence objectives to build examples for (repeat the flag).')
_JSON = flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')

_COLUMNS = ('mlm_loss', 'mlm_accuracy', 'mlm_perplexity', 'sentence_accuracy',
            'examples')


def main(argv: Sequence[str]) -> None:
  command_line.start(argv)
  if not _MODEL.value or not _DATA.value:
    sys.exit('error: pass --model=DIR (from launch.export) and --data=SOURCE '
             '(held-out text)')
  try:
    results = _evaluate()
  except (export.ExportError, DataError, UsageError) as e:
    sys.exit(f'error: {e}')
  if _JSON.value:
    print(json.dumps(results, indent=2))
    return
  print(f'{"objective":<10}' + ''.join(f'{c:>19}' for c in _COLUMNS))
  for objective, metrics in results.items():
    row = dict(metrics, sentence_accuracy=metrics[f'{objective}_accuracy'])
    print(f'{objective:<10}' + ''.join(
        f'{row[c]:>19,.0f}' if c == 'examples' else f'{row[c]:>19.4f}'
        for c in _COLUMNS))


def _evaluate() -> dict[str, dict[str, float]]:
  pretrained = export.load_pretrained(_MODEL.value)
  config = pretrain.get_config('base')
  data = config.data
  data.source = _DATA.value
  data.text_feature = _TEXT_FEATURE.value
  data.eval_documents = 0  # All of --data is held out.
  data.max_seq_length = _MAX_SEQ_LENGTH.value or min(
      512, pretrained.config.max_position_embeddings)
  data.max_predictions_per_seq = _MAX_PREDICTIONS.value
  data.seed = _SEED.value
  documents = pipeline.load_corpus(data, pretrained.tokenizer).train
  mesh = mesh_lib.make_mesh({'data': -1})
  return evaluate.evaluate(
      pretrained, documents, data, batch_size=_BATCH_SIZE.value,
      num_batches=_NUM_BATCHES.value, mesh=mesh,
      rules=tuple(config.sharding_rules), objectives=_OBJECTIVES.value)


if __name__ == '__main__':
  app.run(main)
