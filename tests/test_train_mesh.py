"""Mesh from config and logical rules -> shardings of params, optimizer state, batches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from albert_jax.errors import UsageError
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain

RULES = mesh_lib.DEFAULT_RULES


@pytest.mark.parametrize(
  'config, devices, shape',
  [
    ({'data': -1, 'fsdp': 1, 'tensor': 1}, 8, (8, 1, 1)),
    ({'data': 2, 'fsdp': -1, 'tensor': 2}, 8, (2, 2, 2)),
    ({'data': 1, 'fsdp': 8, 'tensor': 1}, 8, (1, 8, 1)),
    ({'data': -1}, 1, (1, 1, 1)),
  ],
)
def test_mesh_shape_fills_the_minus_one_axis(config, devices, shape):
  assert mesh_lib.mesh_shape(config, devices) == shape


@pytest.mark.parametrize(
  'config, message',
  [
    ({'data': 3, 'fsdp': 1, 'tensor': 1}, 'needs 3 devices but there are 8'),
    ({'data': -1, 'fsdp': 3, 'tensor': 1}, 'does not fit 8 devices: 3 must divide 8'),
    ({'data': -1, 'fsdp': -1, 'tensor': 1}, 'at most one may be -1'),
    ({'data': 0, 'fsdp': 8, 'tensor': 1}, 'each axis must be >= 1'),
    ({'data': 8, 'pipeline': 1}, "unknown mesh axis 'pipeline'"),
  ],
)
def test_impossible_mesh_is_rejected(config, message):
  with pytest.raises(UsageError, match=message):
    mesh_lib.mesh_shape(config, 8)


def test_presets_use_the_library_rules():
  for preset in ('tiny', 'base', 'xxlarge'):
    assert pretrain.get_config(preset).sharding_rules is RULES


def test_batch_is_split_over_data_and_fsdp():
  mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  assert mesh_lib.batch_sharding(mesh, RULES).spec == P(('data', 'fsdp'))
  assert mesh_lib.batch_shards(mesh, RULES) == 4
  assert mesh_lib.describe(mesh) == 'data=2 fsdp=2 tensor=2 (8 devices, 1 process)'


def _abstract_params(**model_overrides):
  config = pretrain.get_config('tiny')
  config.model.update(model_overrides)
  model = AlbertForPreTraining(PretrainConfig.from_config(config).model)
  ids = jnp.zeros((1, 8), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids, ids[:, :2]))[
    'params'
  ]


def test_params_are_placed_by_the_logical_rules():
  mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  shardings = mesh_lib.tree_shardings(_abstract_params(), mesh, RULES)
  albert = shardings['albert']
  # 'vocab' -> tensor, 'embed' -> fsdp.
  assert albert['embeddings']['word_embeddings']['embedding'].spec == P('tensor', 'fsdp')
  # FFN: 'hidden' -> fsdp, 'mlp' -> tensor.
  ffn = albert['encoder']['layer']['ffn']
  assert ffn['dense']['kernel'].spec == P('fsdp', 'tensor')
  assert ffn['output']['kernel'].spec == P('tensor', 'fsdp')
  # The shared layer is stored once: no 'layers' axis in its params.
  assert albert['encoder']['layer']['attention']['query']['kernel'].spec == P(
    'fsdp', 'tensor', None
  )
  assert all(s.mesh is mesh for s in jax.tree.leaves(shardings))


def test_unshared_layers_keep_their_stacking_axis_replicated():
  mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  params = _abstract_params(sharing='none')
  shardings = mesh_lib.tree_shardings(params, mesh, RULES)
  kernel = shardings['albert']['encoder']['layer']['ffn']['dense']['kernel']
  assert kernel.spec == P(None, 'fsdp', 'tensor')
  assert nn.unbox(params)['albert']['encoder']['layer']['ffn']['dense']['kernel'].shape[0] == 4


def test_dimension_that_does_not_divide_is_one_clear_error():
  mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 8, 'tensor': 1})
  # embedding_size 36 over fsdp=8.
  with pytest.raises(
    UsageError,
    match=r'albert/embeddings/LayerNorm/bias of shape \(36,\) '
    r"cannot be split 8 ways over mesh axes \('fsdp',\)",
  ):
    mesh_lib.tree_shardings(_abstract_params(embedding_size=36), mesh, RULES)
