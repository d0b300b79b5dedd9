"""The reference peer of `launch.benchmark --peer=hf`: Hugging Face transformers'
PyTorch `AlbertForPreTraining`, trained with `torch.optim.AdamW` on the same
config and batch as the JAX step.

As Hugging Face runs it: MLM logits at every position (labels -100 where
nothing is masked), the default attention implementation (SDPA), eager mode.

`PeerProcess` runs the peer in a child process that the benchmark drives round
by round, so the two frameworks alternate on the same cores but do not share
an address space: torch's allocator and thread pool living in the JAX process
slow the JAX step down (benchmarks/results/README.md). Only the child imports
torch.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
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
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_steps):
      loss = self.step()
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    if not np.isfinite(loss):
      raise FloatingPointError(f'the Hugging Face peer gave loss {loss}')
    return elapsed


class PeerProcess:
  """A TorchTrainer in a child process; `run(n)` there returns (wall, CPU)."""

  def __init__(self, config: ModelConfig, batch: Mapping[str, np.ndarray], **trainer_kwargs):
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
    os.remove(self._batch_path)


def _serve() -> None:
  """Child side of PeerProcess: a spec line, then one line per `run`."""
  spec = json.loads(sys.stdin.readline())
  with np.load(spec['batch']) as npz:
    batch = dict(npz)
  trainer = TorchTrainer(ModelConfig(**spec['config']), batch, **spec['kwargs'])
  print(json.dumps(trainer.describe()), flush=True)
  for line in sys.stdin:
    print(json.dumps(trainer.run(int(line))), flush=True)


if __name__ == '__main__':
  _serve()
