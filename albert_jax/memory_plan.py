"""Per-device memory plans: mesh layouts by name, and the table that compares them.

Used by `launch.memory_plan`, which compiles the train step ahead of time for
each (device count, mesh layout, remat policy) and reports XLA's per-device
buffer assignment.
"""

from albert_jax.errors import UsageError
from albert_jax.train import mesh as mesh_lib

GIB = 2**30
DEVICE_SIZES_GIB = (16, 80)


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


def markdown_table(records: list[dict]) -> str:
  """The records as a Markdown table, then which settings fit each device size."""
  fits = lambda r, gib: r['memory_per_device_bytes'] <= gib * GIB
  r0 = records[0]
  lines = [
    f'{r0["preset"]}, {r0["dtype"]}, global batch {r0["batch_size"]} x seq '
    f'{r0["seq_len"]}, {r0["micro_batch_per_device"]} examples per device per '
    'micro-batch (XLA CPU buffer assignment, per device)',
    '',
    '| devices | mesh | remat | accum steps | state + batch GiB | temporaries GiB '
    '| peak GiB | ' + ' | '.join(f'fits {g} GiB' for g in DEVICE_SIZES_GIB) + ' |',
    '|---:|---|---|---:|---:|---:|---:|' + '---|' * len(DEVICE_SIZES_GIB),
  ]
  for r in records:
    m = r['memory_analysis']
    lines.append(
      f'| {r["num_devices"]} | {r["mesh"]} | {r["remat_policy"]} | '
      f'{r["grad_accum_steps"]} | {m["arguments"] / GIB:.2f} | '
      f'{m["temporaries"] / GIB:.2f} | {r["memory_per_device_bytes"] / GIB:.2f} | '
      + ' | '.join('yes' if fits(r, g) else 'no' for g in DEVICE_SIZES_GIB)
      + ' |'
    )
  for gib in DEVICE_SIZES_GIB:
    ok = [
      f'{r["num_devices"]} x {r["mesh"]} / {r["remat_policy"]}' for r in records if fits(r, gib)
    ]
    lines.append(f'\nFits {gib} GiB: {", ".join(ok) if ok else "none"}.')
  return '\n'.join(lines)
