"""Fine-tuning the shared tiny model: classification from TSV / CSV / TFDS,
span QA in SQuAD format, their metrics, and the launcher.

Both synthetic tasks are made from the pretraining words (export_testing):
texts of animal words vs. texts of thing words; contexts of filler words
holding one animal and one thing, asked "which animal?" / "which thing?".
"""

import dataclasses
import os
import random
import re

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from albert_jax import pretrained as pretrained_lib
from albert_jax.config import ModelConfig
from albert_jax.errors import DataError, ExportError, UsageError
from albert_jax.finetune import buckets, classification, span_qa, trainer
from albert_jax.finetune.config import FinetuneConfig, describe_optimizer
from albert_jax.train.config import PretrainConfig
from experiments.configs import finetune as finetune_config
from experiments.configs import pretrain as pretrain_config

import export_testing
import train_testing

_write_classification = export_testing.write_classification
_write_squad = export_testing.write_squad


@pytest.fixture(scope='module')
def tokenizer():
  return pretrained_lib.load_flax(export_testing.exported('flax')).tokenizer


# ---------------------------------------------------------------- classification data


def test_reads_tsv_and_csv_with_or_without_a_header(tmp_path):
  tsv = tmp_path / 'glue.tsv'
  tsv.write_text(
    'id\tsentence1\tsentence2\tlabel\n0\tA "quoted" one\tB\tentailment\n1\tC\tD\tneutral\n'
  )
  examples = classification.read_examples(
    str(tsv), text_feature='sentence1', text_b_feature='sentence2'
  )
  assert examples == [
    classification.Example('A "quoted" one', 'B', 'entailment'),
    classification.Example('C', 'D', 'neutral'),
  ]
  pairs = tmp_path / 'pairs.csv'
  pairs.write_text('"one, two",three,1\nfour,five,0\n\n')
  assert classification.read_examples(str(pairs)) == [
    classification.Example('one, two', 'three', '1'),
    classification.Example('four', 'five', '0'),
  ]
  single = tmp_path / 'single.csv'
  single.write_text('just text,positive\n')
  assert classification.read_examples(str(single)) == [
    classification.Example('just text', None, 'positive')
  ]

  with pytest.raises(
    DataError, match="has no column 'sentence'.*its header is id, sentence1, sentence2, label"
  ):
    classification.read_examples(str(tsv), text_feature='sentence')
  binary = tmp_path / 'binary.tsv'
  binary.write_bytes(b'\0\1\2text\tlabel\n')
  with pytest.raises(DataError, match='looks binary'):
    classification.read_examples(str(binary))
  with pytest.raises(DataError, match='not found'):
    classification.read_examples(str(tmp_path / 'missing.tsv'))
  with pytest.raises(DataError, match='unknown classification source'):
    classification.read_examples(str(tmp_path / 'data.json'))


def test_reads_tfds_without_tensorflow():
  with tfds.testing.mock_data(num_examples=6):
    examples = classification.read_examples('tfds:imdb_reviews:train')
    with pytest.raises(DataError, match="no feature 'sentence'.*label, text"):
      classification.read_examples('tfds:imdb_reviews:train', text_feature='sentence')
  assert len(examples) == 6 and all(e.text for e in examples)
  assert {e.label for e in examples} <= {'0', '1'}
  assert classification.label_classes(examples, []) == ['0', '1']


def test_labels_and_features(tokenizer):
  ex = classification.Example
  train = [ex('a', None, 'pos'), ex('b', None, 'neg')]
  assert classification.label_classes(train, [ex('c', None, 'pos')]) == ['neg', 'pos']
  with pytest.raises(DataError, match="eval label 'other' never occurs"):
    classification.label_classes(train, [ex('c', None, 'other')])
  assert classification.label_classes([ex('a', None, '2')], []) == ['0', '1', '2']

  pair = ex('dogs dogs dogs dogs', 'cats', 'pos')
  features = classification.encode([pair], tokenizer, ['neg', 'pos'], 7)
  dogs, cats = tokenizer.encode('dogs'), tokenizer.encode('cats')
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  # 4 tokens left for the pair: the longer text is trimmed from its end.
  assert features['input_ids'][0].tolist() == [cls, *dogs * 3, sep, *cats, sep]
  assert features['segment_ids'][0].tolist() == [0, 0, 0, 0, 0, 1, 1]
  assert features['input_mask'][0].tolist() == [1] * 7
  assert features['label'].tolist() == [1]


def test_classification_metrics():
  metrics = classification.classification_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 2)
  assert metrics == {'accuracy': 0.75, 'f1': pytest.approx(2 / 3)}
  macro = classification.classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), 3)
  assert macro == {'accuracy': 0.75, 'macro_f1': pytest.approx((1 + 2 / 3 + 2 / 3) / 3)}


# ---------------------------------------------------------------- batches at their real lengths


def test_a_batch_is_cut_to_its_bucket_length():
  assert [buckets.bucket_length(n, 32, 128) for n in (1, 32, 33, 100, 128)] == [
    32,
    32,
    64,
    128,
    128,
  ]
  assert buckets.bucket_length(5, 32, 48) == 32 and buckets.bucket_length(40, 32, 48) == 48
  assert buckets.bucket_length(5, 0, 128) == 128  # 0: fixed padding.
  mask = np.zeros((2, 32), np.int32)
  mask[0, :3], mask[1, :10] = 1, 1
  ids = np.arange(64, dtype=np.int32).reshape(2, 32) * mask
  batch = {'input_ids': ids, 'input_mask': mask, 'segment_ids': mask, 'label': np.array([0, 1])}
  cut = buckets.trim(batch, 8)
  assert cut['input_ids'].shape == (2, 16) and cut['label'].tolist() == [0, 1]
  np.testing.assert_array_equal(cut['input_ids'], ids[:, :16])
  assert buckets.trim(batch, 0)['input_ids'].shape == (2, 32)


def test_length_groups_keep_batches_random_and_change_every_epoch():
  lengths = np.random.default_rng(0).integers(1, 100, 1005)
  grouped = lambda epoch, groups=5: buckets.grouped_batches(
    lengths, 10, seed=3, epoch=epoch, group_batches=groups
  )
  epoch_0 = grouped(0)
  assert epoch_0.shape == (100, 10) and len(set(epoch_0.ravel().tolist())) == 1000
  np.testing.assert_array_equal(grouped(0), epoch_0)  # Deterministic: resumable.
  assert not np.array_equal(grouped(1), epoch_0)  # Reshuffled every epoch.
  spread = lambda batches: np.mean(np.ptp(lengths[batches], axis=1))
  plain = grouped(0, groups=1)
  # Rows of a batch have similar lengths; batches come in random order.
  assert spread(epoch_0) < spread(plain) / 4
  means = lengths[epoch_0].mean(axis=1)
  assert not (np.all(np.diff(means) >= 0) or np.all(np.diff(means) <= 0))


def _varied_lengths(path: str, count: int) -> str:
  """A TSV of animal / thing texts of 1 to 28 words (3 to 30 tokens)."""
  rng = random.Random(0)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('text\tlabel\n')
    for _ in range(count):
      label = rng.choice(['animal', 'thing'])
      words = export_testing.ANIMALS if label == 'animal' else export_testing.THINGS
      f.write(' '.join(rng.choice(words) for _ in range(rng.randint(1, 28))) + f'\t{label}\n')
  return path


def test_training_batches_are_bucketed_and_resume_exactly(tmp_path, capsys):
  train = _varied_lengths(str(tmp_path / 'train.tsv'), 100)
  config = export_testing.finetune_config('classification', 12, train=train, bucket_multiple=8)
  prepared = trainer.prepare(config, pretrained_lib.load_flax(export_testing.exported('flax')))
  batches = prepared.batches
  assert batches.per_epoch == 3  # 100 rows: 3 batches of 32 an epoch.
  lengths = batches.padded_lengths(0, 12)
  shapes = sorted(set(lengths.tolist()))
  assert set(shapes) <= {8, 16, 24, 32} and len(shapes) >= 2
  assert f'{len(shapes)} compiled train shapes (seq {", ".join(map(str, shapes))})' in (
    capsys.readouterr().out
  )
  features = prepared.task.train
  dataset = grain.MapDataset.source(batches).to_iter_dataset()
  straight = iter(dataset)
  seen = [next(straight) for _ in range(12)]
  for index, batch in enumerate(seen):
    rows, width = batches.rows(index), int(lengths[index])
    assert batch['input_ids'].shape == (32, width)
    assert width == buckets.bucket_length(int(features['input_mask'][rows].sum(1).max()), 8, 32)
    np.testing.assert_array_equal(batch['input_ids'], features['input_ids'][rows, :width])
    np.testing.assert_array_equal(batch['label'], features['label'][rows])
  # Every row once an epoch, in another order the next.
  epochs = [np.concatenate([batches.rows(3 * e + i) for i in range(3)]) for e in range(2)]
  assert len(set(epochs[0].tolist())) == 96 and not np.array_equal(epochs[0], epochs[1])
  # A checkpointed iterator goes on with the same batches (grain's state).
  resumed = iter(dataset)
  for _ in range(5):
    next(resumed)
  state = resumed.get_state()
  again = iter(dataset)
  again.set_state(state)
  for expected in seen[5:]:
    jax.tree.map(np.testing.assert_array_equal, next(again), expected)


# ---------------------------------------------------------------- span QA data


def test_squad_normalisation_and_metrics():
  assert span_qa.normalize_answer('The  Cat, sat!') == 'cat sat'
  example = span_qa.QAExample(
    id='q', question='?', words=('x',), answers=('the old dogs', 'dogs'), answer_words=(0, 0)
  )
  # SQuAD's 0-100 scale.
  assert span_qa.squad_metrics([example], {'q': 'Dogs.'}) == {'exact_match': 100.0, 'f1': 100.0}
  metrics = span_qa.squad_metrics([example], {'q': 'old dogs bark'})
  assert metrics['exact_match'] == 0.0
  assert metrics['f1'] == pytest.approx(80.0)  # P 2/3, R 1 against 'old dogs'.
  other = dataclasses.replace(example, id='r')
  both = span_qa.squad_metrics([example, other], {'q': 'Dogs.', 'r': 'old dogs bark'})
  assert both == {'exact_match': 50.0, 'f1': pytest.approx(90.0)}


def test_windows_over_a_long_context_decode_back_to_the_answers(tokenizer, tmp_path):
  examples = span_qa.read_squad(_write_squad(str(tmp_path / 'q.json'), 6, seed=3))
  # Contexts of 7 to 11 tokens in windows of 24 - 7 (question) - 3 = 14:
  # lengthen them so that every example needs several windows.
  examples = [
    e.__class__(
      id=e.id,
      question=e.question,
      words=e.words * 3,
      answers=e.answers,
      answer_words=e.answer_words,
    )
    for e in examples
  ]
  features, mapping = span_qa.encode(
    examples, tokenizer, max_seq_length=24, doc_stride=5, max_query_length=16
  )
  assert len(features['input_ids']) > 2 * len(examples)
  assert set(features) == {
    'input_ids',
    'input_mask',
    'segment_ids',
    'start_positions',
    'end_positions',
  }
  inside = features['start_positions'] > 0
  assert inside.any() and not inside.all()  # Some windows miss the answer.
  rows = np.arange(len(inside))
  assert (
    features['input_ids'][rows, features['start_positions']][inside] != tokenizer.sep_id
  ).all()
  # Logits that point at the gold span where a window holds it.
  start = np.full(features['input_ids'].shape, -10.0)
  end = np.full(features['input_ids'].shape, -10.0)
  start[rows[inside], features['start_positions'][inside]] = 10.0
  end[rows[inside], features['end_positions'][inside]] = 10.0
  predictions = span_qa.decode(examples, mapping, start, end, max_answer_length=5)
  assert span_qa.squad_metrics(examples, predictions)['exact_match'] == 100.0


# ---------------------------------------------------------------- dropout


def _train_mode_intermediates(model, params, features, seed):
  """Module outputs of a train-mode forward pass of 4 features."""
  inputs = [jnp.asarray(features[k][:4]) for k in ('input_ids', 'input_mask', 'segment_ids')]
  outputs, state = model.apply(
    {'params': params},
    *inputs,
    deterministic=False,
    rngs={'dropout': jax.random.key(seed)},
    capture_intermediates=True,
    mutable=['intermediates'],
  )
  return outputs, state['intermediates']


def test_default_config_drops_out_the_classifier_input_only(tokenizer, tmp_path):
  config = FinetuneConfig.from_config(finetune_config.get_config('classification'))
  pretrained = pretrained_lib.load_flax(export_testing.exported('flax'))
  model_config = config.model_config(pretrained.config)
  # The backbone keeps the exported model's dropout, whatever it is.
  assert model_config.hidden_dropout_prob == pretrained.config.hidden_dropout_prob == 0
  kept = config.model_config(
    dataclasses.replace(pretrained.config, hidden_dropout_prob=0.1, attention_dropout_prob=0.1)
  )
  assert kept.hidden_dropout_prob == kept.attention_dropout_prob == 0.1
  data = dataclasses.replace(
    config.data,
    max_seq_length=16,
    train=_write_classification(str(tmp_path / 'train.tsv'), 8, seed=0),
  )
  task = classification.make_task(data, tokenizer, model_config)
  params = jax.jit(task.model.init)(
    jax.random.key(0),
    *[jnp.asarray(task.train[k][:1]) for k in ('input_ids', 'input_mask', 'segment_ids')],
  )['params']

  runs = [_train_mode_intermediates(task.model, params, task.train, seed)[1] for seed in (1, 2)]
  (sequence_1, pooled_1), (sequence_2, pooled_2) = (run['albert']['__call__'][0] for run in runs)
  dropped_1, dropped_2 = (run['Dropout_0']['__call__'][0] for run in runs)
  # Backbone: no dropout, so the same outputs whatever the dropout rng.
  np.testing.assert_array_equal(sequence_1, sequence_2)
  np.testing.assert_array_equal(pooled_1, pooled_2)
  # Classifier input: inverted dropout at rate 0.1 on the pooled output.
  assert not np.array_equal(dropped_1, dropped_2)
  for pooled, dropped in ((pooled_1, dropped_1), (pooled_2, dropped_2)):
    kept = dropped != 0
    assert 0.75 < kept.mean() < 0.99
    np.testing.assert_allclose(dropped[kept], pooled[kept] / 0.9, rtol=1e-6)


def test_paper_presets_follow_albert_runs_and_the_generic_one_hugging_face():
  """run_glue.sh's SST-2 at seq 512; the paper presets with AdamW without bias
  correction and the decay counted from step 0, as optimization.py; the
  generic preset with Hugging Face's recipe, its learning rate for the
  model's width. One line says which."""
  sst2 = FinetuneConfig.from_config(finetune_config.get_config('sst2'))
  assert sst2.data.max_seq_length == 512
  for task in ('sst2', 'imdb', 'span_qa'):
    train = FinetuneConfig.from_config(finetune_config.get_config(task)).train
    assert train.optimizer == 'adamw' and not train.adamw_bias_correction
    assert train.decay_from_step_0
    assert describe_optimizer(train).startswith(
      "AdamW without bias correction (the original's AdamWeightDecayOptimizer)"
    )
  generic = FinetuneConfig.from_config(finetune_config.get_config('classification')).train
  assert generic.adamw_bias_correction and not generic.decay_from_step_0
  tiny = ModelConfig(hidden_size=64, num_heads=4, intermediate_size=256)
  assert generic.learning_rate_for(tiny).learning_rate == 6e-4
  assert generic.learning_rate_for(ModelConfig()).learning_rate == 5e-5
  assert describe_optimizer(generic.fitted(400).learning_rate_for(tiny)) == (
    "AdamW with bias correction (Hugging Face's recipe), lr 0.0006, 4 warmup steps, "
    'then linear decay'
  )


def test_span_qa_adds_no_dropout(tokenizer, tmp_path):
  config = FinetuneConfig.from_config(finetune_config.get_config('span_qa'))
  pretrained = pretrained_lib.load_flax(export_testing.exported('flax'))
  data = dataclasses.replace(
    config.data, max_seq_length=32, train=_write_squad(str(tmp_path / 'train.json'), 4, seed=0)
  )
  task = span_qa.make_task(data, tokenizer, config.model_config(pretrained.config))
  params = jax.jit(task.model.init)(
    jax.random.key(0),
    *[jnp.asarray(task.train[k][:1]) for k in ('input_ids', 'input_mask', 'segment_ids')],
  )['params']
  (logits_1, _), (logits_2, _) = (
    _train_mode_intermediates(task.model, params, task.train, seed) for seed in (1, 2)
  )
  jax.tree.map(np.testing.assert_array_equal, logits_1, logits_2)


# ---------------------------------------------------------------- fine-tuning runs


def test_classification_reaches_95_percent_from_the_command_line(tmp_path):
  train = _write_classification(str(tmp_path / 'train.tsv'), 256, seed=0)
  dev = _write_classification(str(tmp_path / 'dev.tsv'), 64, seed=1)
  workdir = str(tmp_path / 'run')
  result = export_testing.launch(
    'finetune',
    f'--model={export_testing.exported("flax")}',
    '--task=classification',
    f'--workdir={workdir}',
    f'--config.data.train={train}',
    f'--config.data.eval={dev}',
    '--config.data.max_seq_length=32',
    '--config.train.batch_size=32',
    # The preset counts epochs: 7.5 passes over 256 rows are 60 steps of 32.
    '--config.train.num_epochs=7.5',
    '--config.train.warmup_fraction=0.1',
    '--config.train.learning_rate=1e-3',
    '--config.train.eval_every=60',
  )
  assert result.returncode == 0, result.stderr
  assert '7.5 epochs of 256 features in batches of 32: 60 steps, 6 of warmup' in result.stdout
  # A run shorter than train.log_every (100) logs every tenth of it.
  assert 'logging every 6 steps (a tenth of the run)' in result.stdout
  assert re.search(r'^step 6/60 \| loss', result.stdout, re.M)
  assert 'optimizer: AdamW with bias correction' in result.stdout
  records = train_testing.read_metrics(workdir)
  final = [r for r in records if 'eval_accuracy' in r][-1]
  assert final['step'] == 60 and final['eval_accuracy'] >= 0.95
  assert 0 <= final['eval_f1'] <= 1
  assert f'step 60: accuracy {final["eval_accuracy"]:.4f}' in result.stdout
  assert 'a fresh classification head (animal, thing)' in result.stdout
  assert f'tensorboard: tensorboard --logdir {workdir}' in result.stdout
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '60'))
  # The run records its model, task and classes beside the checkpoints.
  definition = pretrained_lib.load_definition(os.path.join(workdir, 'model'))
  assert (definition.task, definition.labels) == ('classification', ('animal', 'thing'))


@pytest.mark.parametrize(
  'preset, examples, steps, warmup',
  [
    ('classification', 400, 38, 4),
    ('sst2', 67_349, 21_047, 1_263),
    ('span_qa', 88_641, 3_694, 369),
  ],
)
def test_presets_count_epochs_so_they_fit_any_data_size(preset, examples, steps, warmup):
  train = FinetuneConfig.from_config(finetune_config.get_config(preset)).train.fitted(examples)
  assert (train.num_steps, train.warmup_steps) == (steps, warmup)


@pytest.mark.parametrize(
  'overrides, message',
  [
    (
      dict(num_steps=500),
      'set one of train.num_steps and train.num_epochs, the other to 0 (got 500 and 3.0)',
    ),
    (
      dict(warmup_steps=100),
      'set at most one of train.warmup_steps and train.warmup_fraction (in [0, 1)), the other '
      'to 0 (got 100 and 0.1)',
    ),
  ],
)
def test_steps_and_epochs_are_one_or_the_other(overrides, message):
  config = finetune_config.get_config('classification')
  config.train.update(overrides)
  with pytest.raises(UsageError, match=re.escape(message)):
    FinetuneConfig.from_config(config)


def test_pretraining_counts_steps_only():
  config = pretrain_config.get_config('tiny')
  config.train.update(num_steps=0, num_epochs=1.0)
  with pytest.raises(UsageError, match='pretraining counts steps'):
    PretrainConfig.from_config(config)


def test_span_qa_reaches_90_percent_exact_match(tmp_path):
  config = export_testing.finetune_config(
    'span_qa',
    200,
    train=_write_squad(str(tmp_path / 'train.json'), 256, seed=0),
    eval=_write_squad(str(tmp_path / 'dev.json'), 64, seed=1),
  )
  # The original's AdamW, without bias correction, moves ~3x further over
  # these 200 steps than optax's: 1e-3 then overshoots (45 % exact match).
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=3e-4))
  result = trainer.finetune(
    config, pretrained_lib.load_flax(export_testing.exported('flax')), str(tmp_path / 'run')
  )
  assert result.step == 200
  assert result.eval_metrics['exact_match'] >= 90  # SQuAD's 0-100 scale.
  assert result.eval_metrics['f1'] <= 100
  assert result.eval_metrics['f1'] >= result.eval_metrics['exact_match']


def test_bad_input_is_one_line(tmp_path):
  model = f'--model={export_testing.exported("flax")}'
  export_testing.assert_one_line_error(
    export_testing.launch('finetune', model, '--task=nope'),
    "unknown fine-tuning task 'nope': choose one of classification, sst2",
  )
  export_testing.assert_one_line_error(
    export_testing.launch(
      'finetune',
      model,
      f'--workdir={tmp_path}',
      '--config.data.train=missing.tsv',
      '--config.data.max_seq_length=32',
    ),
    'missing.tsv not found',
  )
  export_testing.assert_one_line_error(
    export_testing.launch('finetune', f'--model={tmp_path}', f'--workdir={tmp_path / "run"}'),
    f'{tmp_path} holds no model: expected a flax export',
  )
  config = finetune_config.get_config('classification')
  config.data.train = 'x.tsv'
  with pytest.raises(
    UsageError, match="data.max_seq_length=128 exceeds the model's max_position_embeddings=32"
  ):
    trainer.finetune(
      FinetuneConfig.from_config(config),
      pretrained_lib.load_flax(export_testing.exported('flax')),
      str(tmp_path),
    )


def test_a_failed_fine_tune_leaves_no_workdir_behind(tmp_path):
  pretrained = pretrained_lib.load_flax(export_testing.exported('flax'))
  train = _write_classification(str(tmp_path / 'train.tsv'), 32, seed=0)
  workdir = str(tmp_path / 'runs' / 'ft')
  # Bad data: refused before the workdir is claimed.
  with pytest.raises(DataError, match='missing.tsv not found'):
    trainer.finetune(
      export_testing.finetune_config('classification', 2, train=str(tmp_path / 'missing.tsv')),
      pretrained,
      workdir,
    )
  assert not os.path.exists(tmp_path / 'runs')
  # A model without its encoder: refused as its params load, in the claimed
  # workdir (model/ and checkpoints/ written), before the run starts.
  albert = {k: v for k, v in pretrained.params['albert'].items() if k != 'encoder'}
  broken = dataclasses.replace(pretrained, params={**pretrained.params, 'albert': albert})
  with pytest.raises(ExportError, match='lacks parameter encoder/'):
    trainer.finetune(
      export_testing.finetune_config('classification', 2, train=train), broken, workdir
    )
  assert not os.path.exists(tmp_path / 'runs')
