"""What the fine-tuning loop needs from a task, whatever the task.

A task module (classification.py, span_qa.py) turns `config.data` and the
pretrained model's tokenizer into a `Task`: features as numpy arrays with a
leading example axis, the model with its head, the loss as a train-step
Objective, a `score` from the eval model outputs to metrics, and the class
names the head predicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import numpy as np

from albert_jax.train.step import Objective

Features = dict[str, np.ndarray]
# The features a task model takes, in its call order.
MODEL_INPUTS = ('input_ids', 'input_mask', 'segment_ids')


@dataclasses.dataclass(frozen=True)
class Task:
  model: nn.Module
  objective: Objective
  train: Features  # [num_train_features, ...] arrays, training targets included.
  eval: Features | None  # The eval features (model inputs), or None.
  # Eval model outputs (numpy, one row per eval feature) -> metrics.
  score: Callable[[Mapping[str, np.ndarray]], dict[str, float]]
  labels: tuple[str, ...] = ()  # Class names by class id; () for span QA.
  model_inputs: tuple[str, ...] = MODEL_INPUTS


def num_rows(features: Features) -> int:
  return len(next(iter(features.values())))
