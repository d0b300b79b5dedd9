"""ALBERT model: config validation, outputs, sharing layouts, heads, dtypes."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import model_testing
import numpy as np
import pytest

from albert_jax import model as albert
from albert_jax.config import REMAT_POLICIES, ModelConfig
from albert_jax.errors import UsageError
from albert_jax.param_count import param_shapes
from albert_jax.train.config import PretrainConfig
from albert_jax.train.mesh import DEFAULT_RULES
from experiments.configs import pretrain

TINY = model_testing.TINY
B, S, P = 2, 12, 3


def _batch():
  rng = np.random.default_rng(0)
  input_mask = np.ones((B, S), np.int32)
  input_mask[1, 8:] = 0
  return dict(
    input_ids=rng.integers(5, TINY.vocab_size, (B, S)).astype(np.int32),
    input_mask=input_mask,
    segment_ids=np.repeat([[0] * 6 + [1] * 6], B, axis=0).astype(np.int32),
    masked_lm_positions=np.array([[1, 4, 9], [0, 2, 7]], np.int32),
  )


BATCH = _batch()


def _inputs(batch=BATCH):
  return batch['input_ids'], batch['input_mask'], batch['segment_ids']


@functools.cache
def _init(config: ModelConfig):
  """Random params in the model's own tree (no init compile per config)."""
  rng = np.random.default_rng(0)
  return {
    'params': jax.tree.map(
      lambda leaf: (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32), param_shapes(config)
    )
  }


@functools.partial(jax.jit, static_argnums=0, static_argnames=('deterministic',))
def _apply(config, variables, batch, positions, rngs=None, deterministic=True):
  return albert.AlbertForPreTraining(config).apply(
    variables,
    batch['input_ids'],
    batch['input_mask'],
    batch['segment_ids'],
    positions,
    deterministic=deterministic,
    rngs=rngs,
  )


# -- Config validation ------------------------------------------------------


@pytest.mark.parametrize(
  'change, message',
  [
    (dict(num_heads=5), 'num_heads=5 must divide model.hidden_size=32'),
    (dict(num_hidden_groups=3), 'num_hidden_groups=3 must divide'),
    (dict(sharing='some'), "unknown model.sharing 'some'"),
    (dict(hidden_act='tanh'), "unknown model.hidden_act 'tanh'"),
    (dict(dtype='float16'), "unknown model.dtype 'float16'"),
    (dict(param_dtype='int8'), "unknown model.param_dtype 'int8'"),
    (dict(remat_policy='some'), "unknown model.remat_policy 'some'"),
    (dict(sharing='attention', num_hidden_groups=2), "num_hidden_groups=2 needs sharing='all'"),
    (dict(sharing='none', num_hidden_groups=2), "num_hidden_groups=2 needs sharing='all'"),
    (dict(sharing='ffn', inner_group_num=2), 'inner_group_num=2 needs sharing'),
    (dict(num_layers=0), 'model.num_layers must be >= 1'),
    (dict(hidden_size=32.0), 'model.hidden_size must be int'),
    (dict(unroll=-1), 'model.unroll must be >= 0'),
    (dict(unroll=True), 'model.unroll must be int'),
    (dict(hidden_dropout_prob=1.0), 'hidden_dropout_prob must be in [0, 1)'),
  ],
)
def test_impossible_configs_fail_in_one_line(change, message):
  with pytest.raises(UsageError) as error:
    dataclasses.replace(TINY, **change)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_from_config_reads_every_preset_and_rejects_unknown_keys():
  for preset in pretrain._SIZES:
    cfg = pretrain.get_config(preset)
    model_config = PretrainConfig.from_config(cfg).model
    assert model_config.hidden_size == cfg.model.hidden_size
  model_cfg = pretrain.get_config('tiny').model
  model_cfg.unlock()
  model_cfg.num_layer = 3
  with pytest.raises(UsageError, match="unknown model config key 'num_layer'"):
    ModelConfig.from_config(model_cfg)


# -- Outputs ----------------------------------------------------------------


def test_pretraining_outputs():
  variables = jax.jit(albert.AlbertForPreTraining(TINY).init)(
    jax.random.key(0), *_inputs(), BATCH['masked_lm_positions']
  )
  out = _apply(TINY, variables, BATCH, BATCH['masked_lm_positions'])
  assert out['mlm_logits'].shape == (B, P, TINY.vocab_size)
  assert out['sentence_logits'].shape == (B, 2)
  assert out['sequence_output'].shape == (B, S, TINY.hidden_size)
  assert out['pooled_output'].shape == (B, TINY.hidden_size)
  assert out['mlm_logits'].dtype == out['sentence_logits'].dtype == jnp.float32
  # Logits at the masked positions are the all-position logits, gathered.
  every = _apply(TINY, variables, BATCH, None)['mlm_logits']
  assert every.shape == (B, S, TINY.vocab_size)
  gathered = np.take_along_axis(np.asarray(every), BATCH['masked_lm_positions'][:, :, None], axis=1)
  np.testing.assert_allclose(out['mlm_logits'], gathered, atol=1e-5)


def test_padding_is_masked():
  """Changing padded tokens changes nothing at the real tokens."""
  variables = _init(TINY)
  changed = dict(BATCH, input_ids=BATCH['input_ids'].copy())
  changed['input_ids'][1, 8:] = 7
  a = _apply(TINY, variables, BATCH, None)
  b = _apply(TINY, variables, changed, None)
  np.testing.assert_allclose(a['sequence_output'][:, :8], b['sequence_output'][:, :8], atol=1e-5)
  np.testing.assert_allclose(a['pooled_output'], b['pooled_output'], atol=1e-5)
  assert not np.allclose(a['sequence_output'][1, 8:], b['sequence_output'][1, 8:])


def test_tied_output_layer_uses_word_embeddings():
  variables = _init(TINY)
  params = jax.tree.map(np.copy, variables['params'])
  params['albert']['embeddings']['word_embeddings']['embedding'][3] += 1.0
  a = _apply(TINY, variables, BATCH, BATCH['masked_lm_positions'])
  b = _apply(TINY, {'params': params}, BATCH, BATCH['masked_lm_positions'])
  assert not np.allclose(a['mlm_logits'][..., 3], b['mlm_logits'][..., 3])


# -- Parameters: layout and logical axes -----------------------------------

LAYOUTS = {
  # config change: {param path under encoder: shape}
  'all': (dict(), {'layer/ffn/dense/kernel': (32, 64), 'layer/attention/query/kernel': (32, 4, 8)}),
  'none': (
    dict(sharing='none'),
    {'layer/ffn/dense/kernel': (4, 32, 64), 'layer/attention/query/kernel': (4, 32, 4, 8)},
  ),
  'attention': (
    dict(sharing='attention'),
    {
      'layer/ffn/dense/kernel': (4, 32, 64),
      'shared_attention/query/kernel': (32, 4, 8),
      'shared_attention/LayerNorm/scale': (32,),
    },
  ),
  'ffn': (
    dict(sharing='ffn'),
    {
      'shared_ffn/dense/kernel': (32, 64),
      'shared_ffn/LayerNorm/scale': (32,),
      'layer/attention/query/kernel': (4, 32, 4, 8),
    },
  ),
  'groups': (
    dict(num_hidden_groups=2, inner_group_num=2),
    {'layer/ffn/dense/kernel': (2, 2, 32, 64)},
  ),
}


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_param_layout_and_logical_axes(name):
  change, expected = LAYOUTS[name]
  config = dataclasses.replace(TINY, **change)
  variables = jax.eval_shape(
    lambda: albert.AlbertForPreTraining(config).init(jax.random.key(0), *_inputs())
  )
  boxed = jax.tree_util.tree_flatten_with_path(
    variables['params'], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )[0]
  encoder = {}
  allowed = {name for name, _ in DEFAULT_RULES} | {None}
  for path, leaf in boxed:
    keys = [entry.key for entry in path]
    assert isinstance(leaf, nn.Partitioned), keys
    assert len(leaf.names) == leaf.value.ndim, (keys, leaf.names)
    assert set(leaf.names) <= allowed, (keys, leaf.names)
    assert any(leaf.names), keys
    if keys[:2] == ['albert', 'encoder']:
      encoder['/'.join(keys[2:])] = leaf.value.shape
      # Stacked layer params carry the 'layers' axis first.
      stacked = leaf.value.ndim > len(leaf.names) - leaf.names.count('layers')
      assert stacked == (leaf.names[0] == 'layers')
  for path, shape in expected.items():
    assert encoder[path] == shape, path
  shared = [path for path in encoder if path.startswith('shared')]
  assert bool(shared) == (name in ('attention', 'ffn'))
  assert not any(path.startswith(f'layer/{name}/') for path in encoder)


def test_sharded_init_and_apply_with_the_config_rules():
  # Sharded dims must divide evenly: vocab 128 over tensor=2.
  config = dataclasses.replace(TINY, sharing='attention', vocab_size=128)
  model = albert.AlbertForPreTraining(config)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ('data', 'fsdp', 'tensor'))
  abstract = jax.eval_shape(model.init, jax.random.key(0), *_inputs())
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, DEFAULT_RULES)
  kernel = shardings['params']['albert']['encoder']['layer']['ffn']['dense']['kernel']
  assert kernel.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor')
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(('data', 'fsdp')))
  inputs = [jax.device_put(np.repeat(x, 4, axis=0), batch_sharding) for x in _inputs()]
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
    variables = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), *inputs)
    out = jax.jit(model.apply)(variables, *inputs)
  query = variables['params']['albert']['encoder']['shared_attention']['query']['kernel']
  assert query.value.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'tensor', None)
  assert out['sequence_output'].sharding.spec[0] == ('data', 'fsdp')
  assert out['mlm_logits'].shape == (4 * B, S, config.vocab_size)


# -- Sharing semantics -------------------------------------------------------


@pytest.mark.parametrize('sharing', ['attention', 'ffn'])
def test_partial_sharing_is_none_with_one_half_copied(sharing):
  """sharing='attention' == per-layer weights whose attention halves are
  copies of one; likewise for 'ffn'."""
  config = dataclasses.replace(TINY, sharing=sharing)
  params = nn.unbox(_init(config)['params'])
  encoder = dict(params['albert']['encoder'])
  shared = encoder.pop(f'shared_{sharing}')
  encoder['layer'] = dict(
    encoder['layer'],
    **{
      sharing: jax.tree.map(lambda p: jnp.broadcast_to(p, (config.num_layers,) + p.shape), shared)
    },
  )
  unshared = dict(params, albert=dict(params['albert'], encoder=encoder))
  none = dataclasses.replace(config, sharing='none')
  a = _apply(config, {'params': params}, BATCH, None)
  b = _apply(none, {'params': unshared}, BATCH, None)
  np.testing.assert_allclose(a['mlm_logits'], b['mlm_logits'], atol=1e-5)


@pytest.mark.parametrize('unroll', [2, 4])
def test_unrolled_matches_the_loop(unroll):
  """Partly (2) and fully (4 = L * I) unrolled: the same params, the same numbers."""
  config = dataclasses.replace(TINY, num_layers=2, num_hidden_groups=2, inner_group_num=2, unroll=1)
  unrolled = dataclasses.replace(config, unroll=unroll)
  variables = _init(config)
  a = _apply(config, variables, BATCH, None)
  b = _apply(unrolled, variables, BATCH, None)
  np.testing.assert_allclose(a['mlm_logits'], b['mlm_logits'], atol=1e-5)


def test_saved_configs_with_the_retired_scan_key_load():
  saved = dict(dataclasses.asdict(TINY), scan=False)
  del saved['unroll']
  assert ModelConfig.from_config(saved) == dataclasses.replace(TINY, unroll=0)


# -- Remat, dtypes, dropout -------------------------------------------------


def _loss(config, params, rngs=None):
  out = albert.AlbertForPreTraining(config).apply(
    {'params': params},
    *_inputs(),
    BATCH['masked_lm_positions'],
    deterministic=rngs is None,
    rngs=rngs,
  )
  return jnp.mean(out['mlm_logits'] ** 2) + jnp.mean(out['sentence_logits'] ** 2)


def test_remat_policies_save_fewer_residuals(capsys):
  config = dataclasses.replace(TINY, num_layers=2)
  params = _init(config)['params']
  saved = {}
  for policy in REMAT_POLICIES:
    remat = dataclasses.replace(config, remat_policy=policy)
    jax.ad_checkpoint.print_saved_residuals(functools.partial(_loss, remat), params)
    saved[policy] = len(capsys.readouterr().out.splitlines())
  assert (
    saved['full']
    < saved['dots_with_no_batch_dims_saveable']
    <= saved['dots_saveable']
    < saved['none']
  ), saved


def test_remat_keeps_the_gradients():
  config = dataclasses.replace(TINY, num_layers=2, sharing='attention')
  params = _init(config)['params']
  remat = dataclasses.replace(config, remat_policy='full')
  reference = jax.jit(jax.grad(functools.partial(_loss, config)))(params)
  grads = jax.jit(jax.grad(functools.partial(_loss, remat)))(params)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6), grads, reference)


def test_bfloat16_compute_over_float32_params():
  config = dataclasses.replace(TINY, dtype='bfloat16')
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(param_shapes(config)))
  variables = _init(TINY)
  out = _apply(config, variables, BATCH, BATCH['masked_lm_positions'])
  assert out['sequence_output'].dtype == jnp.bfloat16
  assert out['mlm_logits'].dtype == jnp.float32
  reference = _apply(TINY, variables, BATCH, BATCH['masked_lm_positions'])
  np.testing.assert_allclose(out['mlm_logits'], reference['mlm_logits'], atol=0.1)


def test_dropout_uses_the_dropout_rng():
  config = dataclasses.replace(
    TINY, hidden_dropout_prob=0.1, attention_dropout_prob=0.1, sharing='ffn'
  )
  variables = _init(config)
  positions = BATCH['masked_lm_positions']
  train = functools.partial(_apply, config, variables, BATCH, positions, deterministic=False)
  a = train({'dropout': jax.random.key(1)})
  b = train({'dropout': jax.random.key(1)})
  c = train({'dropout': jax.random.key(2)})
  np.testing.assert_array_equal(a['mlm_logits'], b['mlm_logits'])
  assert not np.allclose(a['mlm_logits'], c['mlm_logits'])
  with pytest.raises(Exception, match='dropout'):
    train(None)


def test_attention_matches_jax_reference_and_ignores_padding():
  q, k, v = np.random.default_rng(0).standard_normal((3, 3, 5, 4, 8), np.float32)
  lengths = np.array([5, 3, 0], np.int32)  # Full, padded, padding alone.
  got = jax.jit(albert.attention)(q, k, v, lengths)
  mask = (np.arange(5) < lengths[:, None])[:, None, None, :]
  want = jax.nn.dot_product_attention(q[:2], k[:2], v[:2], mask=mask[:2])
  np.testing.assert_allclose(got[:2], want, atol=1e-6)
  # Keys past the length get no weight: the padded row sees its 3 keys only.
  alone = albert.attention(q[1:2], k[1:2, :3], v[1:2, :3], np.array([3], np.int32))
  np.testing.assert_allclose(got[1:2], alone, atol=1e-6)
  assert np.isfinite(got[2]).all()
  # Dropout at rate 0 is the identity.
  no_drop = jax.jit(functools.partial(albert.attention, dropout_rate=0.0))(
    q, k, v, lengths, dropout_rng=jax.random.key(1)
  )
  np.testing.assert_allclose(no_drop, got, atol=1e-6)


# -- Fine-tuning heads --------------------------------------------------------


def test_fine_tuning_heads_share_the_backbone():
  backbone = jax.tree.map(jnp.shape, _init(TINY)['params']['albert'])
  for module, expected in [
    (albert.AlbertForSequenceClassification(TINY, num_labels=3), {'logits': (B, 3)}),
    (albert.AlbertForTokenClassification(TINY, num_labels=5), {'logits': (B, S, 5)}),
    (albert.AlbertForQuestionAnswering(TINY), {'start_logits': (B, S), 'end_logits': (B, S)}),
  ]:
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *_inputs())['params'])
    assert jax.tree.map(jnp.shape, shapes['albert']) == backbone
    params = jax.tree.map(lambda x: np.full(x.shape, 0.1, x.dtype), shapes)
    out = jax.jit(module.apply)({'params': params}, *_inputs())
    assert {name: value.shape for name, value in out.items()} == expected
