"""One place that assembles a run: mesh, sharding rules, batch sharding,
optimizer and schedule, initial state, and the jitted train and eval steps.

Pretraining, fine-tuning, the benchmark and evaluation all start from
`assemble`; each brings only its own model, objective and data. The loop
(train/loop.py) takes the resulting `Run`.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from albert_jax import backend_defaults
from albert_jax.config import ModelConfig
from albert_jax.data import pipeline
from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import optimizer as optimizer_lib
from albert_jax.train import state as state_lib
from albert_jax.train import train_step as step_lib
from albert_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Run:
  """A model and its objective, compiled for a mesh."""

  mesh: jax.sharding.Mesh
  rules: mesh_lib.LogicalRules
  batch_sharding: jax.sharding.NamedSharding  # Of global batches [batch, ...].
  objective: step_lib.Objective
  initial: state_lib.InitialState
  # (state, global batch) -> (state, scalar metrics); the state is donated.
  # None for an evaluation-only run.
  train_step: Callable[..., tuple[step_lib.TrainState, step_lib.Metrics]] | None
  # (params, global batch) -> the objective's float32 sums.
  eval_step: Callable[[Any, step_lib.Batch], step_lib.Metrics]
  # (params, global batch) -> (eval_step's sums, per-example outcomes [B]);
  # None when the objective defines no outcomes.
  outcome_step: Callable[[Any, step_lib.Batch], tuple[step_lib.Metrics, step_lib.Metrics]] | None
  flops_per_example: float  # Model FLOPs of one example's train step.
  tokens_per_example: int
  # The train config the step runs, with its "auto" (0) settings chosen for
  # the backend; None for an evaluation-only run.
  train: TrainConfig | None
  model_config: ModelConfig

  @property
  def layer_unroll(self) -> int:
    """Layers per iteration of the model's layer loop, as the model chooses
    them (model.py, Encoder)."""
    config = self.model_config
    return backend_defaults.layer_unroll(
      config.unroll, config.num_layer_applications, jax.default_backend()
    )

  @property
  def step_settings(self) -> str:
    """How the step runs, e.g. '2 micro-batches per step; 12 of 12 layers
    per loop iteration'."""
    steps = self.train.grad_accum_steps if self.train else 0
    micro = f'{steps} micro-batch{"es" if steps > 1 else ""} per step; ' if steps else ''
    depth = self.model_config.num_layer_applications
    return f'{micro}{self.layer_unroll} of {depth} layers per loop iteration'

  @property
  def num_params(self) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(self.initial.abstract.params))

  def place_params(self, params: Any) -> Any:
    """`params` (host or device arrays) laid out on the mesh as the run's."""
    return jax.device_put(params, self.initial.shardings.params)

  def evaluate(
    self,
    params: Any,
    batches: Iterable[dict[str, Any]],
    outcomes: dict[str, list[np.ndarray]] | None = None,
  ) -> dict[str, float]:
    """The objective's metrics summed over this process's `batches`; with
    `outcomes` (a dict, filled), also each global batch's per-example
    outcomes, appended per key as host arrays."""
    sums = None
    with mesh_lib.activate(self.mesh, self.rules):
      for local in batches:
        batch = pipeline.make_global_batch(local, self.batch_sharding)
        if outcomes is None:
          batch_sums = self.eval_step(params, batch)
        else:
          batch_sums, per_example = self.outcome_step(params, batch)
          for key, value in jax.device_get(per_example).items():
            outcomes.setdefault(key, []).append(np.asarray(value))
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
    metrics = jax.device_get(self.objective.summarize(sums))
    return {**{k: float(v) for k, v in metrics.items()}, 'examples': float(sums['examples'])}


def assemble(
  model: nn.Module,
  init_inputs: Sequence[jax.Array],
  objective: step_lib.Objective,
  *,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
  train: TrainConfig | None,
  flops_per_example: float = 0.0,
  tokens_per_example: int = 0,
  batch_factor: int = 1,
) -> Run:
  """The run of `model` (whose init takes `init_inputs`, batch of 1).

  Args:
    objective: what the train and eval steps compute.
    mesh, rules: where the state and batches live.
    train: optimisation settings; None for evaluation only (no train step).
    flops_per_example, tokens_per_example: for throughput and MFU.
    batch_factor: the batch must also split this many ways (fine-tuning
      feeds each process an equal share of every micro-batch).
  Raises UsageError for a batch or a parameter that does not split.
  """
  train = _for_backend(train, mesh, rules, batch_factor, tokens_per_example)
  optimizer, schedule = _optimizer(model, init_inputs, train, mesh, rules, batch_factor)
  initial = state_lib.initial_state(
    model, init_inputs, optimizer=optimizer, seed=train.seed if train else 0, mesh=mesh, rules=rules
  )
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  replicated = mesh_lib.replicated(mesh)
  train_step = None
  if train is not None:
    step = functools.partial(
      step_lib.train_step,
      objective=objective,
      optimizer=optimizer,
      schedule=schedule,
      grad_accum_steps=train.grad_accum_steps,
    )
    train_step = jax.jit(
      step,
      in_shardings=(initial.shardings, batch_sharding),
      out_shardings=(initial.shardings, replicated),
      donate_argnums=0,
    )
  eval_step, outcome_step = _eval_steps(objective, initial, batch_sharding, replicated)
  return Run(
    mesh=mesh,
    rules=rules,
    batch_sharding=batch_sharding,
    objective=objective,
    initial=initial,
    train_step=train_step,
    eval_step=eval_step,
    outcome_step=outcome_step,
    flops_per_example=flops_per_example,
    tokens_per_example=tokens_per_example,
    train=train,
    model_config=model.config,
  )


def _for_backend(
  train: TrainConfig | None,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
  batch_factor: int,
  tokens_per_example: int,
) -> TrainConfig | None:
  """`train` with grad_accum_steps 0 replaced by the backend's choice."""
  if train is None:
    return None
  shards = mesh_lib.batch_shards(mesh, rules)
  splits_into, rest = divmod(train.batch_size, shards * batch_factor)
  steps = backend_defaults.grad_accum_steps(
    train.grad_accum_steps,
    examples_per_device=train.batch_size // shards,
    splits_into=0 if rest else splits_into,
    tokens_per_example=tokens_per_example,
    backend=mesh.devices.flat[0].platform,
  )
  return dataclasses.replace(train, grad_accum_steps=steps)


def _eval_steps(
  objective: step_lib.Objective,
  initial: state_lib.InitialState,
  batch_sharding: jax.sharding.NamedSharding,
  replicated: jax.sharding.NamedSharding,
) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
  """The jitted eval step, and the outcome step of an objective with outcomes."""
  in_shardings = (initial.shardings.params, batch_sharding)
  eval_step = jax.jit(
    functools.partial(step_lib.eval_step, objective=objective),
    in_shardings=in_shardings,
    out_shardings=replicated,
  )
  if not hasattr(objective, 'outcomes'):
    return eval_step, None
  # Replicated: every process gets all of a batch's outcomes.
  outcome_step = jax.jit(
    functools.partial(step_lib.outcome_step, objective=objective),
    in_shardings=in_shardings,
    out_shardings=(replicated, replicated),
  )
  return eval_step, outcome_step


def _optimizer(
  model: nn.Module,
  init_inputs: Sequence[jax.Array],
  train: TrainConfig | None,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
  batch_factor: int,
) -> tuple[optax.GradientTransformation, optax.Schedule | None]:
  """The optimizer and schedule of `train` (none for evaluation), once the
  batch is known to split over the mesh and the processes."""
  if train is None:
    return optax.identity(), None
  mesh_lib.check_batch_split(
    train.batch_size, train.grad_accum_steps, mesh, rules, factor=batch_factor
  )
  if train.batch_size % jax.process_count():
    raise UsageError(
      f'train.batch_size={train.batch_size} does not split over {jax.process_count()} processes'
    )
  # LAMB's trust ratio is per layer: it needs to know which axes stack layers.
  return optimizer_lib.optimizer_and_schedule(
    train, param_axes=optimizer_lib.model_param_axes(model, *init_inputs)
  )
