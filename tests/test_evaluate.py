"""launch.evaluate on held-out text reproduces the trainer's evaluation of
the same step (read from the run's checkpoint, or from its export), and
reports NSP next to SOP."""

import json
import math

import pytest

import export_testing
import train_testing


@pytest.fixture(scope='module')
def run():
  return export_testing.pretrained_run()


def _run_settings(config) -> list[str]:
  """The flags that build the examples the trainer evaluated on."""
  return [
    f'--source={config.data.eval_source}',
    f'--max_seq_length={config.data.max_seq_length}',
    f'--max_predictions_per_seq={config.data.max_predictions_per_seq}',
    f'--batch_size={config.train.batch_size}',
    f'--num_batches={config.train.eval_steps}',
    f'--seed={config.data.seed}',
  ]


def test_matches_the_training_time_evaluation_of_the_same_step(run):
  workdir, config = run
  # The run itself is the model: its checkpoint of that step.
  result = export_testing.launch(
    'evaluate',
    f'--model={workdir}',
    '--step=400',
    '--json',
    '--bucket_multiple=8',  # Batches cut to their longest example: the same numbers.
    *_run_settings(config),
  )
  assert result.returncode == 0, result.stderr
  results = json.loads(result.stdout)
  trained = [r for r in train_testing.read_metrics(workdir) if 'eval_mlm_loss' in r]
  assert trained[-1]['step'] == export_testing.NUM_STEPS
  expected = trained[-1]
  sop = results['sop']
  # The model learned something worth comparing.
  assert expected['eval_mlm_accuracy'] > 0.5
  assert sop['examples'] == config.train.batch_size * config.train.eval_steps
  for key in ('mlm_accuracy', 'sop_accuracy', 'mlm_loss', 'sop_loss', 'loss'):
    assert sop[key] == pytest.approx(expected[f'eval_{key}'], rel=1e-5), key
  assert sop['mlm_perplexity'] == pytest.approx(math.exp(sop['mlm_loss']))
  nsp = results['nsp']
  assert set(nsp) >= {'mlm_loss', 'mlm_accuracy', 'mlm_perplexity', 'nsp_accuracy', 'nsp_loss'}
  assert 0 <= nsp['nsp_accuracy'] <= 1
  # A random second document hides the repeated word: NSP examples are harder.
  assert nsp['mlm_accuracy'] < sop['mlm_accuracy']


def test_table_and_errors(run):
  _, config = run
  model = f'--model={export_testing.exported("flax")}'
  result = export_testing.launch(
    'evaluate', model, *_run_settings(config), '--objective=sop', '--num_batches=1'
  )
  assert result.returncode == 0, result.stderr
  header, row = result.stdout.splitlines()
  assert header.split() == [
    'objective',
    'mlm_loss',
    'mlm_accuracy',
    'mlm_perplexity',
    'sentence_accuracy',
    'examples',
  ]
  assert row.split()[0] == 'sop' and row.split()[-1] == '32'

  export_testing.assert_one_line_error(
    export_testing.launch('evaluate', model, *_run_settings(config), '--batch_size=12'),
    'batch size 12 does not split over the 8 devices',
  )
  export_testing.assert_one_line_error(
    export_testing.launch(
      'evaluate', model, f'--source={config.data.eval_source}', '--max_seq_length=64'
    ),
    "max_seq_length=64 exceeds the model's max_position_embeddings=32",
  )
