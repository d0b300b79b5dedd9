"""The initial TrainState of a model on a mesh: abstract, then materialised.

`initial_state` traces the model's init once to get the state's shapes and
their shardings (from the params' logical axes and the sharding rules), which
is what the train step is compiled and a checkpoint is restored against;
`InitialState.materialize` then creates the fresh state in place, each device
computing only its own shards, optionally with given values for some params
(an exported backbone, a model to start from).
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from albert_jax.train import mesh as mesh_lib
from albert_jax.train.train_step import TrainState


@dataclasses.dataclass(frozen=True)
class InitialState:
  """A fresh TrainState of one model, optimizer and seed on one mesh."""
  abstract: TrainState  # Unboxed ShapeDtypeStructs carrying their shardings.
  shardings: TrainState  # NamedShardings of every leaf.
  # (rng, initial_params) -> the state, params boxed with logical axes.
  boxed: Callable[[jax.Array, Any], TrainState]
  rng: jax.Array

  def materialize(self, initial_params: Any = None) -> TrainState:
    """The state on the mesh; `initial_params` {top-level name: unboxed
    subtree}, when given, replace the random values of those params."""
    return jax.jit(lambda rng, params: nn.unbox(self.boxed(rng, params)),
                   out_shardings=self.shardings)(self.rng, initial_params)


def initial_state(model: nn.Module, inputs: Sequence[jax.Array], *,
                  optimizer: optax.GradientTransformation, seed: int,
                  mesh: jax.sharding.Mesh,
                  rules: mesh_lib.LogicalRules) -> InitialState:
  """The initial state of `model`, whose init takes `inputs` (batch of 1).

  Raises UsageError when a sharded dimension does not divide over its mesh
  axes.
  """
  def boxed(rng: jax.Array, initial_params: Any = None) -> TrainState:
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, *inputs)['params']
    if initial_params is not None:
      params = {**params, **{
          name: jax.tree.map(lambda box, value: box.replace_boxed(value),
                             params[name], values,
                             is_leaf=lambda x: isinstance(x, nn.Partitioned))
          for name, values in initial_params.items()}}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=dropout_rng)

  rng = jax.random.PRNGKey(seed)
  abstract, shardings = mesh_lib.sharded_abstract(
      jax.eval_shape(boxed, rng), mesh, rules)
  return InitialState(abstract=abstract, shardings=shardings, boxed=boxed,
                      rng=rng)


def pretraining_inputs(max_seq_length: int,
                       num_predictions: int) -> tuple[jax.Array, ...]:
  """Inputs of AlbertForPreTraining.init: input_ids, input_mask, segment_ids
  [1, max_seq_length] and masked_lm_positions [1, num_predictions], all 0."""
  ids = jnp.zeros((1, max_seq_length), jnp.int32)
  return ids, ids, ids, jnp.zeros((1, num_predictions), jnp.int32)
