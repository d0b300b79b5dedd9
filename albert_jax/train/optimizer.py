"""Optimizer: ALBERT's LAMB (or AdamW), warmup + linear decay, decay mask as data.

ALBERT pretrains with LAMB (You et al. 2019) as in google-research/albert
`optimization.py`: gradients clipped to global norm 1.0, Adam moments with
beta1 0.9, beta2 0.999, eps 1e-6, weight decay 0.01, and parameters whose name
matches an exclusion rule (LayerNorm, biases) get neither weight decay nor the
layer-wise trust ratio (the original's `exclude_from_layer_adaptation` defaults
to its `exclude_from_weight_decay`). `optax.lamb` applies the trust ratio to
every parameter, so the same chain is assembled here from optax's parts with the
trust ratio masked like the decay. One deliberate difference: the Adam moments
are bias-corrected (optax's `scale_by_adam`); the original's are not, which
only changes the first few hundred (warmup) updates.
"""

from collections.abc import Sequence
import re
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

from albert_jax import tree_paths


def learning_rate_schedule(
    peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""
  warmup_steps = min(warmup_steps, total_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps),
       optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1))],
      boundaries=[warmup_steps])


def weight_decay_mask(params: Any, exclude: Sequence[str]) -> Any:
  """True for parameters to decay: those whose path matches no `exclude` regex.

  Paths look like 'albert/encoder/layer/ffn/LayerNorm/scale'. Works on plain
  and on boxed (nn.Partitioned) parameter trees; the mask has the structure
  of `params`.
  """
  patterns = [re.compile(p) for p in exclude]

  def decay(path, leaf):
    keep = not any(p.search(tree_paths.path_str(path)) for p in patterns)
    return leaf.replace_boxed(keep) if isinstance(leaf, nn.meta.AxisMetadata) else keep

  return jax.tree_util.tree_map_with_path(
      decay, params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def optimizer_and_schedule(
    train: ml_collections.ConfigDict
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of `config.train` and its learning rate schedule (warmup
  to train.learning_rate over train.warmup_steps, then decay to 0 at
  train.num_steps)."""
  schedule = learning_rate_schedule(train.learning_rate, train.warmup_steps,
                                    train.num_steps)
  return make_optimizer(train, schedule), schedule


def make_optimizer(
    train: ml_collections.ConfigDict,
    schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer of `config.train` (optimizer 'lamb' | 'adamw') at learning rate `schedule`."""
  mask = lambda params: weight_decay_mask(params, train.weight_decay_exclude)
  clip = optax.clip_by_global_norm(train.clip_norm)
  if train.optimizer == 'lamb':
    return optax.chain(
        clip,
        optax.scale_by_adam(b1=train.b1, b2=train.b2, eps=train.eps),
        optax.add_decayed_weights(train.weight_decay, mask),
        optax.masked(optax.scale_by_trust_ratio(), mask),
        optax.scale_by_learning_rate(schedule),
    )
  if train.optimizer == 'adamw':
    return optax.chain(
        clip,
        optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps,
                    weight_decay=train.weight_decay, mask=mask),
    )
  raise ValueError(
      f"unknown optimizer {train.optimizer!r}: set --config.train.optimizer to 'lamb' or 'adamw'")
