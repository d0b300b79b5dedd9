"""Shared by tests/test_export.py, test_fill_mask.py, test_evaluate.py,
test_finetune.py, test_model_path.py and test_predict.py: one tiny model
pretrained once per test session on a synthetic, perfectly predictable
corpus, its exports, and a short fine-tuning run of it per task.

The corpus: every document repeats one word of WORDS ("dogs dogs dogs.
dogs dogs."), so a masked word is the word around it, whatever the position
or segment. (Tiny ALBERTs learn position-based rules such as "the next
number" only after thousands of steps; this one is learned in a few hundred.)

The fine-tuning tasks are made from the same words: texts of animal words
vs. texts of thing words; contexts of filler words holding one animal and
one thing, asked "which animal?" / "which thing?".
"""

import atexit
import functools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import jax

from albert_jax import model_path, pretraining
from albert_jax import pretrained as pretrained_lib
from albert_jax.finetune import trainer as finetune_trainer
from albert_jax.finetune.config import FinetuneConfig
from albert_jax.train.config import PretrainConfig
from experiments.configs import finetune, pretrain

import train_testing  # Compilation cache shared with the trainer tests.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGLISH = ('cats', 'mice', 'dogs', 'bones', 'birds', 'nests', 'fish', 'rivers', 'bees', 'honey')
CHINESE = ('猫', '鱼', '老师', '汉字')
WORDS = ENGLISH + CHINESE
NUM_STEPS = 400
SETTINGS = {
  'model.vocab_size': 128,
  'model.embedding_size': 32,
  'model.hidden_size': 48,
  'model.num_layers': 2,
  'model.num_heads': 4,
  'model.intermediate_size': 96,
  'model.max_position_embeddings': 32,
  'data.max_seq_length': 32,
  'data.max_predictions_per_seq': 5,
  'train.batch_size': 32,
  'train.num_steps': NUM_STEPS,
  'train.learning_rate': 3e-2,
  'train.warmup_steps': 10,
  'train.log_every': 100,
  'train.eval_every': NUM_STEPS,
  'train.eval_steps': 2,
  'checkpoint.every_steps': 200,
}


def sentence_end(word: str) -> str:
  return '。' if word in CHINESE else '.'


def write_corpus(path: str, num_documents: int, seed: int) -> str:
  """Documents of one word repeated, in BERT text format; returns `path`."""
  rng = random.Random(seed)
  with open(path, 'w', encoding='utf-8') as f:
    for _ in range(num_documents):
      word = rng.choice(WORDS)
      sentences = [
        ' '.join([word] * rng.randint(3, 6)) + sentence_end(word) for _ in range(rng.randint(2, 4))
      ]
      f.write('\n'.join(sentences) + '\n\n')
  return path


@functools.cache
def pretrained_run() -> tuple[str, Any]:
  """(workdir, config) of the shared run: NUM_STEPS steps on one device, its
  tokenizer trained on the corpus, evaluated on held-out documents at the
  end."""
  root = tempfile.mkdtemp(prefix='albert-jax-export-test-')
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  train = write_corpus(os.path.join(root, 'train.txt'), 300, seed=0)
  heldout = write_corpus(os.path.join(root, 'heldout.txt'), 64, seed=1)
  config = pretrain.get_config('tiny')
  for key, value in {
    **SETTINGS,
    'data.source': f'text:{train}',
    'data.eval_source': f'text:{heldout}',
  }.items():
    section, name = key.split('.')
    config[section][name] = value
  workdir = os.path.join(root, 'run')
  pretraining.train(PretrainConfig.from_config(config), workdir, devices=jax.devices()[:1])
  return workdir, config


@functools.cache
def exported(format_: str) -> str:
  """The shared run exported in `format_` ('flax' | 'hf') by the library."""
  workdir, _ = pretrained_run()
  output = os.path.join(os.path.dirname(workdir), f'export_{format_}')
  pretrained = model_path.restore_run(workdir).pretrained
  save = pretrained_lib.save_hf if format_ == 'hf' else pretrained_lib.save_flax
  save(pretrained, output)
  return output


def heldout_source() -> str:
  _, config = pretrained_run()
  return config.data.eval_source


ANIMALS = ('cats', 'dogs', 'birds', 'fish', 'bees')
THINGS = ('mice', 'bones', 'nests', 'rivers', 'honey')
FILLER = ('猫', '鱼', '老师', '汉字')


def write_classification(path: str, count: int, seed: int) -> str:
  """A TSV of `count` animal / thing texts with a text, label header."""
  rng = random.Random(seed)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('text\tlabel\n')
    for _ in range(count):
      label = rng.choice(['animal', 'thing'])
      words = ANIMALS if label == 'animal' else THINGS
      text = ' '.join(rng.choice(words) for _ in range(rng.randint(3, 6)))
      f.write(f'{text}\t{label}\n')
  return path


def write_squad(path: str, count: int, seed: int) -> str:
  """SQuAD-format JSON: `count` contexts, each asked for its animal and thing."""
  rng = random.Random(seed)
  paragraphs = []
  for i in range(count):
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
    words += [rng.choice(ANIMALS), rng.choice(THINGS)]
    rng.shuffle(words)
    context = ' '.join(words) + '.'
    qas = []
    for kind, group in (('animal', ANIMALS), ('thing', THINGS)):
      position = next(i for i, w in enumerate(words) if w in group)
      start = len(' '.join(words[:position])) + (position > 0)
      qas.append(
        {
          'id': f'{i}-{kind}',
          'question': f'which {kind}?',
          'answers': [{'text': words[position], 'answer_start': start}],
        }
      )
    paragraphs.append({'context': context, 'qas': qas})
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({'version': '1.1', 'data': [{'title': 'synthetic', 'paragraphs': paragraphs}]}, f)
  return path


def finetune_config(task: str, num_steps: int, **data: Any) -> FinetuneConfig:
  """The `task` preset shrunk to the tiny model: `num_steps` steps of 32."""
  config = finetune.get_config(task)
  config.data.update(max_seq_length=32, **data)
  config.train.update(
    batch_size=32,
    num_steps=num_steps,
    num_epochs=0.0,
    warmup_steps=max(1, num_steps // 10),
    warmup_fraction=0.0,
    learning_rate=1e-3,
    log_every=max(1, num_steps // 2),
    eval_every=num_steps,
  )
  return FinetuneConfig.from_config(config)


@functools.cache
def finetuned(task: str) -> str:
  """The workdir of a short fine-tuning run ('classification' | 'span_qa')
  of the flax export, with train and dev data beside it (train.tsv /
  dev.tsv, or train.json / dev.json)."""
  root = os.path.join(os.path.dirname(pretrained_run()[0]), f'finetune_{task}')
  os.makedirs(root)
  if task == 'classification':
    train = write_classification(os.path.join(root, 'train.tsv'), 128, seed=0)
    dev = write_classification(os.path.join(root, 'dev.tsv'), 32, seed=1)
  else:
    train = write_squad(os.path.join(root, 'train.json'), 64, seed=0)
    dev = write_squad(os.path.join(root, 'dev.json'), 16, seed=1)
  workdir = os.path.join(root, 'run')
  finetune_trainer.finetune(
    finetune_config(task, 30, train=train, eval=dev),
    pretrained_lib.load_flax(exported('flax')),
    workdir,
  )
  return workdir


def launch(
  name: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
  """Runs `python -m launch.NAME ARGS` from the repository root."""
  return subprocess.run(
    [sys.executable, '-m', f'launch.{name}', *args],
    cwd=REPO,
    env=train_testing.subprocess_env(**(env or {})),
    text=True,
    capture_output=True,
    timeout=timeout,
  )


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
  """A launcher failed with one `error: ...` line matching `pattern`."""
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0, result.stdout
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert re.search(pattern, lines[0]), lines[0]
