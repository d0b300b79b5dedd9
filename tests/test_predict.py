"""Fine-tuned models out: launch.export writes a fine-tuning run as the
transformers class of its head, whose outputs equal launch.predict's; a
fine-tuned Hugging Face classifier fine-tunes on from its own head."""

import json
import os
import random
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import transformers

from albert_jax import model_path
from albert_jax import pretrained as pretrained_lib
from albert_jax.finetune import buckets, classification, span_qa, trainer
from albert_jax.finetune import predict as predict_lib
from albert_jax.train import mesh as mesh_lib

import export_testing

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def classifier_hf(tmp_path_factory) -> str:
  """The classification run exported by launch.export --format=hf."""
  workdir = export_testing.finetuned('classification')
  output = str(tmp_path_factory.mktemp('export') / 'hf')
  result = export_testing.launch(
    'export', f'--model={workdir}', '--format=hf', f'--output={output}'
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (
    f'wrote step 30 of {workdir} (fine-tuning run, classification) to {output} (hf)'
  )
  return output


def _predict(tmp_path, model: str, task: str, input_path: str) -> str:
  output = str(tmp_path / f'{task}.out')
  result = export_testing.launch(
    'predict', f'--model={model}', f'--input={input_path}', f'--output={output}', '--batch_size=16'
  )
  assert result.returncode == 0, result.stderr
  # How many shapes were compiled, then what was written.
  assert result.stdout.splitlines()[-1].startswith('wrote '), result.stdout
  assert 'compiled shapes' in result.stdout.splitlines()[0]
  return output


def test_classification_predictions_equal_transformers(classifier_hf, tmp_path):
  workdir = export_testing.finetuned('classification')
  # Unlabelled input, pairs of words the training texts never mixed.
  rows = ['dogs cats', 'honey bones mice', 'birds', '鱼 rivers', 'bees bees honey']
  input_path = tmp_path / 'input.tsv'
  input_path.write_text('text\n' + '\n'.join(rows) + '\n')
  output = _predict(tmp_path, workdir, 'classification', str(input_path))
  with open(output) as f:
    ours = [json.loads(line) for line in f]

  model = transformers.AlbertForSequenceClassification.from_pretrained(classifier_hf).eval()
  assert model.config.id2label == {0: 'animal', 1: 'thing'}
  tokenizer = transformers.AutoTokenizer.from_pretrained(classifier_hf)
  batch = tokenizer(rows, padding=True, return_tensors='pt')
  with torch.no_grad():
    probabilities = torch.softmax(model(**batch).logits, -1).numpy()
  assert len(ours) == len(rows)
  for row, expected in zip(ours, probabilities):
    assert row['label'] == model.config.id2label[int(np.argmax(expected))]
    np.testing.assert_allclose(
      [row['probabilities'][label] for label in ('animal', 'thing')], expected, **TOL
    )
  assert {row['label'] for row in ours} == {'animal', 'thing'}

  # The output is never overwritten.
  export_testing.assert_one_line_error(
    export_testing.launch(
      'predict', f'--model={workdir}', f'--input={input_path}', f'--output={output}'
    ),
    'exists: choose a new --output',
  )


def test_span_qa_predictions_equal_transformers(tmp_path):
  workdir = export_testing.finetuned('span_qa')
  hf_dir = str(tmp_path / 'hf')
  result = export_testing.launch(
    'export', f'--model={workdir}', '--format=hf', f'--output={hf_dir}'
  )
  assert result.returncode == 0, result.stderr
  dev = os.path.join(os.path.dirname(workdir), 'dev.json')
  output = _predict(tmp_path, workdir, 'span_qa', dev)
  with open(output) as f:
    ours = json.load(f)

  # transformers' logits on the same windows, decoded the same way.
  model = transformers.AlbertForQuestionAnswering.from_pretrained(hf_dir).eval()
  loaded = model_path.load(workdir)
  examples = span_qa.read_squad(dev, answered=False)
  features, mapping = span_qa.encode(
    examples, loaded.pretrained.tokenizer, max_seq_length=32, doc_stride=128, max_query_length=64
  )
  with torch.no_grad():
    outputs = model(
      input_ids=torch.from_numpy(features['input_ids']).long(),
      attention_mask=torch.from_numpy(features['input_mask']).long(),
      token_type_ids=torch.from_numpy(features['segment_ids']).long(),
    )
  theirs = span_qa.decode(
    examples,
    mapping,
    outputs.start_logits.numpy(),
    outputs.end_logits.numpy(),
    max_answer_length=30,
  )
  assert ours == theirs and len(ours) == len(examples) == 32
  # The tokenizer transformers loads gives the ids fine-tuning used.
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  question = examples[0].question
  assert tokenizer(question)['input_ids'] == [
    loaded.pretrained.tokenizer.cls_id,
    *loaded.pretrained.tokenizer.encode(question),
    loaded.pretrained.tokenizer.sep_id,
  ]


@pytest.mark.parametrize('task', ['classification', 'span_qa'])
def test_bucketed_batches_give_the_outputs_of_fixed_padding(task, capsys):
  workdir = export_testing.finetuned(task)
  pretrained = model_path.load(workdir).pretrained
  if task == 'classification':
    rng = random.Random(0)
    words = export_testing.ANIMALS + export_testing.THINGS
    texts = [' '.join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(37)]
    examples = [classification.Example(text, None, None) for text in texts]
    features = classification.encode(examples, pretrained.tokenizer, pretrained.head.labels, 32)
  else:
    examples = span_qa.read_squad(os.path.join(os.path.dirname(workdir), 'dev.json'))
    features, _ = span_qa.encode(
      examples, pretrained.tokenizer, max_seq_length=32, doc_stride=128, max_query_length=64
    )
  # Rows for several buckets.
  needed = {buckets.bucket_length(n, 8, 32) for n in features['input_mask'].sum(1).tolist()}
  assert len(needed) >= 2
  outputs = {
    multiple: predict_lib.task_outputs(
      pretrained,
      task,
      features,
      batch_size=8,
      bucket_multiple=multiple,
      mesh=mesh_lib.make_mesh({'data': -1}),
      rules=mesh_lib.DEFAULT_RULES,
    )
    for multiple in (0, 8)
  }
  printed = capsys.readouterr().out
  assert 'prediction batches of 8: 1 compiled shapes (seq 32)' in printed
  # Rows in order of length: each bucket the rows need is compiled once.
  count, shapes = re.findall(r'batches of 8: (\d) compiled shapes \(seq ([\d, ]+)\)', printed)[-1]
  shapes = {int(n) for n in shapes.split(', ')}
  assert shapes <= needed and int(count) == len(shapes) >= 2
  real = features['input_mask'].astype(bool)
  for name, fixed in outputs[0].items():
    bucketed = outputs[8][name]
    assert bucketed.shape == fixed.shape
    if name in predict_lib.SEQUENCE_OUTPUTS:  # Per position: the real ones.
      bucketed, fixed = bucketed[real], fixed[real]
    np.testing.assert_allclose(bucketed, fixed, **TOL)


def test_flax_export_of_a_finetuning_run_keeps_its_head(tmp_path):
  workdir = export_testing.finetuned('span_qa')
  output = str(tmp_path / 'flax')
  result = export_testing.launch('export', f'--model={workdir}', f'--output={output}')
  assert result.returncode == 0, result.stderr
  exported, run = model_path.load(output).pretrained, model_path.load(workdir).pretrained
  assert exported.head.task == 'span_qa' and exported.head.labels == ()
  for a, b in zip(jax.tree.leaves(exported.head.params), jax.tree.leaves(run.head.params)):
    np.testing.assert_array_equal(a, b)
  export_testing.assert_one_line_error(
    export_testing.launch(
      'predict',
      f'--model={export_testing.exported("flax")}',
      '--task=span_qa',
      f'--input={os.path.join(os.path.dirname(workdir), "dev.json")}',
      f'--output={tmp_path / "out.json"}',
    ),
    'the model has no fine-tuning head, not a span_qa one: fine-tune it first',
  )
  assert not os.path.exists(tmp_path / 'out.json')


def test_a_hugging_face_classifier_finetunes_from_its_own_head(classifier_hf, tmp_path, capsys):
  # As transformers saves it: default label names, tokenizer.json only.
  saved = str(tmp_path / 'saved')
  model = transformers.AlbertForSequenceClassification.from_pretrained(classifier_hf)
  model.config.id2label = {0: 'LABEL_0', 1: 'LABEL_1'}
  model.config.label2id = {'LABEL_0': 0, 'LABEL_1': 1}
  model.save_pretrained(saved)
  transformers.AutoTokenizer.from_pretrained(classifier_hf).save_pretrained(saved)
  loaded = model_path.load(saved)
  assert loaded.pretrained.head.labels == ('LABEL_0', 'LABEL_1')

  root = os.path.dirname(export_testing.finetuned('classification'))
  # One step of learning rate 0 (warmup): the checkpoint holds the start.
  config = export_testing.finetune_config(
    'classification', 1, train=os.path.join(root, 'train.tsv'), eval=''
  )
  workdir = str(tmp_path / 'run')
  trainer.finetune(config, loaded.pretrained, workdir, source=loaded.description)
  assert f'starting from the classification head (animal, thing) of {loaded.description}' in (
    capsys.readouterr().out
  )
  started = ocp.StandardCheckpointer().restore(os.path.join(workdir, 'checkpoints', '1', 'state'))
  np.testing.assert_array_equal(
    started['params']['classifier']['kernel'],
    loaded.pretrained.head.params['classifier']['kernel'],
  )
  # The run records the data's class names for the head it carries on.
  assert pretrained_lib.load_definition(os.path.join(workdir, 'model')).labels == (
    'animal',
    'thing',
  )


def test_unlabelled_inputs_and_known_classes(tmp_path):
  single = tmp_path / 'single.csv'
  single.write_text('just text\nmore text\n')
  assert classification.read_examples(str(single), labelled=False) == [
    classification.Example('just text', None, None),
    classification.Example('more text', None, None),
  ]
  header = tmp_path / 'pairs.tsv'
  header.write_text('a\tb\nx\ty\n')
  assert classification.read_examples(
    str(header), text_feature='a', text_b_feature='b', labelled=False
  ) == [classification.Example('x', 'y', None)]
  ex = classification.Example
  train = [ex('a', None, 'pos'), ex('b', None, 'neg')]
  # A head's own order of the same classes is kept.
  assert classification.label_classes(train, [], known=('pos', 'neg')) == ['pos', 'neg']
  assert classification.label_classes(train, [], known=('LABEL_0', 'LABEL_1')) == ['neg', 'pos']
