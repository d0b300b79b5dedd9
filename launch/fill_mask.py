r"""Fill in the [MASK]s of a text with a model.

  python -m launch.fill_mask --model=out/flax "the cat sat on the [MASK] ."
  python -m launch.fill_mask --model=hf/albert_zh --top_k=3 --json "北京是中国的[MASK]都。"
  python -m launch.fill_mask --model=runs/base --step=5000 "the [MASK] sat on the mat ."

--model is any model path (albert_jax/model_path.py): a flax export, a
Hugging Face directory, a training workdir (latest checkpoint, or --step) or
a hub id in the local Hugging Face cache. The mask token is the model's
vocabulary's ([MASK] for ALBERT and BERT vocabularies).

Prints the top-k tokens and their probabilities for each [MASK]; with --json,
one line per text: a JSON list with one entry per [MASK], each a list of
{"token": str, "score": float}, best first.
"""

import json
from collections.abc import Sequence

from absl import flags

from albert_jax import model_path
from albert_jax.errors import UsageError
from albert_jax.fill_mask import FillMask
from launch import command_line

_MODEL = flags.DEFINE_string(
  'model', None, 'Flax export, Hugging Face directory or hub id, or training workdir.'
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir; default: the latest.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Fills shown per [MASK].', lower_bound=1)
_JSON = flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')


def main(argv: Sequence[str]) -> None:
  texts = argv[1:]
  if not _MODEL.value:
    raise UsageError('pass --model=PATH: a model directory, a hub id or a training workdir')
  if not texts:
    raise UsageError('pass the text to fill, e.g. "the cat sat on the [MASK] ."')
  loaded = model_path.load(_MODEL.value, step=_STEP.value)
  fill = FillMask(loaded.pretrained, source=loaded.description)
  results = [fill(text, top_k=_TOP_K.value) for text in texts]
  for text, masks in zip(texts, results):
    if _JSON.value:
      print(
        json.dumps(
          [[{'token': token, 'score': score} for token, score in fills] for fills in masks],
          ensure_ascii=False,
        )
      )
      continue
    print(text)
    for i, fills in enumerate(masks, start=1):
      print(f'  [MASK] {i}: ' + '  '.join(f'{token!r} {score:.4f}' for token, score in fills))


if __name__ == '__main__':
  command_line.run(main, takes_arguments=True)
