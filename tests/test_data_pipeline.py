"""Pipeline: determinism, resume, process sharding, global arrays, prepared data."""

import os
import subprocess
import sys

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tokenizers
from absl import flags

from albert_jax.data import examples, pipeline, prepared, sources, vocabulary
from albert_jax.data.config import DataConfig
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError, UsageError
from experiments.configs import pretrain

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 16


def tiny_data(**overrides) -> DataConfig:
  data = pretrain.get_config('tiny').data
  data.update(overrides)
  return DataConfig.from_config(data)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('workdir'))


@pytest.fixture(scope='module')
def tokenizer(workdir):
  return pipeline.load_or_train_tokenizer(tiny_data(), vocab_size=2000, workdir=workdir)


@pytest.fixture(scope='module')
def corpus(tokenizer):
  return pipeline.load_corpus(tiny_data(), tokenizer)


def dataset(corpus, tokenizer, *, shuffle=True, index=0, count=1, batch=BATCH, **overrides):
  return pipeline.make_pretraining_dataset(
    corpus.train,
    tiny_data(**overrides),
    tokenizer,
    global_batch_size=batch,
    shuffle=shuffle,
    process_index=index,
    process_count=count,
  )


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same(batches, others):
  assert len(batches) == len(others)
  for a, b in zip(batches, others):
    assert a.keys() == b.keys()
    for key in a:
      assert a[key].tobytes() == b[key].tobytes(), key


def test_batches_have_the_contract_shapes(corpus, tokenizer):
  batch = next(iter(dataset(corpus, tokenizer)))
  seq, pred = 128, 20
  want = dict(
    input_ids=(BATCH, seq),
    input_mask=(BATCH, seq),
    segment_ids=(BATCH, seq),
    masked_lm_positions=(BATCH, pred),
    masked_lm_ids=(BATCH, pred),
    masked_lm_weights=(BATCH, pred),
    sentence_order_label=(BATCH,),
  )
  assert {k: v.shape for k, v in batch.items()} == want
  assert all(v.dtype == np.int32 for v in batch.values())


def test_tokenizer_trained_once_into_workdir(workdir, tokenizer):
  assert os.path.isfile(os.path.join(workdir, 'vocab', 'spiece.model'))
  again = pipeline.load_or_train_tokenizer(tiny_data(), vocab_size=2000, workdir=workdir)
  assert again.fingerprint == tokenizer.fingerprint
  with pytest.raises(DataError, match='model.vocab_size=1000'):
    pipeline.check_vocab_fits(again, 1000)


def test_eval_documents_are_held_out(corpus, tokenizer):
  assert corpus.eval.num_documents == tiny_data().eval_documents
  train_docs = {corpus.train.tokens(d).tobytes() for d in range(corpus.train.num_documents)}
  eval_docs = {corpus.eval.tokens(d).tobytes() for d in range(corpus.eval.num_documents)}
  assert not train_docs & eval_docs
  with pytest.raises(DataError, match='holds out all of them'):
    pipeline.load_corpus(tiny_data(eval_documents=10_000), tokenizer)


def test_spread_split_holds_out_documents_from_every_part_of_the_source(
  tmp_path, workdir, tokenizer
):
  whole = pipeline.load_corpus(tiny_data(eval_documents=0), tokenizer).train
  assert whole.num_documents == 169
  held = [28, 84, 140]  # floor((i + 1/2) * 169 / 3): the middles of 3 equal parts.
  kept = [d for d in range(169) if d not in held]
  output = str(tmp_path / 'prepared')
  prepared.prepare('builtin', f'{workdir}/vocab', output, num_workers=1, documents_per_shard=50)
  for source in ('builtin', f'prepared:{output}'):
    data = tiny_data(source=source, eval_documents=3, eval_split='spread')
    corpus = pipeline.load_corpus(data, tokenizer)
    for part, documents in ((corpus.eval, held), (corpus.train, kept)):
      assert [part.tokens(d).tolist() for d in range(part.num_documents)] == [
        whole.tokens(d).tolist() for d in documents
      ]
      # The segment index agrees with the tokens of each document.
      lengths = np.add.reduceat(part.segment_lengths, part.document_offsets[:-1])
      assert lengths.tolist() == [len(part.tokens(d)) for d in range(part.num_documents)]
  with pytest.raises(DataError, match=r"data.eval_split must be 'last' or 'spread', got 'random'"):
    DataConfig(eval_split='random')


def test_a_tokenizer_trained_for_the_run_never_sees_the_held_out_documents(tmp_path):
  words = ('apple', 'brick', 'cloud', 'drums', 'eagle', 'flute')
  sentence = lambda word: ' '.join([word] * 20) + '.'
  text = ''.join(f'{sentence(w)}\n{sentence(w)}\n\n' for w in words)
  (tmp_path / 'corpus.txt').write_text(text)
  data = tiny_data(source=f'text:{tmp_path}/corpus.txt', eval_documents=2, eval_split='spread')
  tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=60, workdir=str(tmp_path))
  pieces = {tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)}
  # Held out: floor((2i + 1) * 6 / 4) = documents 1 and 4, brick and eagle.
  assert {'▁apple', '▁cloud', '▁drums', '▁flute'} <= pieces
  assert not {'▁brick', '▁eagle'} & pieces


def test_eval_source(tmp_path, tokenizer):
  (tmp_path / 'eval.txt').write_text('Held out text.\nMore of it here.\n')
  corpus = pipeline.load_corpus(tiny_data(eval_source=f'text:{tmp_path}/eval.txt'), tokenizer)
  assert corpus.eval.num_documents == 1
  assert corpus.train.num_documents > 150


def test_same_seed_same_bytes_other_seed_differs(corpus, tokenizer):
  first = take(iter(dataset(corpus, tokenizer)), 3)
  assert_same(first, take(iter(dataset(corpus, tokenizer)), 3))
  other = take(iter(dataset(corpus, tokenizer, seed=1)), 1)
  assert first[0]['input_ids'].tobytes() != other[0]['input_ids'].tobytes()


def test_restored_state_continues_the_stream(corpus, tokenizer):
  iterator = iter(dataset(corpus, tokenizer))
  take(iterator, 5)
  state = iterator.get_state()
  expected = take(iterator, 4)
  resumed = iter(dataset(corpus, tokenizer))
  resumed.set_state(state)
  assert_same(expected, take(resumed, 4))


def test_orbax_checkpoint_round_trip(tmp_path, corpus, tokenizer):
  iterator = iter(dataset(corpus, tokenizer))
  take(iterator, 3)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = take(iterator, 3)
  resumed = iter(dataset(corpus, tokenizer))
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  assert_same(expected, take(resumed, 3))


def test_processes_read_disjoint_parts_of_one_stream(corpus, tokenizer):
  num_instances = len(examples.plan_instances(corpus.train, tiny_data(), 0))
  num_batches = num_instances // BATCH + 2  # Into the second epoch.
  whole = take(iter(dataset(corpus, tokenizer)), num_batches)
  halves = [take(iter(dataset(corpus, tokenizer, index=i, count=2)), num_batches) for i in range(2)]
  for step in range(num_batches):
    for key, value in whole[step].items():
      assert halves[0][step][key].shape[0] == BATCH // 2
      np.testing.assert_array_equal(value[0::2], halves[0][step][key])
      np.testing.assert_array_equal(value[1::2], halves[1][step][key])
  first_epoch = [
    {
      b['input_ids'][i].tobytes() + b['masked_lm_ids'][i].tobytes()
      for b in half
      for i in range(BATCH // 2)
    }
    for half in halves
  ]
  assert not first_epoch[0] & first_epoch[1]
  with pytest.raises(DataError, match='does not split over 3 processes'):
    dataset(corpus, tokenizer, count=3)


@pytest.fixture
def parsed_flags():
  """absl flags parsed, as a launcher's absl app leaves them."""
  was_parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()
  yield
  if not was_parsed:
    flags.FLAGS.unparse_flags()


def test_worker_processes_ask_for_parsed_flags(corpus, tokenizer):
  if flags.FLAGS.is_parsed():
    pytest.skip('an earlier test parsed absl flags')
  with pytest.raises(UsageError, match='data.num_workers=1 needs absl flags parsed'):
    dataset(corpus, tokenizer, num_workers=1)
  assert not flags.FLAGS.is_parsed()


@pytest.mark.usefixtures('parsed_flags')
def test_worker_processes_give_the_same_batches(corpus, tokenizer):
  iterator = iter(dataset(corpus, tokenizer, num_workers=1))
  batches = take(iterator, 4)
  assert_same(batches, take(iter(dataset(corpus, tokenizer)), 4))
  state = iterator.get_state()
  expected = take(iterator, 2)
  resumed = iter(dataset(corpus, tokenizer, num_workers=1))
  resumed.set_state(state)
  assert_same(expected, take(resumed, 2))


def test_eval_iterations_repeat(corpus, tokenizer):
  eval_ds = pipeline.make_pretraining_dataset(
    corpus.eval,
    tiny_data(),
    tokenizer,
    global_batch_size=BATCH,
    shuffle=False,
    process_index=0,
    process_count=1,
  )
  assert_same(take(iter(eval_ds), 3), take(iter(eval_ds), 3))


def test_global_batch_is_sharded_over_the_batch_axes(corpus, tokenizer):
  mesh = jax.make_mesh((4, 2), ('data', 'fsdp'), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(('data', 'fsdp')))
  local = next(iter(dataset(corpus, tokenizer)))
  batch = pipeline.make_global_batch(local, sharding)
  for key, value in batch.items():
    assert value.sharding == sharding and value.shape == local[key].shape
    np.testing.assert_array_equal(np.asarray(value), local[key])
  assert len(batch['input_ids'].addressable_shards) == 8
  assert batch['input_ids'].addressable_shards[0].data.shape == (BATCH // 8, 128)


def test_prepared_data_gives_the_in_memory_batches(tmp_path, workdir, corpus, tokenizer):
  output = str(tmp_path / 'prepared')
  metadata = prepared.prepare(
    'builtin', f'{workdir}/vocab', output, num_workers=2, documents_per_shard=50
  )
  assert len(metadata['shards']) == metadata['num_documents'] // 50 + 1
  data = tiny_data(source=f'prepared:{output}')
  loaded = pipeline.load_or_train_tokenizer(data, vocab_size=2000, workdir=str(tmp_path / 'unused'))
  assert loaded.fingerprint == tokenizer.fingerprint
  from_disk = pipeline.load_corpus(data, loaded)
  assert from_disk.train.num_documents == corpus.train.num_documents
  for name in ('train', 'eval'):
    ds = pipeline.make_pretraining_dataset(
      getattr(from_disk, name),
      data,
      loaded,
      global_batch_size=BATCH,
      shuffle=True,
      process_index=0,
      process_count=1,
    )
    want = pipeline.make_pretraining_dataset(
      getattr(corpus, name),
      tiny_data(),
      tokenizer,
      global_batch_size=BATCH,
      shuffle=True,
      process_index=0,
      process_count=1,
    )
    assert_same(take(iter(ds), 2), take(iter(want), 2))
  with pytest.raises(DataError, match='exists and is not empty'):
    prepared.prepare('builtin', f'{workdir}/vocab', output)
  other = train_tokenizer(['other words entirely.'] * 20, str(tmp_path / 'other'), vocab_size=30)
  with pytest.raises(DataError, match='tokenized with another vocabulary'):
    pipeline.load_corpus(data, other)
  with pytest.raises(DataError, match='is not prepared data'):
    pipeline.load_corpus(tiny_data(source=f'prepared:{tmp_path}'), tokenizer)


@pytest.mark.parametrize('kind', ['vocab.txt', 'tokenizer.json'])
def test_prepared_data_with_each_vocabulary_kind(tmp_path, kind):
  vocab = str(tmp_path / 'chosen_vocab')
  if kind == 'vocab.txt':
    train_tokenizer(
      sources.read_sentences('builtin'), vocab, vocab_size=800, model_type='wordpiece'
    )
  else:
    train_testing.unigram_tokenizer_json(
      vocab,
      sources.read_sentences('builtin'),
      vocab_size=600,
      normalizer=tokenizers.normalizers.Lowercase(),
    )
  tokenizer = vocabulary.load(vocab)
  assert tokenizer.kind == kind
  in_memory = tiny_data(vocab=vocab)
  workdir = str(tmp_path / 'workdir')
  loaded = pipeline.load_or_train_tokenizer(in_memory, vocab_size=2000, workdir=workdir)
  assert loaded.fingerprint == tokenizer.fingerprint
  assert not os.path.exists(workdir)
  output = str(tmp_path / 'prepared')
  prepared.prepare('builtin', vocab, output, num_workers=1)
  data = tiny_data(source=f'prepared:{output}')
  from_disk = pipeline.load_or_train_tokenizer(data, vocab_size=2000, workdir=workdir)
  assert from_disk.fingerprint == tokenizer.fingerprint
  batches = []
  for config, vocab_tokenizer in ((in_memory, loaded), (data, from_disk)):
    corpus = pipeline.load_corpus(config, vocab_tokenizer)
    batches.append(take(iter(dataset(corpus, vocab_tokenizer)), 2))
  assert_same(*batches)
  ids = batches[0][0]['input_ids']
  assert (ids[:, 0] == tokenizer.cls_id).all()
  assert ((ids == tokenizer.sep_id).sum(1) == 2).all()
  assert (ids == tokenizer.mask_id).any() and not (ids == tokenizer.unk_id).all()


def test_tfds_source_end_to_end(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  data = tiny_data(source='tfds:lm1b', eval_documents=4, sentence_objective='nsp')
  with tfds.testing.mock_data(num_examples=40):
    tokenizer = pipeline.load_or_train_tokenizer(data, vocab_size=2000, workdir=str(tmp_path))
    corpus = pipeline.load_corpus(data, tokenizer)
  assert (corpus.train.num_documents, corpus.eval.num_documents) == (36, 4)
  batch = next(
    iter(
      pipeline.make_pretraining_dataset(
        corpus.train,
        data,
        tokenizer,
        global_batch_size=8,
        shuffle=True,
        process_index=0,
        process_count=1,
      )
    )
  )
  assert batch['input_ids'].shape == (8, 128)
  assert (batch['input_ids'][:, 0] == 2).all()


def test_prepare_data_and_benchmark_launchers(tmp_path, workdir):
  run = lambda module, *flags: subprocess.run(
    [sys.executable, '-m', module, *flags], cwd=REPO, capture_output=True, text=True
  )
  (tmp_path / 'corpus.txt').write_text('\n'.join(['A first sentence.', 'A second one.', ''] * 40))
  done = run(
    'launch.prepare_data',
    f'--source=text:{tmp_path}/corpus.txt',
    f'--vocab={workdir}/vocab',
    f'--output={tmp_path}/out',
    '--num_workers=1',
  )
  assert done.returncode == 0, done.stderr
  assert 'wrote' in done.stdout and '40 documents' in done.stdout
  failed = run(
    'launch.prepare_data',
    '--source=text:/nonexistent/*.txt',
    f'--vocab={workdir}/vocab',
    f'--output={tmp_path}/out2',
  )
  assert failed.returncode != 0
  assert failed.stderr.strip().splitlines()[-1] == (
    'error: text:/nonexistent/*.txt matches no files: check the path'
  )
  assert not os.path.exists(f'{tmp_path}/out2')
  bench = run(
    'launch.benchmark_data',
    '--max_seq_length=64',
    '--num_examples=256',
    f'--source=prepared:{tmp_path}/out',
    '--json',
  )
  assert bench.returncode == 0, bench.stderr
  import json

  result = json.loads(bench.stdout)
  assert result['examples_per_sec'] > 0 and result['seq_len'] == 64
