"""Per-device memory plans: mesh layouts by name, and the table that compares them.

Used by `launch.memory_plan`, which compiles the train step ahead of time for
each (device count, mesh layout, remat policy) and reports XLA's per-device
buffer assignment.
"""

import dataclasses
from collections.abc import Sequence

from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib

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
