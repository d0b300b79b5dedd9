r"""Fill in the [MASK]s of a text with an exported model.

  python -m launch.fill_mask --model=out/flax "the cat sat on the [MASK] ."
  python -m launch.fill_mask --model=out/flax --top_k=3 --json "北京是中国的[MASK]都。"

Prints the top-k tokens and their probabilities for each [MASK]; with --json,
one line per text: a JSON list with one entry per [MASK], each a list of
{"token": str, "score": float}, best first.
"""

import json
from collections.abc import Sequence

from absl import flags

from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import UsageError
from albert_jax.fill_mask import FillMask
from launch import command_line

_MODEL = flags.DEFINE_string('model', None, 'Model directory in the flax format (launch.export).')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Fills shown per [MASK].', lower_bound=1)
_JSON = flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')


def main(argv: Sequence[str]) -> None:
  texts = argv[1:]
  if not _MODEL.value:
    raise UsageError('pass --model=DIR, a model written by launch.export')
  if not texts:
    raise UsageError('pass the text to fill, e.g. "the cat sat on the [MASK] ."')
  fill = FillMask(pretrained_lib.load_pretrained(_MODEL.value))
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
