"""Per-device memory plans: mesh layouts by name, the table that compares
them, and the train step compiled by the TPU compiler for a TPU topology.

Used by `launch.memory_plan`, which compiles the train step ahead of time for
each (devices, mesh layout, remat policy) and reports XLA's per-device
buffer assignment: for simulated CPU devices, or (`--topology`) for the
devices of a real TPU slice that libtpu describes without any TPU attached,
compiled by libtpu's own compiler, with its cost model's FLOPs and step time.
"""

import dataclasses
import importlib.util
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import topologies

from albert_jax import backend_defaults, benchmark, flops
from albert_jax.errors import UsageError
from albert_jax.finetune import classification
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import step as step_lib
from albert_jax.train.config import PretrainConfig

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DeviceMemory:
  """Memory of one device, the table's 'fits' columns judge against."""

  gib: float
  name: str = ''  # A known device's name, '' for a bare size.

  @property
  def label(self) -> str:
    return f'{self.name} ({self.gib:g} GiB)' if self.name else f'{self.gib:g} GiB'


# Known devices by --device_memory name: the memory of one device (a TPU chip,
# one GPU) as sold, in GiB.
KNOWN_DEVICES: dict[str, DeviceMemory] = {
  'v4': DeviceMemory(32, 'TPU v4'),
  'v5e': DeviceMemory(16, 'TPU v5e'),
  'v5p': DeviceMemory(95, 'TPU v5p'),
  'a100-40': DeviceMemory(40, 'A100 40GB'),
  'a100-80': DeviceMemory(80, 'A100 80GB'),
  'h100': DeviceMemory(80, 'H100'),
  'h200': DeviceMemory(141, 'H200'),
}
# The columns without --device_memory: a 16 GiB device (TPU v5e, V100-16GB)
# and an 80 GiB one (A100 / H100 80GB).
DEFAULT_DEVICES = (DeviceMemory(16), DeviceMemory(80))


def device_memory(spec: str) -> DeviceMemory:
  """'24' (GiB), or a known device's name: 'h100', 'tpu-v5e', 'A100-80GB'..."""
  try:
    gib = float(spec)
  except ValueError:
    pass
  else:
    if not 0 < gib < float('inf'):
      raise UsageError(f'--device_memory={spec}: a size in GiB must be positive')
    return DeviceMemory(gib)
  key = spec.strip().lower().replace('_', '-').replace(' ', '-')
  key = key.removeprefix('tpu').lstrip('-').removesuffix('gb').removesuffix('-')
  if key in KNOWN_DEVICES:
    return KNOWN_DEVICES[key]
  if key == 'a100':
    raise UsageError('--device_memory=a100: say a100-40 or a100-80 (GB)')
  raise UsageError(
    f'--device_memory={spec}: not a size in GiB nor a known device ({", ".join(KNOWN_DEVICES)})'
  )


def mesh_config(layout: str, num_devices: int) -> dict[str, int]:
  """'fsdp' -> {'data': 1, 'fsdp': -1, 'tensor': 1}; 'fsdp=-1+tensor=4' likewise."""
  sizes = {axis: 1 for axis in mesh_lib.MESH_AXES}
  parts = layout.split('+')
  for part in parts:
    axis, _, size = part.partition('=')
    if axis not in sizes or (size and not size.lstrip('-').isdigit()):
      raise UsageError(
        f'bad mesh layout {layout!r}: use AXIS or AXIS=N joined '
        f'by +, axes {", ".join(mesh_lib.MESH_AXES)}'
      )
    sizes[axis] = int(size) if size else -1
  mesh_lib.mesh_shape(sizes, num_devices)  # Raises if it does not fit.
  return sizes


def markdown_table(records: list[dict], devices: Sequence[DeviceMemory] = DEFAULT_DEVICES) -> str:
  """The records as a Markdown table, then which settings fit each device."""
  fits = lambda r, device: r['memory_per_device_bytes'] <= device.gib * GIB
  r0 = records[0]
  lines = [
    f'{r0["preset"]}, {r0["dtype"]}, global batch {r0["batch_size"]} x seq '
    f'{r0["seq_len"]}, {r0["micro_batch_per_device"]} examples per device per '
    'micro-batch (XLA CPU buffer assignment, per device)',
    '',
    '| devices | mesh | remat | accum steps | state + batch GiB | temporaries GiB '
    '| peak GiB | ' + ' | '.join(f'fits {d.label}' for d in devices) + ' |',
    '|---:|---|---|---:|---:|---:|---:|' + '---|' * len(devices),
  ]
  for r in records:
    m = r['memory_analysis']
    lines.append(
      f'| {r["num_devices"]} | {r["mesh"]} | {r["remat_policy"]} | '
      f'{r["grad_accum_steps"]} | {m["arguments"] / GIB:.2f} | '
      f'{m["temporaries"] / GIB:.2f} | {r["memory_per_device_bytes"] / GIB:.2f} | '
      + ' | '.join('yes' if fits(r, d) else 'no' for d in devices)
      + ' |'
    )
  for device in devices:
    ok = [
      f'{r["num_devices"]} x {r["mesh"]} / {r["remat_policy"]}' for r in records if fits(r, device)
    ]
    lines.append(f'\nFits {device.label}: {", ".join(ok) if ok else "none"}.')
  return '\n'.join(lines)


@dataclasses.dataclass(frozen=True)
class TpuChip:
  """One TPU chip as sold: HBM and dense bf16 peak (Google Cloud's TPU pages)."""

  name: str
  hbm_gib: float
  bf16_flops: float  # FLOP/s.


# By the device_kind libtpu reports.
TPU_CHIPS: dict[str, TpuChip] = {
  'TPU v3': TpuChip('v3', 32, 123e12),
  'TPU v4': TpuChip('v4', 32, 275e12),
  'TPU v5 lite': TpuChip('v5e', 16, 197e12),
  'TPU v5': TpuChip('v5p', 95, 459e12),
  'TPU v6 lite': TpuChip('v6e', 32, 918e12),
}

# libtpu loaded for compilation alone: it looks for the TPU VM it runs on and
# warns (TPU_ACCELERATOR_TYPE, TPU_WORKER_HOSTNAMES) when there is none; any
# valid values quiet it, and the compile follows the topology's chips. Its
# lockfile, which keeps a second process off a TPU, would keep two compiles
# (or a compile beside a TPU run) from sharing the machine.
_COMPILE_ONLY_ENV = {
  'TPU_ACCELERATOR_TYPE': 'v5litepod-4',
  'TPU_WORKER_HOSTNAMES': 'localhost',
  'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',
}


@dataclasses.dataclass(frozen=True)
class TpuTopology:
  """The compile-only devices of a TPU slice, as libtpu describes it."""

  name: str  # As libtpu takes it: 'v5e:2x2', 'v5p:8x8x8'.
  devices: list[jax.Device]
  chip: TpuChip
  devices_per_chip: int  # 2 where each TensorCore is a device (v3, v4 here).

  @property
  def hosts(self) -> int:
    """Processes of the job on this slice, one per TPU VM host."""
    return len({d.process_index for d in self.devices})

  @property
  def device_hbm_gib(self) -> float:
    return self.chip.hbm_gib / self.devices_per_chip

  @property
  def device_peak_flops(self) -> float:
    return self.chip.bf16_flops / self.devices_per_chip


def libtpu_installed() -> bool:
  """Whether jax can load the TPU compiler (the libtpu package, or the
  library TPU_LIBRARY_PATH names)."""
  return bool(os.environ.get('TPU_LIBRARY_PATH')) or importlib.util.find_spec('libtpu') is not None


def tpu_topology(name: str) -> TpuTopology:
  """The devices of TPU topology `name` ('v5e:2x2', 'v4:4x4x4'...), for
  compilation only: no TPU needed. Raises UsageError without libtpu or for a
  name libtpu rejects."""
  if not libtpu_installed():
    raise UsageError(
      f'--topology={name} needs the TPU compiler: pip install -r requirements-tpu-compiler.txt'
    )
  for key, value in _COMPILE_ONLY_ENV.items():
    os.environ.setdefault(key, value)
  try:
    devices = topologies.get_topology_desc(topology_name=name, platform='tpu').devices
  except (RuntimeError, ValueError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UsageError(
      f'--topology={name}: libtpu gives no such TPU slice ({reason}); name one as '
      'GENERATION:SHAPE, e.g. v5e:2x2, v5p:4x4x4'
    ) from None
  kind = devices[0].device_kind
  if kind not in TPU_CHIPS:
    raise UsageError(f'--topology={name}: unknown TPU {kind!r} (known: {", ".join(TPU_CHIPS)})')
  per_chip = len({d.core_on_chip for d in devices})
  return TpuTopology(name, list(devices), TPU_CHIPS[kind], per_chip)


STEPS = ('pretraining', 'classification')


def compile_step(
  config: PretrainConfig, devices: Sequence[jax.Device], step: str = 'pretraining'
) -> jax.stages.Compiled:
  """The train step of `config` over `devices`, compiled from abstract
  arguments: 'pretraining' (MLM + sentence objective, benchmark's), or
  'classification', the fine-tuning step of a two-class classifier on the
  same model, batch and sequence length."""
  if step == 'pretraining':
    return benchmark.compile_train_step(config, list(devices)).compiled
  if step != 'classification':
    raise UsageError(f'--step={step}: choose one of {", ".join(STEPS)}')
  model, objective = classification.model_and_objective(config.model, num_labels=2)
  seq_len = config.data.max_seq_length
  run = step_lib.assemble(
    model,
    [jnp.zeros((1, seq_len), jnp.int32)] * 3,
    objective,
    mesh=mesh_lib.make_mesh(dataclasses.asdict(config.mesh), devices),
    rules=config.sharding_rules,
    train=config.train,
    tokens_per_example=seq_len,
  )
  batch = config.train.batch_size
  shapes = {name: (batch, seq_len) for name in ('input_ids', 'input_mask', 'segment_ids')}
  abstract_batch = {
    name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=run.batch_sharding)
    for name, shape in {**shapes, 'label': (batch,)}.items()
  }
  with mesh_lib.activate(run.mesh, run.rules):
    return run.train_step.lower(run.initial.abstract, abstract_batch).compile()


def model_flops_per_step(config: PretrainConfig, step: str = 'pretraining') -> float:
  """albert_jax.flops' model FLOPs of one step of the global batch."""
  masked = benchmark.num_masked_positions(config.data) if step == 'pretraining' else 0
  per_example = flops.train_flops_per_example(config.model, config.data.max_seq_length, masked)
  return per_example * config.train.batch_size


def tpu_record(config: PretrainConfig, topology: TpuTopology, step: str = 'pretraining') -> dict:
  """Compiles the train step of `config` for `topology` with the TPU
  compiler: its per-device memory, and the compiler's cost estimate.

  The layer loop and micro-batches run as configured (0: the TPU's choice).
  FLOPs and step time are the compiler's cost-model estimates (see
  `_loop_cost`), the micro-batch's times the micro-batches: which counts
  the optimizer update once per micro-batch rather than once per step,
  and leaves out the ops the cost model cannot price (their number is
  'estimate_unpriced_ops'). A
  step the compiler refuses for the chip's HBM has its message as
  'compile_error' instead of memory and estimates.
  """
  unroll = backend_defaults.layer_unroll(config.model, 'tpu')
  mesh = mesh_lib.make_mesh(dataclasses.asdict(config.mesh), topology.devices)
  shards = mesh_lib.batch_shards(mesh, config.sharding_rules)
  accum = backend_defaults.grad_accum_steps(
    config.train.grad_accum_steps,
    examples_per_device=config.train.batch_size // shards,
    splits_into=config.train.batch_size // shards,
    tokens_per_example=config.data.max_seq_length,
    hidden_size=config.model.hidden_size,
    backend='tpu',
  )
  _check_hosts(config.train.batch_size // accum, topology)
  config = dataclasses.replace(
    config,
    model=dataclasses.replace(config.model, unroll=unroll),
    train=dataclasses.replace(config.train, grad_accum_steps=accum),
  )
  model_flops = model_flops_per_step(config, step)
  record = {
    'topology': topology.name,
    'device_kind': topology.devices[0].device_kind,
    'num_devices': len(topology.devices),
    'hosts': topology.hosts,
    'device_hbm_bytes': int(topology.device_hbm_gib * GIB),
    'step': step,
    'preset': config.preset,
    'mesh': ' '.join(f'{a}={n}' for a, n in mesh.shape.items() if n > 1) or 'single',
    'remat_policy': config.model.remat_policy,
    'dtype': config.model.dtype,
    'batch_size': config.train.batch_size,
    'seq_len': config.data.max_seq_length,
    'grad_accum_steps': accum,
    'layer_unroll': unroll,
    'model_flops_per_device': model_flops / len(topology.devices),
  }
  try:
    compiled = compile_step(config, topology.devices, step)
    flops_per_micro, seconds_per_micro, unpriced = _loop_cost(config, topology, step, compiled)
  except jax.errors.JaxRuntimeError as e:
    # The TPU compiler refuses a program over the chip's HBM, saying by how much.
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return {**record, 'compile_error': str(e).strip().splitlines()[0]}
  memory = benchmark.memory(compiled)
  seconds = accum * seconds_per_micro
  record = {
    **record,
    'memory_per_device_bytes': memory.peak,
    'memory_analysis': dataclasses.asdict(memory),
    'estimated_flops_per_device': accum * flops_per_micro,
    'estimate_unpriced_ops': unpriced,
  }
  if seconds <= 0:  # The cost model prices some programs so: no number beats a wrong one.
    return {
      **record,
      'estimated_step_s': None,
      'estimated_mfu': None,
      'estimate_error': f"the TPU compiler's cost model gave {seconds:.4g} s, not a time",
    }
  return {
    **record,
    'estimated_step_s': seconds,
    'estimated_mfu': model_flops / len(topology.devices) / seconds / topology.device_peak_flops,
  }


# The cost model prices each ConcatBitcast custom call (a concatenation the
# TPU compiler emits at base's width, none at H = 64) at -1 s, as if it
# meant "unknown": tiny at H = 768 gives -19.997 s with 20 of them, base's
# one layer -28.996 s with 29. The estimate counts them as free instead.
_UNPRICED_CALL = 'custom_call_target="ConcatBitcast"'


def _loop_cost(
  config: PretrainConfig, topology: TpuTopology, step: str, compiled: jax.stages.Compiled
) -> tuple[float, float, int]:
  """(FLOPs, seconds, unpriced ops) per device of one micro-batch of the
  step of `config` (`compiled`), by the compiler's cost analysis.

  That counts a loop's body once: the costs come from the step of one
  micro-batch alone (the micro-batch as the global batch; `compiled` itself
  where that is the step) with every layer unrolled, the program without a
  layer loop. The seconds leave out the ops the cost model cannot price
  (_UNPRICED_CALL), whose number is the third value.
  """
  accum, depth = config.train.grad_accum_steps, config.model.num_layer_applications
  if accum > 1 or config.model.unroll < depth:
    micro = dataclasses.replace(
      config,
      train=dataclasses.replace(
        config.train, batch_size=config.train.batch_size // accum, grad_accum_steps=1
      ),
      model=dataclasses.replace(config.model, unroll=depth),
    )
    compiled = compile_step(micro, topology.devices, step)
  cost = compiled.cost_analysis()
  unpriced = compiled.as_text().count(_UNPRICED_CALL)
  return cost['flops'], cost['optimal_seconds'] + unpriced, unpriced


def _check_hosts(micro_batch: int, topology: TpuTopology) -> None:
  """Each host of a multi-host slice feeds an equal share of every
  micro-batch to its own devices, as the job there would."""
  if micro_batch % topology.hosts:
    raise UsageError(
      f'a micro-batch of {micro_batch} examples does not split over the {topology.hosts} '
      f'hosts of {topology.name}: change --config.train.batch_size or grad_accum_steps'
    )


def tpu_markdown_table(records: list[dict], devices: Sequence[DeviceMemory] = ()) -> str:
  """TPU-compiler records as a Markdown table: per-device memory, whether
  it fits each of `devices` (default: the chip's HBM), and the compiler's
  estimates."""
  r0 = records[0]
  judge = list(devices) or [DeviceMemory(r0['device_hbm_bytes'] / GIB, r0['device_kind'])]
  gib = lambda n: f'{n / GIB:.2f}'
  lines = [
    f'{r0["preset"]} {r0["step"]} step, {r0["dtype"]}, global batch {r0["batch_size"]} x seq '
    f'{r0["seq_len"]}; per device, from the TPU compiler (libtpu). FLOPs, step time and MFU '
    'are estimates of its cost model, not measurements.',
    '',
    '| topology | devices (hosts) | mesh | remat | micro-batches | layers per loop iteration '
    '| arguments GiB | temporaries GiB | outputs GiB | code GiB | peak GiB | '
    + ' | '.join(f'fits {d.label}' for d in judge)
    + ' | est. TFLOP per device | model TFLOP per device | est. step s | est. MFU |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|'
    + '---|' * len(judge)
    + '---:|---:|---:|---:|',
  ]
  for r in records:
    if 'compile_error' in r:
      lines.append(
        f'| {r["topology"]} | {r["num_devices"]} ({r["hosts"]}) | {r["mesh"]} | '
        f'{r["remat_policy"]} | {r["grad_accum_steps"]} | {r["layer_unroll"]} | '
        f'{r["compile_error"]} |'
        + ' |' * 4
        + ' no |' * len(judge)
        + ' |'
        + f' {r["model_flops_per_device"] / 1e12:.2f} |'
        + ' |' * 2
      )
      continue
    m = r['memory_analysis']
    fits = ['yes' if r['memory_per_device_bytes'] <= d.gib * GIB else 'no' for d in judge]
    lines.append(
      f'| {r["topology"]} | {r["num_devices"]} ({r["hosts"]}) | {r["mesh"]} | '
      f'{r["remat_policy"]} | {r["grad_accum_steps"]} | {r["layer_unroll"]} | '
      f'{gib(m["arguments"])} | {gib(m["temporaries"])} | {gib(m["outputs"] - m["aliased"])} | '
      f'{gib(m["code"])} | {gib(r["memory_per_device_bytes"])} | '
      + ' | '.join(fits)
      + f' | {r["estimated_flops_per_device"] / 1e12:.2f} | '
      f'{r["model_flops_per_device"] / 1e12:.2f} | {_estimate(r)} |'
    )
  return '\n'.join(lines)


def _estimate(record: dict) -> str:
  """'0.236 | 55.9%': a record's estimated step time and MFU, or 'n/a'."""
  if record['estimated_step_s'] is None:
    return 'n/a | n/a'
  return f'{record["estimated_step_s"]:.3g} | {record["estimated_mfu"]:.1%}'
