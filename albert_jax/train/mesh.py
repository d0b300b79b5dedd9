"""Device mesh from `config.mesh`, and logical axis rules -> NamedShardings.

The mesh has three axes: 'data' (batch split, parameters replicated), 'fsdp'
(batch split, parameters and optimizer state split too) and 'tensor'
(weight matrices split along heads / MLP / vocab). Which array dimension goes
to which mesh axis is decided by `config.sharding_rules`, a table from the
model's logical axis names ('embed', 'mlp', 'batch', ...) to mesh axes;
DEFAULT_RULES is the one the presets use.
"""

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from albert_jax import tree_paths
from albert_jax.errors import UsageError

MESH_AXES = ('data', 'fsdp', 'tensor')
LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Logical axis name -> mesh axes (or None: replicated). Model code names logical
# axes only; this table is the whole mapping from model to mesh.
DEFAULT_RULES: LogicalRules = (
  ('batch', ('data', 'fsdp')),
  ('length', None),
  ('vocab', 'tensor'),
  ('embed', 'fsdp'),
  ('hidden', 'fsdp'),
  ('mlp', 'tensor'),
  ('heads', 'tensor'),
  ('kv', None),
  ('layers', None),
  ('positions', None),
  ('types', None),
  ('classes', None),
)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Sizes of MESH_AXES for `num_devices`; the one -1 entry takes what is left."""
  unknown = sorted(set(mesh_config) - set(MESH_AXES))
  if unknown:
    raise UsageError(
      f'unknown mesh axis {unknown[0]!r}: config.mesh has axes {", ".join(MESH_AXES)}'
    )
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  spec = ' x '.join(f'{a}={s}' for a, s in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UsageError(
      f'mesh {spec}: each axis must be >= 1, and at most one '
      'may be -1 (takes the remaining devices)'
    )
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise UsageError(
        f'mesh {spec} does not fit {num_devices} devices: '
        f'{fixed} must divide {num_devices}; change --config.mesh.*'
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  elif fixed != num_devices:
    raise UsageError(
      f'mesh {spec} needs {fixed} devices but there are '
      f'{num_devices}; make the axes multiply to {num_devices} '
      '(or set one to -1)'
    )
  return tuple(sizes)


def make_mesh(
  mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None
) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  # Auto axes: shardings are hints that XLA's partitioner propagates.
  return jax.make_mesh(
    shape, MESH_AXES, devices=devices, axis_types=(jax.sharding.AxisType.Auto,) * len(shape)
  )


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules: LogicalRules) -> Iterator[None]:
  """Context in which the model's logical activation constraints resolve to `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_sharding(
  logical_axes: tuple[str | None, ...], mesh: jax.sharding.Mesh, rules: LogicalRules
) -> NamedSharding:
  """The sharding of an array whose dimensions have names `logical_axes`."""
  return nn.logical_to_mesh_sharding(P(*logical_axes), mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh, rules: LogicalRules) -> NamedSharding:
  """Sharding of batch arrays [batch, ...]: leading dim over the 'batch' rule's axes."""
  return logical_sharding(('batch',), mesh, rules)


def batch_shards(mesh: jax.sharding.Mesh, rules: LogicalRules) -> int:
  """Number of pieces the leading (batch) dimension is split into."""
  spec = batch_sharding(mesh, rules).spec
  axes = spec[0] if spec else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def check_batch_split(
  batch_size: int,
  grad_accum_steps: int,
  mesh: jax.sharding.Mesh,
  rules: LogicalRules,
  *,
  factor: int = 1,
) -> None:
  """Raises UsageError unless `batch_size` is a multiple of
  grad_accum_steps x the batch shards of `mesh` x `factor`."""
  shards = batch_shards(mesh, rules)
  multiple = shards * grad_accum_steps * factor
  if batch_size % multiple:
    raise UsageError(
      f'train.batch_size={batch_size} does not split into {grad_accum_steps} '
      f'micro-batches over the {shards} batch shards of mesh '
      f'{describe(mesh)}: use a multiple of {multiple}'
    )


def tree_shardings(abstract_boxed: Any, mesh: jax.sharding.Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for a tree of (boxed, from jax.eval_shape) arrays.

  Leaves boxed with logical names (nn.Partitioned) are placed by `rules`;
  unboxed leaves (step counters, RNG keys) are replicated. The result has the
  structure of the unboxed tree. Raises UsageError when a sharded dimension
  does not divide evenly over its mesh axes.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  for (path, leaf), sharding in zip(
    jax.tree_util.tree_flatten_with_path(nn.unbox(abstract_boxed))[0],
    jax.tree_util.tree_leaves(shardings),
  ):
    _check_divisible(tree_paths.path_str(path), leaf.shape, sharding)
  return shardings


def sharded_abstract(
  abstract_boxed: Any, mesh: jax.sharding.Mesh, rules: LogicalRules
) -> tuple[Any, Any]:
  """(unboxed ShapeDtypeStructs carrying their shardings, the shardings).

  The abstract tree is what jit'ed code is lowered and checkpoints are
  restored against; the shardings place the real arrays (see tree_shardings).
  """
  shardings = tree_shardings(abstract_boxed, mesh, rules)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    nn.unbox(abstract_boxed),
    shardings,
  )
  return abstract, shardings


def _check_divisible(name: str, shape: tuple[int, ...], sharding: NamedSharding) -> None:
  for dim, axes in zip(shape, sharding.spec):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    parts = math.prod(sharding.mesh.shape[a] for a in axes)
    if dim % parts:
      raise UsageError(
        f'{name} of shape {shape} cannot be split {parts} ways over mesh '
        f'axes {axes}: change --config.mesh.* or the model size'
      )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(mesh: jax.sharding.Mesh) -> str:
  """'data=2 fsdp=4 tensor=1 (8 devices, 1 process)'."""
  axes = ' '.join(f'{a}={n}' for a, n in mesh.shape.items())
  processes = len({d.process_index for d in np.ravel(mesh.devices)})
  devices = f'{mesh.size} device{"s" * (mesh.size > 1)}'
  return f'{axes} ({devices}, {processes} process{"es" * (processes > 1)})'
