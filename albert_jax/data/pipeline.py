"""Input pipeline: per-process grain datasets of pretraining batches.

How the trainer uses it (`config` = PretrainConfig.from_config(preset): the
library takes records, never ConfigDicts):

  from albert_jax.data import pipeline
  tokenizer = pipeline.load_or_train_tokenizer(
      config.data, vocab_size=config.model.vocab_size, workdir=workdir)
  # The model: tokenizer.vocab_size embedding rows, or a size the config
  # sets, checked with pipeline.check_vocab_fits(tokenizer, size).
  corpus = pipeline.load_corpus(config.data, tokenizer)
  train_ds = pipeline.make_pretraining_dataset(
      corpus.train, config.data, tokenizer,
      global_batch_size=config.train.batch_size, shuffle=True)
  eval_ds = pipeline.make_pretraining_dataset(
      corpus.eval, config.data, tokenizer,
      global_batch_size=config.train.batch_size, shuffle=False)
  train_iter = iter(train_ds)                  # grain.DatasetIterator
  local = next(train_iter)                     # dict of np.int32 [B_local, ...]
  batch = pipeline.make_global_batch(local, sharding)  # dict of jax.Array

  # Checkpointing, next to the train state in one orbax CheckpointManager:
  #   save:    ocp.args.Composite(
  #                ..., data=grain.checkpoint.CheckpointSave(train_iter))
  #   restore: ocp.args.Composite(
  #                ..., data=grain.checkpoint.CheckpointRestore(train_iter))
  # (or train_iter.get_state() / train_iter.set_state(state), a small dict):
  # the resumed iterator yields exactly the batches the uninterrupted one would.

  # Evaluation: a fresh iter(eval_ds) each time sees the same batches.

Stream order: example k of the global stream is instance perm_e(k mod N) of
epoch e = k // N (a fresh permutation per epoch; none for eval), its masks
drawn from (data.seed, e, instance). Process p of P takes examples
k = p, p + P, p + 2P, ... and batches them by global_batch_size // P, so the
processes read disjoint examples and global batch i holds examples
[i * global_batch_size, (i + 1) * global_batch_size) whatever P is.
Work runs in `data.num_workers` worker processes (0: in this process, on a
prefetch thread), `data.prefetch_buffer_size` batches ahead. Worker processes
need absl flags parsed (see make_pretraining_dataset): the launchers' absl
app parses them; other callers parse them or keep data.num_workers = 0.
"""

from __future__ import annotations

import dataclasses
import os

import grain
import jax
import numpy as np
from absl import flags

from albert_jax.data import examples, prepared, sources, vocabulary
from albert_jax.data.config import DataConfig
from albert_jax.data.corpus import Documents, tokenize
from albert_jax.data.tokenizer import Normalization, Tokenizer, has_tokenizer
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError, UsageError

# Where a tokenizer trained for a run lives, inside its workdir.
WORKDIR_VOCAB = 'vocab'


@dataclasses.dataclass(frozen=True)
class Corpus:
  train: Documents
  # None when data.eval_documents == 0 and there is no data.eval_source.
  eval: Documents | None


def load_or_train_tokenizer(data: DataConfig, *, vocab_size: int, workdir: str) -> Tokenizer:
  """The run's tokenizer: data.vocab, the one prepared data was made with,
  the one already in `workdir`/vocab (a resumed run), or a new one of
  `vocab_size` pieces (fewer on a small corpus) trained there on the
  training documents of data.source (deterministic, so every process of a
  multi-host run trains the same one)."""
  if data.vocab:
    tokenizer = vocabulary.load(data.vocab)
  elif data.source.startswith('prepared:'):
    tokenizer = prepared.load_tokenizer(data.source[len('prepared:') :])
  elif has_tokenizer(os.path.join(workdir, WORKDIR_VOCAB)):
    tokenizer = vocabulary.load(os.path.join(workdir, WORKDIR_VOCAB))
  else:
    documents = list(sources.read_documents(data.source, data))
    if not data.eval_source:
      train, _ = split_documents(len(documents), data)
      documents = [documents[i] for i in train]
    tokenizer = train_tokenizer(
      (s for d in documents for s in d),
      os.path.join(workdir, WORKDIR_VOCAB),
      vocab_size=vocab_size,
      normalization=Normalization(lowercase=data.lowercase),
    )
  return tokenizer


def check_vocab_fits(tokenizer: Tokenizer, model_vocab_size: int) -> None:
  """DataError unless a model of `model_vocab_size` embedding rows has one
  for every id of `tokenizer`."""
  if tokenizer.vocab_size > model_vocab_size:
    raise DataError(
      f'the vocabulary has {tokenizer.vocab_size} pieces but '
      f'model.vocab_size={model_vocab_size}: set '
      f"--config.model.vocab_size={tokenizer.vocab_size}, or 0 for the vocabulary's size"
    )


def load_corpus(data: DataConfig, tokenizer: Tokenizer) -> Corpus:
  """Reads and tokenizes data.source (and data.eval_source) once.

  Without data.eval_source data.eval_documents documents of the source
  (data.eval_split: its last ones, or ones spread evenly through it) are
  held out for evaluation and never trained on.
  """
  documents = _load_documents(data.source, data, tokenizer)
  if data.eval_source:
    return Corpus(documents, _load_documents(data.eval_source, data, tokenizer))
  train, held_out = split_documents(documents.num_documents, data)
  return Corpus(documents.take(train), documents.take(held_out) if len(held_out) else None)


def make_pretraining_dataset(
  documents: Documents,
  data: DataConfig,
  tokenizer: Tokenizer,
  *,
  global_batch_size: int,
  shuffle: bool,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """An endless dataset of this process's batches (see module docstring)."""
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if global_batch_size % process_count:
    raise DataError(
      f'batch size {global_batch_size} does not split over '
      f'{process_count} processes: use a multiple of '
      f'{process_count}'
    )
  instances = examples.plan_instances(documents, data, data.seed)
  builder = examples.ExampleBuilder(
    documents,
    instances,
    data,
    tokenizer=tokenizer,
    seed=data.seed,
  )
  ds = grain.MapDataset.range(len(instances)).repeat()
  ds = ds.map_with_index(_EpochExample(builder, shuffle=shuffle))
  ds = ds[process_index::process_count]
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  prefetch = data.prefetch_buffer_size
  ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
  )
  if data.num_workers:
    # grain reads an absl flag of its own as it starts the workers
    # (--grain_enable_multiprocess_worker_profiling) and fails obscurely, in
    # a prefetch thread, if flags are unparsed. absl's flag state is the
    # program's (global): say so here rather than mark it parsed.
    if not flags.FLAGS.is_parsed():
      raise UsageError(
        f'data.num_workers={data.num_workers} needs absl flags parsed '
        '(grain reads its own): run under absl.app, call '
        'absl.flags.FLAGS.mark_as_parsed() first, or set '
        'data.num_workers=0'
      )
    ds = ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=data.num_workers, per_worker_buffer_size=max(prefetch, 1)
      )
    )
  return ds


def make_global_batch(
  local_batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding
) -> dict[str, jax.Array]:
  """Assembles each process's [B_local, ...] arrays into global [B, ...]
  arrays laid out by `sharding` (batch axes on the leading dimension)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


class _EpochExample:
  """grain map_with_index fn: stream index k -> example.

  Shuffles with a cached numpy permutation per epoch rather than
  `MapDataset.shuffle`: grain's index_shuffle costs more per element than
  building the example on small datasets (e.g. builtin).
  """

  def __init__(self, builder: examples.ExampleBuilder, *, shuffle: bool):
    self.builder = builder
    self.shuffle = shuffle
    self._epoch, self._order = -1, None

  def __call__(self, index: int, position: int) -> dict[str, np.ndarray]:
    epoch = index // len(self.builder)
    instance = position
    if self.shuffle:
      if epoch != self._epoch:
        self._order = np.random.default_rng((self.builder.seed, 0x5F1E, epoch)).permutation(
          len(self.builder)
        )
        self._epoch = epoch
      instance = int(self._order[position])
    return self.builder(epoch, instance)


def split_documents(num_documents: int, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
  """Ascending indices of the documents trained on and of the
  data.eval_documents held out: the last ones ('last'), or the middle one of
  each of eval_documents equal parts of the source ('spread': for a source in
  topic order, such as files sorted by path, a held-out set of every topic)."""
  count = data.eval_documents
  if count >= num_documents:
    raise DataError(
      f'the source has {num_documents} documents and data.eval_documents='
      f'{count} holds out all of them: lower '
      'data.eval_documents or set data.eval_source'
    )
  if data.eval_split == 'last':
    held_out = np.arange(num_documents - count, num_documents)
  else:
    # floor((i + 1/2) * num_documents / count), in integers.
    held_out = (2 * np.arange(count) + 1) * num_documents // (2 * count)
  return np.setdiff1d(np.arange(num_documents), held_out, assume_unique=True), held_out


def _load_documents(source: str, data: DataConfig, tokenizer: Tokenizer) -> Documents:
  if source.startswith('prepared:'):
    return prepared.PreparedCorpus(source[len('prepared:') :], tokenizer)
  documents = sources.read_documents(source, data)
  return tokenize(documents, tokenizer)
