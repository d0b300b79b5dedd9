"""The initial TrainState of a model on a mesh: abstract, then materialised.

`initial_state` traces the model's init once to get the state's shapes and
their shardings (from the params' logical axes and the sharding rules), which
is what the train step is compiled and a checkpoint is restored against;
`InitialState.materialize` then creates the fresh state in place, each device
computing only its own shards, optionally with given values for some params
(an exported backbone, a model to start from).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from albert_jax.train import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data iterator."""

  step: jax.Array  # [] int32, optimizer updates done.
  params: Any
  opt_state: Any
  rng: jax.Array  # [2] uint32 raw key; dropout key of step s: fold_in(rng, s).


@dataclasses.dataclass(frozen=True)
class InitialState:
  """A fresh TrainState of one model, optimizer and seed on one mesh."""

  model: nn.Module
  inputs: tuple[jax.Array, ...]  # What model.init takes (batch of 1).
  optimizer: optax.GradientTransformation
  rng: jax.Array
  abstract: TrainState  # Unboxed ShapeDtypeStructs carrying their shardings.
  shardings: TrainState  # NamedShardings of every leaf.

  def boxed(self, initial_params: Any = None) -> TrainState:
    """The state with params boxed with their logical axes (traceable).

    `initial_params` {top-level name: unboxed subtree}, when given, replace
    the random values of those params.
    """
    params_rng, dropout_rng = jax.random.split(self.rng)
    params = self.model.init(params_rng, *self.inputs)['params']
    if initial_params is not None:
      params = {
        **params,
        **{
          name: jax.tree.map(
            lambda box, value: box.replace_boxed(value),
            params[name],
            values,
            is_leaf=lambda x: isinstance(x, nn.Partitioned),
          )
          for name, values in initial_params.items()
        },
      }
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=self.optimizer.init(params),
      rng=dropout_rng,
    )

  def materialize(self, initial_params: Any = None) -> TrainState:
    """The state on the mesh (see `boxed` for `initial_params`)."""
    return jax.jit(lambda params: nn.unbox(self.boxed(params)), out_shardings=self.shardings)(
      initial_params
    )


def initial_state(
  model: nn.Module,
  inputs: Sequence[jax.Array],
  *,
  optimizer: optax.GradientTransformation,
  seed: int,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
) -> InitialState:
  """The initial state of `model`, whose init takes `inputs` (batch of 1).

  Raises UsageError when a sharded dimension does not divide over its mesh
  axes.
  """
  partial = InitialState(
    model=model,
    inputs=tuple(inputs),
    optimizer=optimizer,
    rng=jax.random.PRNGKey(seed),
    abstract=None,
    shardings=None,
  )
  abstract, shardings = mesh_lib.sharded_abstract(jax.eval_shape(partial.boxed), mesh, rules)
  return dataclasses.replace(partial, abstract=abstract, shardings=shardings)


def pretraining_inputs(max_seq_length: int, num_predictions: int) -> tuple[jax.Array, ...]:
  """Inputs of AlbertForPreTraining.init: input_ids, input_mask, segment_ids
  [1, max_seq_length] and masked_lm_positions [1, num_predictions], all 0."""
  ids = jnp.zeros((1, max_seq_length), jnp.int32)
  return ids, ids, ids, jnp.zeros((1, num_predictions), jnp.int32)
