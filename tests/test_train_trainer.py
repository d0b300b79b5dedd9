"""The training loop in-process: sharded equivalence, accumulation, metrics, bad input."""

import json
import os

import jax
import numpy as np
import pytest

from albert_jax import model_path, pretraining
from albert_jax.data import prepared, sources
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError, UsageError
from albert_jax.train.config import PretrainConfig

import train_testing


@pytest.fixture(scope='module')
def one_device_run(vocab, tmp_path_factory):
  """The reference: 4 steps on one device, with an evaluation at the end."""
  workdir = str(tmp_path_factory.mktemp('one_device'))
  config = train_testing.tiny_config(
    vocab, **{'train.eval_every': 4, 'train.peak_flops_per_device': 1e9}
  )
  result = pretraining.train(PretrainConfig.from_config(config), workdir, devices=jax.devices()[:1])
  return result, workdir


@pytest.mark.parametrize(
  'mesh',
  [
    {'data': 8},
    {'data': 2, 'fsdp': 4},
    {'data': 2, 'tensor': 4},
  ],
  ids=['data8', 'data2_fsdp4', 'data2_tensor4'],
)
def test_sharded_losses_match_one_device(mesh, vocab, one_device_run, tmp_path):
  config = train_testing.tiny_config(vocab)
  config.mesh.update(mesh)
  pretraining.train(PretrainConfig.from_config(config), str(tmp_path))
  expected = train_testing.train_losses(one_device_run[1])
  got = train_testing.train_losses(str(tmp_path))
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=1e-5
  )


def test_gradient_accumulation_matches_the_full_batch(vocab, one_device_run, tmp_path):
  config = train_testing.tiny_config(vocab, **{'train.grad_accum_steps': 4})
  pretraining.train(PretrainConfig.from_config(config), str(tmp_path), devices=jax.devices()[:1])
  expected = train_testing.train_losses(one_device_run[1])
  got = train_testing.train_losses(str(tmp_path))
  np.testing.assert_allclose(
    [got[s] for s in (1, 2, 3, 4)], [expected[s] for s in (1, 2, 3, 4)], rtol=1e-5
  )


def test_metrics_records(one_device_run):
  result, workdir = one_device_run
  records = train_testing.read_metrics(workdir)
  train_records = [r for r in records if 'loss' in r]
  eval_records = [r for r in records if 'eval_mlm_loss' in r]
  assert [r['step'] for r in train_records] == [1, 2, 3, 4]
  for key in (
    'loss',
    'mlm_accuracy',
    'sop_accuracy',
    'learning_rate',
    'grad_norm',
    'tokens_per_sec',
    'mfu',
    'step_time',
    'eta_seconds',
  ):
    assert key in train_records[-1], key
  last = train_records[-1]
  # MFU = model FLOP/s over the configured peak (1e9 FLOP/s, one device).
  assert last['mfu'] == pytest.approx(
    last['tokens_per_sec'] / (16 * 32) * 16 * _flops_per_example() / 1e9, rel=1e-6
  )
  assert 0 <= last['mlm_accuracy'] <= 1 and 0 <= last['sop_accuracy'] <= 1
  assert [r['step'] for r in eval_records] == [4]
  assert set(eval_records[0]) >= {'step', 'eval_mlm_loss', 'eval_mlm_accuracy', 'eval_sop_accuracy'}
  assert result.step == 4 and result.train_metrics['loss'] == last['loss']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['hidden_size'] == 32
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))


def _flops_per_example() -> float:
  from albert_jax import flops
  from albert_jax.config import ModelConfig

  config = train_testing.tiny_config('')
  return flops.train_flops_per_example(ModelConfig.from_config(config.model), 32, 5)


def test_non_finite_loss_stops_naming_the_step(vocab, tmp_path):
  config = train_testing.tiny_config(vocab, **{'train.learning_rate': 1e30, 'train.log_every': 2})
  with pytest.raises(
    UsageError,
    match=r'training diverged at step 2 \(loss [\d.]+, parameter norm (nan|inf)\): lower ',
  ):
    pretraining.train(PretrainConfig.from_config(config), str(tmp_path), devices=jax.devices()[:1])
  assert not os.listdir(os.path.join(tmp_path, 'checkpoints'))


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'mesh.data': 3}, r'mesh data=3 x fsdp=1 x tensor=1 needs 3 devices but there are 8'),
    ({'mesh.data': 2, 'mesh.fsdp': 3, 'mesh.tensor': 1}, r'needs 6 devices but there are 8'),
    ({'mesh.fsdp': 3, 'mesh.data': -1}, r'does not fit 8 devices: 3 must divide 8'),
    ({'train.batch_size': 12}, r'train.batch_size=12 does not split .* use a multiple of 8'),
    ({'train.grad_accum_steps': 3}, r'use a multiple of 24'),
    ({'model.num_heads': 5}, r'model.num_heads=5 must divide model.hidden_size=32'),
    ({'mesh.data': 1, 'mesh.tensor': 8}, r'cannot be split 8 ways'),
  ],
)
def test_impossible_config_is_one_clear_error(overrides, message, vocab, tmp_path):
  config = train_testing.tiny_config(vocab)
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  with pytest.raises(UsageError, match=message) as error:
    pretraining.train(PretrainConfig.from_config(config), str(tmp_path))
  assert '\n' not in str(error.value)


def test_profile_steps_write_a_trace_and_mfu_is_known_on_cpu(vocab, tmp_path):
  config = train_testing.tiny_config(vocab, **{'train.num_steps': 4, 'train.profile_steps': '2:3'})
  result = pretraining.train(
    PretrainConfig.from_config(config), str(tmp_path), devices=jax.devices()[:1]
  )
  traces = list((tmp_path / 'profile' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  # The trainer's MFU uses the benchmark's peak estimate (cpuinfo on CPUs).
  assert 0 < result.train_metrics['mfu'] < 1


def test_malformed_profile_steps_is_one_line():
  with pytest.raises(UsageError, match=r"train.profile_steps='3': use START:END"):
    PretrainConfig.from_config(train_testing.tiny_config('', **{'train.profile_steps': '3'}))


# ---------------------------------------------------------------- vocabulary size


@pytest.fixture(scope='module')
def vocab_300(tmp_path_factory):
  """(vocabulary, prepared corpus): builtin prepared with a 300-piece
  vocabulary, not the tiny preset's 2000."""
  root = tmp_path_factory.mktemp('vocab_300')
  vocab = str(root / 'vocab')
  assert train_tokenizer(sources.read_sentences('builtin'), vocab, vocab_size=300).vocab_size == 300
  prepared.prepare('builtin', vocab, str(root / 'prepared'), num_workers=1)
  return vocab, str(root / 'prepared')


def test_the_model_takes_the_vocabulary_size_of_prepared_data(vocab_300, tmp_path):
  # model.vocab_size as the preset leaves it: 0, the tokenizer's size.
  config = train_testing.tiny_config(
    '',
    **{'model.vocab_size': 0, 'data.source': f'prepared:{vocab_300[1]}', 'train.num_steps': 2},
  )
  workdir = str(tmp_path / 'run')
  pretraining.train(PretrainConfig.from_config(config), workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  # The settled values, and which keys the config left to the run.
  assert saved['model']['vocab_size'] == 300
  # 'step: 1 micro-batch per step; 2 of 2 layers per loop iteration', as the run said.
  assert saved['train']['grad_accum_steps'] == 1 and saved['model']['unroll'] == 2
  assert saved['auto'] == ['model.vocab_size', 'model.unroll', 'train.grad_accum_steps']
  # The recorded size is the checkpoint's: the run reads back as a model.
  assert model_path.restore_run(workdir).pretrained.config.vocab_size == 300
  # A rerun as given resumes: the saved 300 is compared with the tokenizer's
  # size, not with the 2000 of a tokenizer the run would train.
  config.train.num_steps = 3
  result = pretraining.train(PretrainConfig.from_config(config), workdir, devices=jax.devices()[:1])
  assert (result.first_step, result.step) == (2, 3)
  with open(os.path.join(workdir, 'resumes.jsonl')) as f:
    assert json.loads(f.read())['changed'] == {'train.num_steps': [2, 3]}


def test_a_set_vocab_size_must_hold_every_id_of_the_vocabulary(vocab_300, tmp_path):
  config = train_testing.tiny_config(vocab_300[0], **{'train.num_steps': 1})  # Size 256.
  workdir = tmp_path / 'runs' / 'small'
  with pytest.raises(DataError) as error:
    pretraining.train(PretrainConfig.from_config(config), str(workdir), devices=jax.devices()[:1])
  assert str(error.value) == (
    'the vocabulary has 300 pieces but model.vocab_size=256: set '
    "--config.model.vocab_size=300, or 0 for the vocabulary's size"
  )
  assert not os.listdir(tmp_path)  # The run created runs/small: it is gone.
  # A larger size is kept (rows no id uses), as set.
  config.model.vocab_size = 320
  pretraining.train(PretrainConfig.from_config(config), str(workdir), devices=jax.devices()[:1])
  with open(workdir / 'config.json') as f:
    saved = json.load(f)
  assert saved['model']['vocab_size'] == 320 and 'model.vocab_size' not in saved['auto']


def test_a_run_that_fails_before_it_starts_leaves_no_directory_it_created(vocab, tmp_path):
  missing = f'text:{tmp_path}/corpus/*.txt'
  workdir = tmp_path / 'runs' / 'bad'
  # Fails reading the corpus, or reading it to train a tokenizer into the workdir.
  for vocabulary in (vocab, ''):
    config = train_testing.tiny_config(vocabulary, **{'data.source': missing})
    with pytest.raises(DataError, match='matches no files'):
      pretraining.train(PretrainConfig.from_config(config), str(workdir), devices=jax.devices()[:1])
    assert not os.listdir(tmp_path)
  # A directory that was there stays, with what it held.
  workdir.mkdir(parents=True)
  (workdir / 'notes.txt').write_text('mine')
  with pytest.raises(DataError, match='matches no files'):
    pretraining.train(PretrainConfig.from_config(config), str(workdir), devices=jax.devices()[:1])
  assert (workdir / 'notes.txt').read_text() == 'mine'
