"""What the fine-tuning loop needs from a task, whatever the task.

A task module (classification.py, span_qa.py) turns `config.data` and the
pretrained model's tokenizer into a `Task`: features as numpy arrays with a
leading example axis, the model with its head, the loss as a train-step
Objective, and a `score` from the eval model outputs to metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import numpy as np

from albert_jax.train.train_step import Objective

Features = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
  model: nn.Module
  objective: Objective
  train: Features  # [num_train_features, ...] arrays, training targets included.
  eval: Features | None  # The eval features (model inputs), or None.
  # Eval model outputs (numpy, one row per eval feature) -> metrics.
  score: Callable[[Mapping[str, np.ndarray]], dict[str, float]]
  model_inputs: tuple[str, ...] = ('input_ids', 'input_mask', 'segment_ids')


def num_rows(features: Features) -> int:
  return len(next(iter(features.values())))
