"""Fill-mask: the shared tiny model fills masked words of its corpus, English
and Chinese, alike through launch.fill_mask and transformers' own
fill-mask pipeline on the hf export; a Chinese ALBERT made by transformers
(AlbertForMaskedLM, a character-level BERT vocab.txt, or tokenizer.json
alone) fills as transformers' pipeline does."""

import dataclasses
import json
import os
import shutil

import pytest
import torch
import transformers

from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import ExportError
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
  return FillMask(pretrained_lib.load_flax(export_testing.exported('flax')))


def test_mask_is_the_control_id_whatever_the_normalisation(fill):
  tokenizer = fill.tokenizer
  mask = tokenizer.mask_id
  ids = encode_with_masks(tokenizer, 'Dogs [MASK] DOGS [MASK]. [MASK]')
  dogs, stop = tokenizer.encode('dogs'), tokenizer.encode('.')
  assert ids == [*dogs, mask, *dogs, mask, *stop, mask]
  # Lowercased as text, "[MASK]" would become ordinary pieces.
  assert mask not in tokenizer.encode('[MASK]')


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

  # A training workdir is a model path: its checkpoint, not its config.json.
  workdir = export_testing.pretrained_run()[0]
  result = export_testing.launch(
    'fill_mask', f'--model={workdir}', '--step=400', '--json', '猫 猫 [MASK]。'
  )
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)[0][0]['token'] == '猫'


def test_a_model_without_a_trained_mlm_head_is_refused(fill):
  pretrained = pretrained_lib.load_flax(export_testing.exported('flax'))
  untrained = dataclasses.replace(pretrained, initialised=('albert/pooler', 'predictions'))
  with pytest.raises(ExportError, match='runs/x has no masked-LM head') as error:
    FillMask(untrained, source='runs/x')
  assert '\n' not in str(error.value)


# ---------------------------------------------------------------- a Chinese ALBERT

CHARACTERS = '我很高兴你好中国人的是不了在有这个大天学生'
CHINESE_TEXT = '我很[MASK]兴。'


@pytest.fixture(scope='module')
def chinese(tmp_path_factory) -> tuple[str, str]:
  """Two directories of one random AlbertForMaskedLM: with a BERT vocab.txt
  (special tokens not at ALBERT's ids) and with only the tokenizer.json that
  transformers 5 saves."""
  root = tmp_path_factory.mktemp('albert_zh')
  with_vocab, with_json = str(root / 'vocab_txt'), str(root / 'tokenizer_json')
  vocab = ['[PAD]', '[unused1]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '。', *CHARACTERS]
  config = transformers.AlbertConfig(
    vocab_size=len(vocab),
    embedding_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    # Large weights: distinct probabilities, an order that noise cannot swap.
    initializer_range=0.5,
    pad_token_id=0,
    bos_token_id=3,
    eos_token_id=4,
  )
  torch.manual_seed(0)
  transformers.AlbertForMaskedLM(config).save_pretrained(with_vocab)
  with open(os.path.join(with_vocab, 'vocab.txt'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(vocab) + '\n')
  with open(os.path.join(with_vocab, 'tokenizer_config.json'), 'w') as f:
    json.dump(
      {
        'tokenizer_class': 'BertTokenizer',
        'do_lower_case': True,
        'tokenize_chinese_chars': True,
        'model_max_length': 32,
        'pad_token': '[PAD]',
        'unk_token': '[UNK]',
        'cls_token': '[CLS]',
        'sep_token': '[SEP]',
        'mask_token': '[MASK]',
      },
      f,
    )
  os.makedirs(with_json)
  for name in ('config.json', 'model.safetensors'):
    shutil.copy(os.path.join(with_vocab, name), with_json)
  transformers.AutoTokenizer.from_pretrained(with_vocab).save_pretrained(with_json)
  if os.path.exists(os.path.join(with_json, 'vocab.txt')):
    os.remove(os.path.join(with_json, 'vocab.txt'))
  assert os.path.isfile(os.path.join(with_json, 'tokenizer.json'))
  return with_vocab, with_json


@pytest.mark.parametrize('which', [0, 1], ids=['vocab.txt', 'tokenizer.json'])
def test_a_chinese_albert_fills_as_the_transformers_pipeline(chinese, which):
  directory = chinese[which]
  theirs = transformers.pipeline('fill-mask', model=directory)(CHINESE_TEXT, top_k=5)
  result = export_testing.launch(
    'fill_mask', f'--model={directory}', '--top_k=5', '--json', CHINESE_TEXT
  )
  assert result.returncode == 0, result.stderr
  (ours,) = json.loads(result.stdout)
  assert [t['token'] for t in ours] == [t['token_str'] for t in theirs]
  assert [t['score'] for t in ours] == pytest.approx([t['score'] for t in theirs], abs=1e-4)
