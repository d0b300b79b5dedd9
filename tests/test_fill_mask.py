"""Fill-mask: the shared tiny model fills masked words of its corpus, English
and Chinese, alike through launch.fill_mask and transformers' own
fill-mask pipeline on the hf export."""

import json

import pytest
import transformers

from albert_jax import pretrained as pretrained_lib
from albert_jax.data.tokenizer import MASK_ID
from albert_jax.fill_mask import FillMask, encode_with_masks

import export_testing

# (text, the word each [MASK] hides)
PROBES = [
  (f'{w} {w} [MASK] {w}{export_testing.sentence_end(w)}', [w])
  for w in ('dogs', 'honey', 'rivers', '猫', '汉字')
] + [
  ('[MASK] bees bees. bees [MASK] bees.', ['bees', 'bees']),
  ('老师 [MASK] 老师 老师。', ['老师']),
]


@pytest.fixture(scope='module')
def fill():
  return FillMask(pretrained_lib.load_pretrained(export_testing.exported('flax')))


def test_mask_is_the_control_id_whatever_the_normalisation(fill):
  tokenizer = fill.tokenizer
  ids = encode_with_masks(tokenizer, 'Dogs [MASK] DOGS [MASK]. [MASK]')
  assert ids == [
    *tokenizer.encode('dogs'),
    MASK_ID,
    *tokenizer.encode('dogs'),
    MASK_ID,
    *tokenizer.encode('.'),
    MASK_ID,
  ]
  # Lowercased as text, "[MASK]" would become ordinary pieces.
  assert MASK_ID not in tokenizer.encode('[MASK]')


@pytest.mark.parametrize('text, words', PROBES)
def test_predicts_the_masked_words(fill, text, words):
  fills = fill(text, top_k=3)
  assert [f[0][0] for f in fills] == words
  for mask_fills in fills:
    scores = [score for _, score in mask_fills]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


def test_transformers_pipeline_gives_the_same_top_1(fill):
  pipeline = transformers.pipeline('fill-mask', model=export_testing.exported('hf'))
  for text, words in PROBES:
    theirs = pipeline(text, top_k=1)
    if len(words) > 1:  # One list per mask.
      theirs = [t[0] for t in theirs]
    ours = fill(text, top_k=1)
    assert [t['token_str'] for t in theirs] == [f[0][0] for f in ours] == words
    assert [t['score'] for t in theirs] == pytest.approx([f[0][1] for f in ours], abs=1e-5)


def test_command_line_prints_json_and_tables():
  model = export_testing.exported('flax')
  result = export_testing.launch(
    'fill_mask',
    f'--model={model}',
    '--top_k=3',
    '--json',
    '猫 猫 [MASK]。',
    'bees [MASK] bees. [MASK] bees bees.',
  )
  assert result.returncode == 0, result.stderr
  first, second = (json.loads(line) for line in result.stdout.splitlines())
  assert len(first) == 1 and len(first[0]) == 3 and first[0][0]['token'] == '猫'
  assert set(first[0][0]) == {'token', 'score'}
  assert [mask[0]['token'] for mask in second] == ['bees', 'bees']

  result = export_testing.launch('fill_mask', f'--model={model}', 'dogs dogs [MASK] dogs.')
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[1].startswith("  [MASK] 1: 'dogs' 0.")

  export_testing.assert_one_line_error(
    export_testing.launch('fill_mask', f'--model={model}', 'no mask here'),
    'the text has no \\[MASK\\]',
  )
  export_testing.assert_one_line_error(
    export_testing.launch('fill_mask', f'--model={export_testing.exported("hf")}', '[MASK] .'),
    'is not an exported model.*convert it with .*--from_hf',
  )
