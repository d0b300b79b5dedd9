"""Speed of the real train step: synthetic batches, AOT compilation, timing, memory;
and of fine-tuning on real batches (FinetuneRunner).

Used by `launch.benchmark` (step time, tokens/s, MFU against the device's peak,
compile time, memory) and `launch.memory_plan` (per-device memory of a config
compiled ahead of time for a mesh of simulated devices). The step is
`albert_jax.train.step.train_step`, compiled exactly as the trainer
compiles it (train/step.py `assemble`: state donated, batch split over the
batch axes).

Synthetic batches: random ids, every token real (input_mask 1), two segments,
`num_masked_positions` distinct masked positions per example, all weighted 1.
"""

import dataclasses
import math
import resource
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np

from albert_jax import flops, pretraining
from albert_jax.data import pipeline
from albert_jax.data.config import DataConfig
from albert_jax.errors import UsageError
from albert_jax.finetune import trainer as finetune_trainer
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import state as state_lib
from albert_jax.train import step as step_lib
from albert_jax.train.config import PretrainConfig

Batch = dict[str, np.ndarray]

_FIRST_NORMAL_ID = 5  # After <pad>, <unk>, [CLS], [SEP], [MASK].


def num_masked_positions(data: DataConfig) -> int:
  """Masked positions per example: at least max_predictions_per_seq, and
  masked_lm_prob of the tokens at longer sequences (BERT's 20 at 128, 76 at 512)."""
  return max(data.max_predictions_per_seq, int(data.max_seq_length * data.masked_lm_prob))


def synthetic_batch(
  rng: np.random.Generator, batch_size: int, seq_len: int, num_masked: int, vocab_size: int
) -> Batch:
  """A pretraining batch of the data contract, filled at random.

  input_ids / input_mask / segment_ids [batch, seq]; masked_lm_positions /
  masked_lm_ids / masked_lm_weights [batch, num_masked] (distinct positions,
  never [CLS]); sentence_order_label [batch].
  """
  if not 0 < num_masked < seq_len:
    raise UsageError(
      f'{num_masked} masked positions do not fit in a sequence of {seq_len} tokens: '
      'lower --config.data.max_predictions_per_seq'
    )
  shape = (batch_size, seq_len)
  ids = rng.integers(_FIRST_NORMAL_ID, vocab_size, shape)
  positions = np.sort(
    np.argsort(rng.random((batch_size, seq_len - 1)), axis=1)[:, :num_masked] + 1, axis=1
  )
  batch = {
    'input_ids': ids,
    'input_mask': np.ones(shape),
    'segment_ids': np.broadcast_to(np.arange(seq_len) >= seq_len // 2, shape),
    'masked_lm_positions': positions,
    'masked_lm_ids': np.take_along_axis(ids, positions, axis=1),
    'masked_lm_weights': np.ones(positions.shape),
    'sentence_order_label': rng.integers(0, 2, batch_size),
  }
  return {k: np.ascontiguousarray(v, dtype=np.int32) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """The train step of a config, compiled ahead of time for a mesh."""

  compiled: jax.stages.Compiled
  init_state: Callable[[], state_lib.TrainState]  # Materialises a fresh state.
  batch_sharding: jax.sharding.NamedSharding
  mesh: jax.sharding.Mesh
  rules: mesh_lib.LogicalRules
  lower_s: float  # Tracing and lowering to StableHLO.
  compile_s: float  # XLA compilation.
  grad_accum_steps: int  # As run (the config's, or the backend's choice).
  layer_unroll: int  # Likewise.


def compile_train_step(
  config: PretrainConfig,
  devices: list[jax.Device] | None = None,
  compiler_options: Mapping[str, str | bool | int] | None = None,
) -> CompiledStep:
  """Lowers and compiles the train step of `config` from abstract arguments.

  Nothing is allocated: the state and the global batch
  [train.batch_size, data.max_seq_length] are ShapeDtypeStructs carrying the
  shardings of `config.mesh` over `devices` (default: all).
  `compiler_options` are XLA debug options of this compilation only (the
  names of XLA_FLAGS without '--').
  """
  data, num_masked = config.data, num_masked_positions(config.data)
  model = AlbertForPreTraining(config.model)
  run = step_lib.assemble(
    model,
    state_lib.pretraining_inputs(data.max_seq_length, num_masked),
    pretraining.PretrainingObjective(model, data.sentence_objective),
    mesh=mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices),
    rules=config.sharding_rules,
    train=config.train,
    tokens_per_example=data.max_seq_length,
  )
  abstract_batch = {
    k: jax.ShapeDtypeStruct(
      (config.train.batch_size,) + v.shape[1:], v.dtype, sharding=run.batch_sharding
    )
    for k, v in synthetic_batch(
      np.random.default_rng(0), 1, data.max_seq_length, num_masked, 8
    ).items()
  }
  with mesh_lib.activate(run.mesh, run.rules):
    start = time.perf_counter()
    lowered = run.train_step.lower(run.initial.abstract, abstract_batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile(compiler_options)
    compiled_at = time.perf_counter()

  def init_state() -> state_lib.TrainState:
    with mesh_lib.activate(run.mesh, run.rules):
      return run.initial.materialize()

  return CompiledStep(
    compiled=compiled,
    init_state=init_state,
    batch_sharding=run.batch_sharding,
    mesh=run.mesh,
    rules=run.rules,
    lower_s=lowered_at - start,
    compile_s=compiled_at - lowered_at,
    grad_accum_steps=run.train.grad_accum_steps,
    layer_unroll=run.layer_unroll,
  )


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-device bytes of one compiled program (XLA's buffer assignment)."""

  arguments: int  # State + batch shard.
  outputs: int
  aliased: int  # Outputs written into donated arguments.
  temporaries: int  # Activations, gradients, optimizer temporaries.
  code: int

  @property
  def peak(self) -> int:
    """Live at once at worst: arguments, outputs not aliased, temporaries."""
    return self.arguments + self.outputs - self.aliased + self.temporaries


def memory(compiled: jax.stages.Compiled) -> Memory:
  """XLA's memory analysis of `compiled` (per device for an SPMD program)."""
  analysis = compiled.memory_analysis()
  return Memory(
    arguments=analysis.argument_size_in_bytes,
    outputs=analysis.output_size_in_bytes,
    aliased=analysis.alias_size_in_bytes,
    temporaries=analysis.temp_size_in_bytes,
    code=analysis.generated_code_size_in_bytes,
  )


def fused_attention_calls(compiled: jax.stages.Compiled) -> int:
  """cuDNN fused-attention kernels in the compiled program (0 off GPU, or
  where JAX fell back to XLA's spelled-out attention)."""
  return sum(
    'custom-call(' in line and '__cudnn$fmha' in line for line in compiled.as_text().splitlines()
  )


def max_rss_bytes() -> int:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_bytes(device: jax.Device) -> int | None:
  """The allocator's peak on `device` (GPU / TPU); None where not tracked (CPU)."""
  stats = device.memory_stats()
  return stats.get('peak_bytes_in_use') if stats else None


class JaxTrainer:
  """Runs the compiled step on one synthetic batch, timing rounds of steps."""

  def __init__(self, step: CompiledStep, batch: Batch):
    self._step = step
    with mesh_lib.activate(step.mesh, step.rules):
      self._batch = jax.device_put(batch, step.batch_sharding)
    self._state = step.init_state()

  def run(self, num_steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `num_steps` steps, from dispatch to the last result."""
    start, cpu = time.perf_counter(), time.process_time()
    with mesh_lib.activate(self._step.mesh, self._step.rules):
      for _ in range(num_steps):
        self._state, metrics = self._step.compiled(self._state, self._batch)
      loss = float(metrics['loss'])  # Waits for the last step.
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    if not math.isfinite(loss):
      raise FloatingPointError(f'the benchmarked step gave loss {loss}')
    return elapsed


@dataclasses.dataclass(frozen=True)
class Rounds:
  """Per-round seconds per step of one runner."""

  wall: list[float]
  cpu: list[float]  # CPU time of the runner's process (all its threads).


def interleaved_rounds(
  runners: Mapping[str, Callable[[int], tuple[float, float]]], *, rounds: int, steps: int
) -> dict[str, Rounds]:
  """Seconds per step of each runner (`run(steps) -> (wall, cpu)`), per round;
  within a round the runners take turns, so load from other processes hits
  all of them alike."""
  times = {name: Rounds([], []) for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      wall, cpu = run(steps)
      times[name].wall.append(wall / steps)
      times[name].cpu.append(cpu / steps)
  return times


def train_flops_per_step(config: PretrainConfig) -> float:
  """Model FLOPs (forward + backward) of one step of the global batch."""
  return config.train.batch_size * flops.train_flops_per_example(
    config.model, config.data.max_seq_length, num_masked_positions(config.data)
  )


class FinetuneRunner:
  """Fine-tuning steps of a prepared run (finetune/trainer.py `prepare`) on
  its real training batches, in the trainer's order, each padded as the
  trainer pads it; timed in rounds as JaxTrainer."""

  def __init__(self, prepared: 'finetune_trainer.Prepared'):
    self.prepared = prepared
    self._state = prepared.fresh()
    self._index = 0

  def compile_shapes(self) -> list[int]:
    """Runs one step on a batch of each padded length of the run (compiling
    each), so that timed rounds compile nothing; returns the lengths."""
    batches = self.prepared.batches
    lengths = batches.padded_lengths(0, self.prepared.config.train.num_steps)
    for length in sorted(set(lengths.tolist())):
      self._step(batches[int(np.argmax(lengths == length))])
    jax.block_until_ready(self._state)
    return sorted(set(lengths.tolist()))

  def _step(self, local: Batch) -> step_lib.Metrics:
    run = self.prepared.run
    with mesh_lib.activate(run.mesh, run.rules):
      batch = pipeline.make_global_batch(local, run.batch_sharding)
      self._state, metrics = run.train_step(self._state, batch)
    return metrics

  def run(self, num_steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for the next `num_steps` batches, from reading
    the first to the last result."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_steps):
      metrics = self._step(self.prepared.batches[self._index])
      self._index += 1
    loss = float(metrics['loss'])  # Waits for the last step.
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    if not math.isfinite(loss):
      raise FloatingPointError(f'the benchmarked fine-tuning step gave loss {loss}')
    return elapsed
