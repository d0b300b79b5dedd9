"""The train step: its body, its jit over the mesh, and how the loop calls it.

From the command line to the jitted step in three files:
  launch/pretrain.py          flags -> a PretrainConfig record
  albert_jax/pretraining.py   the trainer: the run assembled here (`assemble`),
                              its data, initial params, the loop (train/loop.py)
  albert_jax/train/step.py    this module, read top to bottom:
    Run        what a run holds: mesh, shardings, initial state, the jitted
               steps; `Run.step(state, batch)` is the loop's call, each step
    assemble   mesh, batch sharding, optimizer and schedule, initial state,
               and `jax.jit` of the steps with in/out shardings and donated
               state: one place for pretraining, fine-tuning, the benchmark
               and evaluation, each bringing only its model, objective, data
    train_step the body: gradient accumulation, one optimizer update
    eval_step, outcome_step  the objective's sums (and per-example outcomes)

An Objective says what a step optimises: `sums` runs the model on a batch and
returns float32 per-batch sums (losses, hits, counts) that add up over
micro-batches and eval batches; `loss` turns a micro-batch's sums into its
share of the batch loss, normalised by `normalizers` of the whole batch;
`summarize` turns sums into metrics. Pretraining's is in
albert_jax/pretraining.py, fine-tuning's in albert_jax/finetune/.

Gradient accumulation is a `lax.scan` over micro-batches inside one step, not
`optax.MultiSteps`: every call is one optimizer update (so `step`, the learning
rate schedule and checkpoints count updates), the optimizer state carries no
accumulator, and each micro-batch stays sharded over the batch axes. The loss of
each micro-batch is normalised by the totals of the whole batch, so the summed
gradients equal those of the full batch, not a mean of per-micro-batch means.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

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
from albert_jax.train.config import TrainConfig
from albert_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]

Metrics = dict[str, jax.Array]


class Objective(Protocol):
  """A model and its loss, as the train and eval steps see them. One may also
  define `outcomes(params, batch)`: `sums(params, batch, None)` and per-example
  [B] outcomes from one forward pass, for `outcome_step`."""

  def sums(self, params: Any, batch: Batch, dropout_rng: jax.Array | None) -> Metrics:
    """Float32 scalar sums over the examples of `batch` (None: no dropout)."""

  def normalizers(self, batch: Batch) -> Metrics:
    """The denominators of the loss, from the whole (global) batch."""

  def loss(self, sums: Metrics, normalizers: Metrics) -> jax.Array:
    """A (micro-)batch's share of the batch loss; linear in `sums`."""

  def summarize(self, sums: Metrics) -> Metrics:
    """Losses and accuracies from sums added over any number of batches."""


def apply(
  model: nn.Module,
  params: Any,
  batch: Batch,
  inputs: tuple[str, ...],
  dropout_rng: jax.Array | None,
) -> Metrics:
  """`model`'s outputs on `batch`'s `inputs` (in the model's call order), with
  dropout from `dropout_rng`; none when it is None (evaluation)."""
  return model.apply(
    {'params': params},
    *(batch[name] for name in inputs),
    deterministic=dropout_rng is None,
    rngs=None if dropout_rng is None else {'dropout': dropout_rng},
  )


@dataclasses.dataclass(frozen=True)
class Run:
  """A model and its objective, compiled for a mesh."""

  mesh: jax.sharding.Mesh
  rules: mesh_lib.LogicalRules
  batch_sharding: jax.sharding.NamedSharding  # Of global batches [batch, ...].
  objective: Objective
  initial: state_lib.InitialState
  # (state, global batch) -> (state, scalar metrics); the state is donated.
  # None for an evaluation-only run.
  train_step: Callable[..., tuple[TrainState, Metrics]] | None
  # (params, global batch) -> the objective's float32 sums.
  eval_step: Callable[[Any, Batch], Metrics]
  # (params, global batch) -> (eval_step's sums, per-example outcomes [B]);
  # None when the objective defines no outcomes.
  outcome_step: Callable[[Any, Batch], tuple[Metrics, Metrics]] | None
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
    return backend_defaults.layer_unroll(self.model_config, jax.default_backend())

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

  def step(
    self, state: TrainState, local_batch: Mapping[str, np.ndarray]
  ) -> tuple[TrainState, Metrics]:
    """One optimizer update on this process's part of a global batch: the
    loop's call, each step (inside `mesh_lib.activate(run.mesh, run.rules)`)."""
    return self.train_step(state, pipeline.make_global_batch(local_batch, self.batch_sharding))

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
  objective: Objective,
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
    objective: what the train and eval steps compute; mesh, rules: where
      the state and batches live.
    train: optimisation settings; None for evaluation only (no train step).
    flops_per_example, tokens_per_example: for throughput and MFU.
    batch_factor: the batch must also split this many ways (fine-tuning
      feeds each process an equal share of every micro-batch).
  Raises UsageError for a batch or a parameter that does not split.
  """
  if train is not None:
    sizes = dict(tokens_per_example=tokens_per_example, hidden_size=model.config.hidden_size)
    train = settle_train(train, mesh, rules, batch_factor=batch_factor, **sizes)
  optimizer, schedule = _optimizer(model, init_inputs, train)
  initial = state_lib.initial_state(
    model, init_inputs, optimizer=optimizer, seed=train.seed if train else 0, mesh=mesh, rules=rules
  )
  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  replicated = mesh_lib.replicated(mesh)
  jitted_train = None
  if train is not None:
    statics = dict(objective=objective, optimizer=optimizer, schedule=schedule)
    jitted_train = jax.jit(
      functools.partial(train_step, grad_accum_steps=train.grad_accum_steps, **statics),
      in_shardings=(initial.shardings, batch_sharding),
      out_shardings=(initial.shardings, replicated),
      donate_argnums=0,
    )
  jitted_eval, jitted_outcomes = _eval_steps(objective, initial, batch_sharding, replicated)
  return Run(
    mesh=mesh,
    rules=rules,
    batch_sharding=batch_sharding,
    objective=objective,
    initial=initial,
    train_step=jitted_train,
    eval_step=jitted_eval,
    outcome_step=jitted_outcomes,
    flops_per_example=flops_per_example,
    tokens_per_example=tokens_per_example,
    train=train,
    model_config=model.config,
  )


def settle_train(
  train: TrainConfig,
  mesh: jax.sharding.Mesh,
  rules: mesh_lib.LogicalRules,
  *,
  batch_factor: int = 1,
  tokens_per_example: int = 0,
  hidden_size: int,
) -> TrainConfig:
  """`train` with grad_accum_steps 0 replaced by the backend's choice
  (backend_defaults.py), once its batch is known to split over the mesh's
  batch axes, its micro-batches and the processes: UsageError otherwise.
  `assemble` calls it; a trainer may too, to refuse a batch before it
  writes anything."""
  shards = mesh_lib.batch_shards(mesh, rules)
  splits_into, rest = divmod(train.batch_size, shards * batch_factor)
  steps = backend_defaults.grad_accum_steps(
    train.grad_accum_steps,
    examples_per_device=train.batch_size // shards,
    splits_into=0 if rest else splits_into,
    tokens_per_example=tokens_per_example,
    hidden_size=hidden_size,
    backend=mesh.devices.flat[0].platform,
  )
  mesh_lib.check_batch_split(train.batch_size, steps, mesh, rules, factor=batch_factor)
  if train.batch_size % jax.process_count():
    raise UsageError(
      f'train.batch_size={train.batch_size} does not split over {jax.process_count()} processes'
    )
  return dataclasses.replace(train, grad_accum_steps=steps)


def _optimizer(
  model: nn.Module, init_inputs: Sequence[jax.Array], train: TrainConfig | None
) -> tuple[optax.GradientTransformation, optax.Schedule | None]:
  """The optimizer and schedule of `train` (none for evaluation)."""
  if train is None:
    return optax.identity(), None
  # LAMB's trust ratio is per layer: it needs to know which axes stack layers.
  return optimizer_lib.optimizer_and_schedule(
    train, param_axes=optimizer_lib.model_param_axes(model, *init_inputs)
  )


def _eval_steps(
  objective: Objective,
  initial: state_lib.InitialState,
  batch_sharding: jax.sharding.NamedSharding,
  replicated: jax.sharding.NamedSharding,
) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
  """The jitted eval step, and the outcome step of an objective with outcomes."""
  in_shardings = (initial.shardings.params, batch_sharding)
  jitted_eval = jax.jit(
    functools.partial(eval_step, objective=objective),
    in_shardings=in_shardings,
    out_shardings=replicated,
  )
  if not hasattr(objective, 'outcomes'):
    return jitted_eval, None
  # Replicated: every process gets all of a batch's outcomes.
  jitted_outcomes = jax.jit(
    functools.partial(outcome_step, objective=objective),
    in_shardings=in_shardings,
    out_shardings=(replicated, replicated),
  )
  return jitted_eval, jitted_outcomes


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  objective: Objective,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  grad_accum_steps: int,
) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch [B, ...]; metrics are scalars."""
  # Normalisers of the whole batch, so micro-batch gradients simply add up.
  normalizers = objective.normalizers(batch)
  step_rng = jax.random.fold_in(state.rng, state.step)

  def micro_loss(params, micro, rng):
    sums = objective.sums(params, micro, rng)
    return objective.loss(sums, normalizers), sums

  def accumulate(carry, xs):
    grads, sums = carry
    index, micro = xs
    (_, micro_sums), micro_grads = jax.value_and_grad(micro_loss, has_aux=True)(
      state.params, micro, jax.random.fold_in(step_rng, index)
    )
    return (
      jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads),
      jax.tree.map(jnp.add, sums, micro_sums),
    ), None

  micro_batches = _micro_batches(batch, grad_accum_steps)
  # Gradients add up in float32 whatever the parameter dtype.
  zeros = jax.tree.map(
    lambda x: jnp.zeros(x.shape, jnp.float32),
    (
      state.params,
      jax.eval_shape(
        objective.sums, state.params, jax.tree.map(lambda x: x[0], micro_batches), step_rng
      ),
    ),
  )
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro_batches))

  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  metrics = objective.summarize(sums)
  metrics['grad_norm'] = optax.tree.norm(grads)
  # Finite iff every parameter is: what the loop checks before a checkpoint.
  metrics['param_norm'] = optax.tree.norm(new_state.params)
  metrics['learning_rate'] = jnp.asarray(schedule(state.step), jnp.float32)
  return new_state, metrics


def _micro_batches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B / num, ...], micro-batch j = rows j, j + num, ...

  Strided rather than contiguous, so each device's shard of the batch holds
  an equal part of every micro-batch and no data moves between devices.
  """

  def split(x):
    x = x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
    return nn.with_logical_constraint(x, (None, 'batch') + (None,) * (x.ndim - 2))

  return jax.tree.map(split, batch)


def eval_step(params: Any, batch: Batch, *, objective: Objective) -> Metrics:
  """`objective.sums` of one global eval batch (deterministic, no dropout)."""
  return objective.sums(params, batch, None)


def outcome_step(params: Any, batch: Batch, *, objective: Objective) -> tuple[Metrics, Metrics]:
  """`eval_step`'s sums and the per-example outcomes of one global eval batch,
  for objectives that define `outcomes` (pretraining)."""
  return objective.outcomes(params, batch)
