"""Shared by tests/test_train_*.py and others: a tiny pretraining config,
in-process or as flags, and the tests' vocabularies."""

import json
import os
from collections.abc import Iterable
from typing import Any

import ml_collections

from albert_jax.data import sources
from albert_jax.data.vocabulary import train_tokenizer
from experiments.configs import pretrain

VOCAB_SIZE = 256

# Sized so every mesh axis of 8 devices (data, fsdp, tensor up to 4) divides
# every sharded dimension, and a step takes milliseconds.
TINY = {
  'model.vocab_size': VOCAB_SIZE,
  'model.hidden_size': 32,
  'model.embedding_size': 16,
  'model.num_layers': 2,
  'model.num_heads': 4,
  'model.intermediate_size': 64,
  'model.max_position_embeddings': 32,
  'data.max_seq_length': 32,
  'data.max_predictions_per_seq': 5,
  'data.eval_documents': 16,
  'train.batch_size': 16,
  'train.num_steps': 4,
  'train.warmup_steps': 1,
  'train.learning_rate': 1e-2,
  'train.log_every': 1,
  'train.eval_every': 1000,
  'train.eval_steps': 1,
  'checkpoint.every_steps': 1000,
}


def train_vocab(directory: str) -> str:
  """Trains the tests' SentencePiece vocabulary into `directory`."""
  train_tokenizer(sources.read_sentences('builtin'), directory, vocab_size=VOCAB_SIZE)
  return directory


def unigram_tokenizer_json(
  directory: str, sentences: Iterable[str], *, vocab_size: int, normalizer: Any
) -> str:
  """Writes a tokenizer.json only (no config) into `directory`: a Unigram
  model trained on `sentences` with `tokenizers`, after `normalizer` (a
  tokenizers.normalizers object)."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  backend = tokenizers.Tokenizer(tokenizers.models.Unigram())
  backend.normalizer = normalizer
  backend.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
  backend.decoder = tokenizers.decoders.Metaspace()
  trainer = tokenizers.trainers.UnigramTrainer(
    vocab_size=vocab_size,
    special_tokens=['<pad>', '<unk>', '[CLS]', '[SEP]', '[MASK]'],
    unk_token='<unk>',
    show_progress=False,
  )
  backend.train_from_iterator(sentences, trainer)
  os.makedirs(directory)
  backend.save(os.path.join(directory, 'tokenizer.json'))
  return directory


def _settings(vocab: str, overrides: dict[str, Any]) -> dict[str, Any]:
  return {**TINY, 'data.vocab': vocab, **overrides}


def tiny_config(vocab: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The tiny preset shrunk further; keys as in TINY ('train.num_steps')."""
  config = pretrain.get_config('tiny')
  for key, value in _settings(vocab, overrides).items():
    section, name = key.split('.')
    config[section][name] = value
  return config


def tiny_flags(vocab: str, **overrides: Any) -> list[str]:
  """The same config as launch.pretrain flags."""
  return [f'--config.{key}={value}' for key, value in _settings(vocab, overrides).items()]


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def train_losses(workdir: str) -> dict[int, float]:
  """{step: loss} of the training records of metrics.jsonl (the last one per step)."""
  return {r['step']: r['loss'] for r in read_metrics(workdir) if 'loss' in r}


def subprocess_env(**extra: str) -> dict[str, str]:
  """Environment for a launcher subprocess (it inherits conftest's compilation cache)."""
  return {**os.environ, **extra}


def snapshot(directory: str) -> dict[str, bytes]:
  """Every file under `directory`: relative path -> contents."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files
