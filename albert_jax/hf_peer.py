"""The reference peers of `launch.benchmark --peer=hf`, in Hugging Face
transformers' PyTorch:
  TorchTrainer      `AlbertForPreTraining`, trained with `torch.optim.AdamW`
                    on the same config and batch as the JAX step;
  ClassifierTrainer fine-tuning as a plain transformers loop does it:
                    `AlbertForSequenceClassification` from the same exported
                    model, the same TSV tokenized by its `AlbertTokenizer`,
                    shuffled batches padded by `DataCollatorWithPadding`,
                    `torch.optim.AdamW` with a linear warmup then decay
                    (`get_linear_schedule_with_warmup`), gradient clipping;
                    `finetune_command` is that whole script (load, tokenize,
                    train, evaluate), timed end to end.

As Hugging Face runs it: MLM logits at every position (labels -100 where
nothing is masked), the default attention implementation (SDPA), eager mode.

`PeerProcess` runs the peer in a child process that the benchmark drives round
by round, so the two frameworks alternate on the same cores but do not share
an address space: torch's allocator and thread pool living in the JAX process
slow the JAX step down (benchmarks/results/README.md). Only the child imports
torch.
"""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from albert_jax import hf
from albert_jax.config import ModelConfig

_IGNORE = -100  # Hugging Face's label for positions without a loss.
# The child process finds albert_jax where this one did (installed, or on a
# path such as the working directory of `python -m`), whatever its own working
# directory: this process's import path, made absolute while '' still means
# the directory albert_jax was imported from.
_IMPORT_PATH = [os.path.abspath(p or os.curdir) for p in sys.path if os.path.exists(p or os.curdir)]


def _timed_steps(step: Callable[[], float], num_steps: int) -> tuple[float, float]:
  """(wall, CPU) seconds for `num_steps` calls of `step`, which returns the
  loss; a non-finite last loss is an error."""
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_steps):
    loss = step()
  elapsed = time.perf_counter() - start, time.process_time() - cpu
  if not np.isfinite(loss):
    raise FloatingPointError(f'the Hugging Face peer gave loss {loss}')
  return elapsed


class TorchTrainer:
  """Runs training steps of AlbertForPreTraining on one fixed batch."""

  def __init__(
    self,
    config: ModelConfig,
    batch: Mapping[str, np.ndarray],
    *,
    learning_rate: float,
    weight_decay: float,
    b1: float,
    b2: float,
    eps: float,
    clip_norm: float,
    num_threads: int,
    seed: int = 0,
  ):
    """`batch` follows the data contract (albert_jax.benchmark.synthetic_batch);
    `num_threads` intra-op threads, as many as XLA uses."""
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top

    self._torch = torch
    torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    self.model = transformers.AlbertForPreTraining(
      transformers.AlbertConfig(**hf.to_hf_config(config))
    )
    self.model.train()
    self.optimizer = torch.optim.AdamW(
      self.model.parameters(), lr=learning_rate, betas=(b1, b2), eps=eps, weight_decay=weight_decay
    )
    self._clip_norm = clip_norm
    labels = np.full(batch['input_ids'].shape, _IGNORE, np.int64)
    np.put_along_axis(
      labels,
      batch['masked_lm_positions'],
      np.where(batch['masked_lm_weights'] > 0, batch['masked_lm_ids'], _IGNORE),
      axis=1,
    )
    tensor = lambda x: torch.from_numpy(np.asarray(x, np.int64))
    self._inputs = dict(
      input_ids=tensor(batch['input_ids']),
      attention_mask=tensor(batch['input_mask']),
      token_type_ids=tensor(batch['segment_ids']),
      labels=tensor(labels),
      sentence_order_label=tensor(batch['sentence_order_label']),
    )

  def describe(self) -> dict[str, Any]:
    return {
      'peer_attention': self.model.config._attn_implementation,  # pylint: disable=protected-access
      'peer_threads': self._torch.get_num_threads(),
      'torch_version': self._torch.__version__,
    }

  def step(self) -> float:
    """One optimizer update; returns the loss."""
    loss = self.model(**self._inputs).loss
    loss.backward()
    self._torch.nn.utils.clip_grad_norm_(self.model.parameters(), self._clip_norm)
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    return loss.item()

  def run(self, num_steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `num_steps` steps."""
    return _timed_steps(self.step, num_steps)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The fine-tuning settings both sides share (the JAX run's train config)."""

  batch_size: int
  num_epochs: float
  learning_rate: float
  warmup_fraction: float
  weight_decay: float
  b1: float
  b2: float
  eps: float
  clip_norm: float
  max_seq_length: int
  seed: int


class ClassifierTrainer:
  """AlbertForSequenceClassification fine-tuned on a TSV, as a plain
  transformers loop (see module docstring)."""

  def __init__(self, model: str, train: str, recipe: Recipe, num_threads: int):
    """`model`: a Hugging Face directory (launch.export --format=hf); `train`:
    a TSV with a header naming `text` and `label` (classification.py)."""
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top

    self._torch = torch
    torch.set_num_threads(num_threads)
    torch.manual_seed(recipe.seed)
    self.recipe = recipe
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    texts, labels = read_tsv(train)
    self.classes = sorted(set(labels))
    rows = self.encode(texts, labels)
    self.model = transformers.AlbertForSequenceClassification.from_pretrained(
      model, num_labels=len(self.classes)
    )
    self.model.train()
    collator = transformers.DataCollatorWithPadding(self.tokenizer)
    generator = torch.Generator().manual_seed(recipe.seed)
    self._loader = torch.utils.data.DataLoader(
      rows,
      batch_size=recipe.batch_size,
      shuffle=True,
      drop_last=True,
      collate_fn=collator,
      generator=generator,
    )
    self.num_steps = max(1, math.ceil(recipe.num_epochs * len(rows) / recipe.batch_size))
    self.optimizer = torch.optim.AdamW(
      self.model.parameters(),
      lr=recipe.learning_rate,
      betas=(recipe.b1, recipe.b2),
      eps=recipe.eps,
      weight_decay=recipe.weight_decay,
    )
    self.scheduler = transformers.get_linear_schedule_with_warmup(
      self.optimizer, round(recipe.warmup_fraction * self.num_steps), self.num_steps
    )
    self._batches = self._endless()
    self.examples = 0

  def encode(self, texts: list[str], labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Token ids (truncated to max_seq_length, not padded) and class ids."""
    encoded = self.tokenizer(texts, truncation=True, max_length=self.recipe.max_seq_length)
    rows = [dict(zip(encoded, values)) for values in zip(*encoded.values())]
    for row, label in zip(rows, labels or []):
      row['labels'] = self.classes.index(label)
    return rows

  def _endless(self):
    while True:
      yield from self._loader

  def step(self) -> float:
    """One optimizer update on the next batch; returns the loss."""
    batch = next(self._batches)
    loss = self.model(**batch).loss
    loss.backward()
    self._torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_norm)
    self.optimizer.step()
    self.scheduler.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.examples += self.recipe.batch_size
    return loss.item()

  def run(self, num_steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `num_steps` steps."""
    return _timed_steps(self.step, num_steps)

  def accuracy(self, path: str) -> float:
    """Accuracy on the labelled TSV `path`, in batches padded per batch."""
    import transformers  # pylint: disable=g-import-not-at-top

    texts, labels = read_tsv(path)
    rows = self.encode(texts, labels)
    collator = transformers.DataCollatorWithPadding(self.tokenizer)
    self.model.eval()
    correct = 0
    with self._torch.no_grad():
      for start in range(0, len(rows), self.recipe.batch_size):
        batch = collator(rows[start : start + self.recipe.batch_size])
        gold = batch.pop('labels')
        correct += int((self.model(**batch).logits.argmax(-1) == gold).sum())
    self.model.train()
    return correct / len(rows)

  def describe(self) -> dict[str, Any]:
    return {
      'peer_attention': self.model.config._attn_implementation,  # pylint: disable=protected-access
      'peer_threads': self._torch.get_num_threads(),
      'torch_version': self._torch.__version__,
      'peer_steps': self.num_steps,
    }


def read_tsv(path: str) -> tuple[list[str], list[str]]:
  """The text and label columns of a TSV with a header naming them."""
  with open(path, encoding='utf-8') as f:
    rows = list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  text, label = rows[0].index('text'), rows[0].index('label')
  return [r[text] for r in rows[1:] if r], [r[label] for r in rows[1:] if r]


def finetune_command(model: str, train: str, evaluation: str, recipe: Recipe, num_threads: int):
  """The whole plain transformers script: load, tokenize, train the recipe's
  epochs, evaluate on `evaluation` (if given). Returns {'wall_s', 'loop_s',
  'examples', 'accuracy'} (wall: from the start of this call, imports included)."""
  start = time.perf_counter()
  trainer = ClassifierTrainer(model, train, recipe, num_threads)
  loop_start = time.perf_counter()
  trainer.run(trainer.num_steps)
  loop_s = time.perf_counter() - loop_start
  accuracy = trainer.accuracy(evaluation) if evaluation else None
  return {
    'wall_s': time.perf_counter() - start,
    'loop_s': loop_s,
    'examples': trainer.examples,
    'accuracy': accuracy,
    **trainer.describe(),
  }


class PeerProcess:
  """A TorchTrainer (or, with `classifier`, a ClassifierTrainer) in a child
  process; `run(n)` there returns (wall, CPU)."""

  def __init__(
    self,
    config: ModelConfig | None,
    batch: Mapping[str, np.ndarray] | None,
    *,
    classifier: Mapping[str, Any] | None = None,
    **trainer_kwargs,
  ):
    """`classifier`: ClassifierTrainer's arguments (model, train, recipe as a
    dict, num_threads) instead of a config and batch."""
    self._batch_path = None
    if classifier is not None:
      spec = {'classifier': dict(classifier)}
    else:
      with tempfile.NamedTemporaryFile(suffix='.npz', delete=False) as f:
        np.savez(f, **batch)
      self._batch_path = f.name
      spec = {'config': dataclasses.asdict(config), 'batch': f.name, 'kwargs': trainer_kwargs}
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(_IMPORT_PATH)}
    self._child = subprocess.Popen(
      [sys.executable, '-m', 'albert_jax.hf_peer'],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env=env,
    )
    self.info = self._call(spec)

  def _call(self, message: Any) -> Any:
    self._child.stdin.write(json.dumps(message) + '\n')
    self._child.stdin.flush()
    reply = self._child.stdout.readline()
    if not reply:
      raise RuntimeError(f'the Hugging Face peer exited ({self._child.wait()})')
    return json.loads(reply)

  def run(self, num_steps: int) -> tuple[float, float]:
    return tuple(self._call(num_steps))

  def close(self) -> None:
    self._child.stdin.close()
    self._child.wait()
    if self._batch_path:
      os.remove(self._batch_path)


def _serve() -> None:
  """Child side of PeerProcess: a spec line, then one line per `run`."""
  spec = json.loads(sys.stdin.readline())
  if 'classifier' in spec:
    kwargs = spec['classifier']
    trainer = ClassifierTrainer(**{**kwargs, 'recipe': Recipe(**kwargs['recipe'])})
  else:
    with np.load(spec['batch']) as npz:
      batch = dict(npz)
    trainer = TorchTrainer(ModelConfig(**spec['config']), batch, **spec['kwargs'])
  print(json.dumps(trainer.describe()), flush=True)
  for line in sys.stdin:
    print(json.dumps(trainer.run(int(line))), flush=True)


if __name__ == '__main__':
  if sys.argv[1:2] == ['finetune']:  # The whole command: a JSON spec, a JSON result.
    args = json.loads(sys.argv[2])
    args['recipe'] = Recipe(**args['recipe'])
    print(json.dumps(finetune_command(**args)), flush=True)
  else:
    _serve()
