"""Optimizer: ALBERT's LAMB (or AdamW), warmup + linear decay, decay mask as data.

The learning rate is the original's (`optimization.py`): a linear (power 1
polynomial) decay from the peak at step 0 to 0 at num_steps, overridden by the
linear warmup peak * step / warmup_steps while step < warmup_steps; so the
peak is never quite reached. `train.decay_from_step_0=False` starts the decay
after warmup instead (peak at the end of warmup), as this code used to.

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

Layers stacked by `nn.scan` (albert_jax/model.py) are one array [L, ...] here
but L variables in the original, and the trust ratio is a per-variable norm:
the optimizer takes the params' logical axis names (`param_axes`) and computes
one ratio per layer slice, as if each layer were its own variable. Everything
else in LAMB is elementwise (Adam moments, weight decay) or global (the
gradient clip), so equal either way.
"""

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from albert_jax import tree_paths
from albert_jax.train.config import TrainConfig


def learning_rate_schedule(
  peak: float, warmup_steps: int, total_steps: int, *, decay_from_step_0: bool = True
) -> optax.Schedule:
  """The learning rate at each step (see module docstring).

  decay_from_step_0: the original's peak * (1 - step / total_steps) (clamped
  at 0), with peak * step / warmup_steps while step < warmup_steps. False:
  linear warmup 0 -> `peak` over `warmup_steps`, then linear decay to 0 at
  `total_steps`.
  """
  if decay_from_step_0:

    def schedule(step):
      step = jnp.asarray(step, jnp.float32)
      decay = peak * (1.0 - jnp.minimum(step, total_steps) / total_steps)
      if not warmup_steps:
        return decay
      return jnp.where(step < warmup_steps, peak * step / warmup_steps, decay)

    return schedule
  warmup_steps = min(warmup_steps, total_steps)
  return optax.join_schedules(
    [
      optax.linear_schedule(0.0, peak, warmup_steps),
      optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1)),
    ],
    boundaries=[warmup_steps],
  )


def scale_by_adam_uncorrected(
  b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6
) -> optax.GradientTransformation:
  """Adam's direction m / (sqrt(v) + eps) without bias correction, as the
  original's AdamWeightDecayOptimizer: m and v are the plain moving averages
  (from zeros) of the gradient and its square. Its state is optax's
  ScaleByAdamState, so checkpoints fit either setting."""

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    count = optax.safe_increment(state.count)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


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
    decay, params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)
  )


# The logical name of the leading param axis of stacked layers (model.py,
# `_layer_loop`). A nested stacked level (inner groups within G > 1 groups)
# adds an unnamed (None) axis right after it: an array's logical names must be
# unique. Below those, every param axis of the model has a name.
LAYER_AXIS = 'layers'

# A pytree with the structure of the params whose leaves are tuples of logical
# axis names (str or None), one per array dimension; () for a param without
# names.
ParamAxes = Any


def logical_axes(boxed_params: Any) -> ParamAxes:
  """The logical axis names of each param of a boxed (nn.Partitioned) tree.

  `boxed_params` is what `model.init` returns under 'params' (concrete or
  from jax.eval_shape); leaves that are not boxed get ().
  """
  return jax.tree.map(
    lambda x: tuple(x.names) if isinstance(x, nn.Partitioned) else (),
    boxed_params,
    is_leaf=lambda x: isinstance(x, nn.Partitioned),
  )


def model_param_axes(model: nn.Module, *init_args: Any, **init_kwargs: Any) -> ParamAxes:
  """The logical axis names of `model`'s params, computing no param.

  `init_args` / `init_kwargs` are what `model.init` takes after its rng
  (e.g. state.pretraining_inputs(...) for AlbertForPreTraining); only their
  shapes matter. The result is what `optimizer_and_schedule` takes.
  """
  init = functools.partial(model.init, jax.random.PRNGKey(0))
  variables = jax.eval_shape(init, *init_args, **init_kwargs)
  return logical_axes(variables['params'])


def num_layer_axes(names: Sequence[str | None]) -> int:
  """How many leading axes of a param with logical `names` index its layers.

  0 for a param not stacked by the scan; 1 for [L, ...]; 2 for [G, I, ...]
  (groups, then the inner layers of each group).
  """
  names = tuple(names)
  if not names or names[0] != LAYER_AXIS:
    return 0
  count = 1
  while count < len(names) and names[count] is None:
    count += 1
  return count


def _layer_axes_by_path(axes: ParamAxes) -> dict[str, int]:
  """{param path: number of leading layer axes} of a ParamAxes tree."""
  is_names = lambda x: isinstance(x, (tuple, jax.sharding.PartitionSpec))
  return {
    tree_paths.path_str(path): num_layer_axes(names)
    for path, names in jax.tree_util.tree_flatten_with_path(axes, is_leaf=is_names)[0]
  }


def scale_by_layerwise_trust_ratio(
  layer_axes: Mapping[str, int] | None = None,
) -> optax.GradientTransformation:
  """`optax.scale_by_trust_ratio` with one ratio per layer of stacked params.

  Args:
    layer_axes: {param path ('albert/encoder/layer/ffn/dense/kernel'): number
      of leading layer axes}. A param with k > 0 gets a ratio per slice of
      its first k axes, the same as the trust ratio of each layer as its own
      variable; the others one ratio for the whole array, computed exactly as
      optax does. None: no param is stacked.
  """
  trust_ratio = optax.scale_by_trust_ratio()

  def scale(update: jax.Array, param: jax.Array, stacked: int) -> jax.Array:
    fn = lambda u, p: trust_ratio.update(u, optax.EmptyState(), p)[0]
    for _ in range(stacked):
      fn = jax.vmap(fn)
    return fn(update, param)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('the trust ratio needs the params: pass them to update')

    def leaf(path, update, param):
      if layer_axes is None:
        return scale(update, param, 0)
      name = tree_paths.path_str(path)
      if name not in layer_axes:
        raise ValueError(
          f'param {name} is missing from param_axes: compute them from the '
          'model being trained (optimizer.model_param_axes)'
        )
      return scale(update, param, layer_axes[name])

    return jax.tree_util.tree_map_with_path(leaf, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def optimizer_and_schedule(
  train: TrainConfig, *, param_axes: ParamAxes | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of `config.train` and its learning rate schedule (linear
  warmup over train.warmup_steps, linear decay to 0 at train.num_steps; see
  `learning_rate_schedule`).

  `param_axes`: the logical axis names of the params to train (see
  `model_param_axes` / `logical_axes`), from which LAMB learns which params
  are stacked layers; None treats every param as one variable, which is only
  right when no layer is stacked (sharing 'all', one group, one inner layer).
  """
  schedule = learning_rate_schedule(
    train.learning_rate,
    train.warmup_steps,
    train.num_steps,
    decay_from_step_0=train.decay_from_step_0,
  )
  return make_optimizer(train, schedule, param_axes=param_axes), schedule


def make_optimizer(
  train: TrainConfig, schedule: optax.Schedule, *, param_axes: ParamAxes | None = None
) -> optax.GradientTransformation:
  """The optimizer of `config.train` (optimizer 'lamb' | 'adamw') at learning
  rate `schedule`; `param_axes` as in `optimizer_and_schedule`."""
  mask = lambda params: weight_decay_mask(params, train.weight_decay_exclude)
  clip = optax.clip_by_global_norm(train.clip_norm)
  if train.optimizer == 'lamb':
    layer_axes = None if param_axes is None else _layer_axes_by_path(param_axes)
    return optax.chain(
      clip,
      optax.scale_by_adam(b1=train.b1, b2=train.b2, eps=train.eps),
      optax.add_decayed_weights(train.weight_decay, mask),
      optax.masked(scale_by_layerwise_trust_ratio(layer_axes), mask),
      optax.scale_by_learning_rate(schedule),
    )
  if train.optimizer == 'adamw':
    # Elementwise: stacked layers need nothing of their own. The same chain
    # as optax.adamw (one state layout for both settings).
    adam = optax.scale_by_adam if train.adamw_bias_correction else scale_by_adam_uncorrected
    return optax.chain(
      clip,
      optax.chain(
        adam(b1=train.b1, b2=train.b2, eps=train.eps),
        optax.add_decayed_weights(train.weight_decay, mask),
        optax.scale_by_learning_rate(schedule),
      ),
    )
  raise ValueError(
    f"unknown optimizer {train.optimizer!r}: set --config.train.optimizer to 'lamb' or 'adamw'"
  )
