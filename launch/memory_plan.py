r"""Per-device memory of a config on meshes too big for this machine, compiled AOT.

  python -m launch.memory_plan --config=experiments/configs/pretrain.py:xxlarge

For each device count (--num_devices, simulated with
--xla_force_host_platform_device_count), mesh layout (--meshes) and remat
policy (--remat_policies), compiles the train step of the global batch
(train.batch_size, data.max_seq_length) ahead of time, nothing allocated, with
gradient accumulation so that each micro-batch holds --micro_batch_per_device
examples per device, and prints XLA's per-device buffer assignment as a
Markdown table, with whether it fits each device of --device_memory (sizes in
GiB or known devices; default: a 16 GiB device, such as a TPU v5e chip, and an
80 GiB one, such as an A100 80GB or H100):

  python -m launch.memory_plan --config=experiments/configs/pretrain.py:large \
      --device_memory=v5p,h200,24

These figures come from the CPU compiler: a guide, not a promise. An
accelerator's compiler fuses and schedules differently (and may remat more
to fit), and its runtime adds a little on top.

With --topology (names libtpu takes: v5e:2x2, v5e:16x16, v4:4x4x4,
v5p:8x8x8, v6e:4x4; several comma-separated) the step is compiled by the
TPU compiler itself for that slice's devices, on any machine (libtpu:
pip install -r requirements-tpu-compiler.txt; no TPU needed): the mesh of
config.mesh over the slice's devices, remat, micro-batches and layer loop
as configured (0: the TPU's choice), or as --meshes, --remat_policies and
--micro_batch_per_device say when given. It prints per device the HBM of
arguments, temporaries, outputs and code, whether the peak fits the chip
(--device_memory overrides), and the compiler's estimates of the step's
FLOPs, time and MFU (docs/tpu.md says what they leave out):

  python -m launch.memory_plan --config=experiments/configs/pretrain.py:base \
      --topology=v5e:4x4 --json
"""

import dataclasses
import json
import os

import jax
from absl import flags

from albert_jax import benchmark
from albert_jax.config import REMAT_POLICIES
from albert_jax.errors import UsageError
from albert_jax.memory_plan import (
  DEFAULT_DEVICES,
  KNOWN_DEVICES,
  STEPS,
  device_memory,
  markdown_table,
  mesh_config,
  tpu_markdown_table,
  tpu_record,
  tpu_topology,
)
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig
from launch import command_line

_NUM_DEVICES = flags.DEFINE_list('num_devices', ['8', '64'], 'Simulated device counts.')
_MESHES = flags.DEFINE_list(
  'meshes',
  ['data', 'fsdp'],
  'Mesh layouts, each AXIS (all devices on it) or AXIS=N+AXIS=-1 (e.g. fsdp=-1+tensor=4).',
)
_REMAT = flags.DEFINE_list(
  'remat_policies', list(REMAT_POLICIES), 'model.remat_policy values to compare.'
)
_MICRO_BATCH = flags.DEFINE_integer(
  'micro_batch_per_device',
  8,
  'Examples per device in each accumulation step; sets train.grad_accum_steps.',
)
_DEVICE_MEMORY = flags.DEFINE_list(
  'device_memory',
  None,
  'Devices the table judges "fits" against: sizes in GiB and/or known device names '
  f'({", ".join(KNOWN_DEVICES)}); default: 16 and 80 GiB.',
)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON line per compilation.')
_TOPOLOGY = flags.DEFINE_list(
  'topology',
  None,
  'TPU slices (e.g. v5e:16x16,v5p:8x8x8): compile with the TPU compiler for their '
  'devices instead of simulated CPU devices.',
)
_STEP = flags.DEFINE_enum(
  'step',
  'pretraining',
  list(STEPS),
  "With --topology: pretraining, or a two-class classifier's fine-tuning step on the same "
  'model, batch and sequence length.',
)


def main(argv: list[str]) -> None:
  del argv  # Flags only.
  if _TOPOLOGY.value:
    _tpu_main()
    return
  if _STEP.value != 'pretraining':
    raise UsageError(f'--step={_STEP.value} needs --topology (simulated devices plan pretraining)')
  counts = _positive_ints(_NUM_DEVICES.value, '--num_devices')
  devices = (
    [device_memory(spec) for spec in _DEVICE_MEMORY.value]
    if _DEVICE_MEMORY.value
    else DEFAULT_DEVICES
  )
  _simulate_devices(max(counts))
  records = []
  for count in counts:
    for mesh in _MESHES.value:
      for policy in _REMAT.value:
        records.append(_plan(flags.FLAGS.config.copy_and_resolve_references(), count, mesh, policy))
        if _JSON.value:
          print(json.dumps(records[-1]), flush=True)
  if not _JSON.value:
    print(markdown_table(records, devices))


def _tpu_main() -> None:
  """The --topology plans: config.mesh, remat and micro-batches as
  configured unless --meshes, --remat_policies or --micro_batch_per_device
  are given."""
  # The TPU runtime is not needed (nor, on a TPU VM, touched): only its compiler.
  jax.config.update('jax_platforms', 'cpu')
  devices = [device_memory(spec) for spec in _DEVICE_MEMORY.value or ()]
  given = lambda flag: flags.FLAGS[flag.name].present
  records = []
  for name in _TOPOLOGY.value:
    topology = tpu_topology(name)
    for layout in _MESHES.value if given(_MESHES) else [None]:
      for policy in _REMAT.value if given(_REMAT) else [None]:
        config = flags.FLAGS.config.copy_and_resolve_references()
        if layout is not None:
          config.mesh = mesh_config(layout, len(topology.devices))
        if policy is not None:
          config.model.remat_policy = policy
        if given(_MICRO_BATCH):
          config.train.grad_accum_steps = _accum_steps(config, len(topology.devices))
        records.append(tpu_record(PretrainConfig.from_config(config), topology, _STEP.value))
        if _JSON.value:
          print(json.dumps(records[-1]), flush=True)
  if not _JSON.value:
    print(tpu_markdown_table(records, devices))


def _accum_steps(config, num_devices: int) -> int:
  """train.grad_accum_steps giving --micro_batch_per_device examples per
  device in each micro-batch."""
  shape = dict(zip(mesh_lib.MESH_AXES, mesh_lib.mesh_shape(config.mesh, num_devices)))
  batch_shards = shape['data'] * shape['fsdp']
  micro = _MICRO_BATCH.value * batch_shards
  if config.train.batch_size % micro:
    raise UsageError(
      f'train.batch_size={config.train.batch_size} is not a multiple of '
      f'{micro} (--micro_batch_per_device={_MICRO_BATCH.value} x '
      f'{batch_shards} batch shards)'
    )
  return config.train.batch_size // micro


def _positive_ints(values: list[str], name: str) -> list[int]:
  if not all(v.isdigit() and int(v) > 0 for v in values):
    raise UsageError(f'{name} takes positive integers, got {",".join(values)}')
  return [int(v) for v in values]


def _simulate_devices(count: int) -> None:
  """Makes the CPU backend pretend to have `count` devices (before it starts)."""
  flag = f'--xla_force_host_platform_device_count={count}'
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {flag}'.strip()
  jax.config.update('jax_platforms', 'cpu')
  if len(jax.devices()) < count:
    raise UsageError(
      f'{count} devices asked for, but the backend has '
      f'{len(jax.devices())}; run without XLA_FLAGS setting '
      'the device count'
    )


def _plan(config, num_devices: int, layout: str, policy: str) -> dict:
  """Compiles `config` for one (devices, mesh, policy); its memory record."""
  config.mesh = mesh_config(layout, num_devices)
  config.model.remat_policy = policy
  # The CPU compiler plans here, and would choose the CPU's unrolled layers:
  # plan the loop, whose memory accelerators' compilers follow most closely.
  config.model.unroll = config.model.unroll or 1
  shape = dict(zip(mesh_lib.MESH_AXES, mesh_lib.mesh_shape(config.mesh, num_devices)))
  config.train.grad_accum_steps = _accum_steps(config, num_devices)
  step = benchmark.compile_train_step(
    PretrainConfig.from_config(config), jax.devices()[:num_devices]
  )
  memory = benchmark.memory(step.compiled)
  return {
    'preset': config.get('preset', ''),
    'num_devices': num_devices,
    'mesh': ' '.join(f'{a}={n}' for a, n in shape.items() if n > 1) or 'single',
    'remat_policy': policy,
    'dtype': config.model.dtype,
    'batch_size': config.train.batch_size,
    'seq_len': config.data.max_seq_length,
    'micro_batch_per_device': _MICRO_BATCH.value,
    'grad_accum_steps': config.train.grad_accum_steps,
    'memory_per_device_bytes': memory.peak,
    'memory_analysis': dataclasses.asdict(memory),
    'compile_s': step.compile_s,
  }


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      'experiments/configs/pretrain.py:xxlarge',
      keys_file='experiments/configs/pretrain.py',
      lock_config=False,
    ),
  )
