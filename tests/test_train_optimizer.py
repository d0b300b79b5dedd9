"""LAMB/AdamW as in ALBERT: schedule, decay mask, masked trust ratio."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax import tree_paths
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import optimizer as optimizer_lib
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain


def _train_config(**overrides) -> ml_collections.ConfigDict:
  train = pretrain.get_config('tiny').train
  train.update(overrides)
  return train


def _config(**train_overrides) -> ml_collections.ConfigDict:
  config = pretrain.get_config('tiny')
  config.train.update(train_overrides)
  return config


def _params():
  rng = np.random.default_rng(0)
  return jax.tree.map(
    lambda x: np.asarray(x, np.float32),
    {
      'embeddings': {
        'word_embeddings': {'embedding': rng.normal(size=(6, 4))},
        'LayerNorm': {'scale': np.ones(4), 'bias': np.zeros(4)},
      },
      'encoder': {
        'layer': {'query': {'kernel': rng.normal(size=(4, 4)), 'bias': rng.normal(size=4)}}
      },
      'predictions': {'bias': rng.normal(size=6)},
    },
  )


def test_schedule_is_the_originals_decay_from_step_0_with_warmup_overriding_it():
  # optimization.py: 2 * (1 - step / 100), and 2 * step / 10 while step < 10.
  schedule = optimizer_lib.learning_rate_schedule(2.0, warmup_steps=10, total_steps=100)
  steps = (0, 5, 9, 10, 50, 99, 100, 150)
  np.testing.assert_allclose(
    [schedule(s) for s in steps], [0.0, 1.0, 1.8, 1.8, 1.0, 0.02, 0.0, 0.0], atol=1e-6
  )
  no_warmup = optimizer_lib.learning_rate_schedule(2.0, warmup_steps=0, total_steps=100)
  np.testing.assert_allclose([no_warmup(s) for s in (0, 50)], [2.0, 1.0], atol=1e-6)


def test_schedule_can_decay_after_warmup_instead():
  schedule = optimizer_lib.learning_rate_schedule(
    1.0, warmup_steps=10, total_steps=110, decay_from_step_0=False
  )
  np.testing.assert_allclose(
    [schedule(s) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
  )


@pytest.mark.parametrize('decay_from_step_0, at_warmup_end', [(True, 0.9), (False, 1.0)])
def test_the_config_picks_the_schedule(decay_from_step_0, at_warmup_end):
  train = PretrainConfig.from_config(
    _config(learning_rate=1.0, warmup_steps=10, num_steps=100, decay_from_step_0=decay_from_step_0)
  ).train
  _, schedule = optimizer_lib.optimizer_and_schedule(train)
  np.testing.assert_allclose(schedule(10), at_warmup_end, atol=1e-6)


def test_decay_mask_excludes_layer_norm_and_biases():
  mask = optimizer_lib.weight_decay_mask(_params(), _train_config().weight_decay_exclude)
  assert mask == {
    'embeddings': {
      'word_embeddings': {'embedding': True},
      'LayerNorm': {'scale': False, 'bias': False},
    },
    'encoder': {'layer': {'query': {'kernel': True, 'bias': False}}},
    'predictions': {'bias': False},
  }


@pytest.mark.parametrize('sharing', ['all', 'attention', 'ffn', 'none'])
def test_decay_mask_on_the_model_spares_exactly_layer_norms_and_biases(sharing):
  config = pretrain.get_config('tiny')
  config.model.sharing = sharing
  model = AlbertForPreTraining(PretrainConfig.from_config(config).model)
  ids = jnp.zeros((1, 8), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids, ids[:, :2]))[
    'params'
  ]
  mask = optimizer_lib.weight_decay_mask(nn.unbox(params), config.train.weight_decay_exclude)
  for path, decayed in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = tree_paths.path_str(path)
    leaf = name.rsplit('/', 1)[-1]
    assert leaf in ('kernel', 'embedding', 'scale', 'bias'), name
    # LayerNorm scales and all biases are spared; weight matrices decay.
    assert decayed == (leaf in ('kernel', 'embedding')), name


def test_decay_mask_sees_through_logical_boxes():
  boxed = {
    'LayerNorm': {'scale': nn.Partitioned(jnp.ones(4), ('embed',))},
    'dense': {'kernel': nn.Partitioned(jnp.ones((4, 4)), ('embed', 'mlp'))},
  }
  mask = optimizer_lib.weight_decay_mask(boxed, ('LayerNorm', 'bias'))
  assert jax.tree.leaves(mask) == [False, True]


def _run(tx, params, steps=3):
  state = tx.init(params)
  rng = np.random.default_rng(1)
  for _ in range(steps):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_lamb_without_exclusions_is_optax_lamb():
  train = _train_config(weight_decay_exclude=(), learning_rate=0.1, warmup_steps=0)
  schedule = optimizer_lib.learning_rate_schedule(0.1, 0, train.num_steps)
  ours = _run(optimizer_lib.make_optimizer(train, schedule), _params())
  reference = _run(
    optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.lamb(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01),
    ),
    _params(),
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, reference)


def test_lamb_skips_trust_ratio_and_decay_on_excluded_params():
  train = _train_config(learning_rate=0.1, warmup_steps=0, clip_norm=1e9)
  schedule = optimizer_lib.learning_rate_schedule(0.1, 0, train.num_steps)
  ours = _run(optimizer_lib.make_optimizer(train, schedule), _params())
  adam = _run(optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-6), _params())
  lamb = _run(optax.lamb(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01), _params())
  # Excluded: plain Adam. Decayed: LAMB.
  np.testing.assert_allclose(
    ours['encoder']['layer']['query']['bias'], adam['encoder']['layer']['query']['bias'], rtol=1e-6
  )
  np.testing.assert_allclose(
    ours['embeddings']['LayerNorm']['scale'], adam['embeddings']['LayerNorm']['scale'], rtol=1e-6
  )
  np.testing.assert_allclose(
    ours['encoder']['layer']['query']['kernel'],
    lamb['encoder']['layer']['query']['kernel'],
    rtol=1e-6,
  )
  assert not np.allclose(
    ours['encoder']['layer']['query']['bias'], lamb['encoder']['layer']['query']['bias']
  )


def test_adamw_decays_only_masked_params():
  train = _train_config(optimizer='adamw', learning_rate=0.1, warmup_steps=0, weight_decay=0.5)
  schedule = optimizer_lib.learning_rate_schedule(0.1, 0, train.num_steps)
  tx = optimizer_lib.make_optimizer(train, schedule)
  params = _params()
  zero = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert np.all(updates['embeddings']['LayerNorm']['scale'] == 0)
  np.testing.assert_allclose(
    updates['encoder']['layer']['query']['kernel'],
    -0.1 * 0.5 * params['encoder']['layer']['query']['kernel'],
    rtol=1e-6,
  )


def _original_adamw(params, grads_by_step, lr, weight_decay, decayed):
  """google-research/albert's AdamWeightDecayOptimizer, transcribed in numpy
  (b1 0.9, b2 0.999, eps 1e-6; `decayed`: {name: whether it decays})."""
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  params = dict(params)
  for grads in grads_by_step:
    for k, g in grads.items():
      m[k] = 0.9 * m[k] + 0.1 * g
      v[k] = 0.999 * v[k] + 0.001 * g * g
      update = m[k] / (np.sqrt(v[k]) + 1e-6)
      if decayed[k]:
        update += weight_decay * params[k]
      params[k] = params[k] - lr * update
  return params


def _adamw_run(bias_correction, steps=3):
  train = _train_config(
    optimizer='adamw',
    learning_rate=0.1,
    warmup_steps=0,
    weight_decay=0.1,
    clip_norm=1e9,
    adamw_bias_correction=bias_correction,
  )
  tx = optimizer_lib.make_optimizer(train, optax.constant_schedule(0.1))
  rng = np.random.default_rng(3)
  params = {'kernel': rng.normal(size=(4, 3)).astype(np.float32), 'bias': np.ones(3, np.float32)}
  grads = [
    jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    for _ in range(steps)
  ]
  state, ours = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, ours)
    ours = optax.apply_updates(ours, updates)
  return params, grads, ours


def test_adamw_is_the_originals_without_bias_correction():
  params, grads, ours = _adamw_run(bias_correction=False)
  want = _original_adamw(params, grads, 0.1, 0.1, {'kernel': True, 'bias': False})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, want)
  # The first step of the (undecayed) bias by hand: lr m / (sqrt(v) + eps) =
  # 0.1 * 0.1 g / (sqrt(0.001) |g| + 1e-6), ~0.316 sign(g), where
  # bias-corrected Adam moves ~0.1.
  _, (g, *_), first = _adamw_run(bias_correction=False, steps=1)
  g = g['bias'].astype(np.float64)
  step = 0.1 * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + 1e-6)
  np.testing.assert_allclose(params['bias'] - first['bias'], step, rtol=1e-5)


def test_adamw_bias_correction_is_optax_adamw():
  params, grads, ours = _adamw_run(bias_correction=True)
  mask = {'kernel': True, 'bias': False}
  tx = optax.adamw(
    optax.constant_schedule(0.1), b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.1, mask=mask
  )
  state, want = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, want)
    want = optax.apply_updates(want, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, want)
  # The state's layout is optax.adamw's either way (checkpoints fit both).
  uncorrected = optimizer_lib.make_optimizer(
    _train_config(optimizer='adamw'), optax.constant_schedule(0.1)
  )
  assert jax.tree.structure(uncorrected.init(params)) == jax.tree.structure(
    optax.chain(optax.clip_by_global_norm(1.0), tx).init(params)
  )


def test_unknown_optimizer_is_rejected():
  train = _train_config(optimizer='sgd')
  with pytest.raises(ValueError, match="set --config.train.optimizer to 'lamb' or 'adamw'"):
    optimizer_lib.make_optimizer(train, optax.constant_schedule(1.0))


# -- LAMB on layers stacked by nn.scan: one trust ratio per layer ------------


def _stacked(shape, seed=0):
  """Kernel and bias stacked on the leading axes of `shape`, whose first
  layer (index 0 of every leading axis) is 100x larger."""
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=shape + (8, 8)).astype(np.float32)
  kernel[(0,) * len(shape)] *= 100
  bias = rng.normal(size=shape + (8,)).astype(np.float32)
  return {'encoder': {'layer': {'kernel': kernel, 'bias': bias}}}


def _stacked_axes(stacked_names):
  return {
    'encoder': {
      'layer': {'kernel': stacked_names + ('hidden', 'mlp'), 'bias': stacked_names + ('mlp',)}
    }
  }


def _unstacked(params, shape):
  """The same params with every layer its own variable 'layer_i_j'."""
  layer = params['encoder']['layer']
  return {
    'encoder': {
      'layer_' + '_'.join(map(str, index)): {k: v[index] for k, v in layer.items()}
      for index in np.ndindex(*shape)
    }
  }


def _lamb(**overrides):
  train = _train_config(learning_rate=0.01, warmup_steps=0, **overrides)
  return train, optimizer_lib.learning_rate_schedule(0.01, 0, train.num_steps)


def _update_weight_ratios(tx, params, shape):
  """|update| / |weight| of each layer's kernel after one step, in units of lr."""
  grads = jax.tree.map(
    lambda p: np.random.default_rng(1).normal(size=p.shape).astype(np.float32), params
  )
  updates, _ = tx.update(grads, tx.init(params), params)
  kernel, update = params['encoder']['layer']['kernel'], updates['encoder']['layer']['kernel']
  return np.asarray(
    [np.linalg.norm(update[i]) / np.linalg.norm(kernel[i]) / 0.01 for i in np.ndindex(*shape)]
  )


@pytest.mark.parametrize('shape, names', [((4,), ('layers',)), ((2, 3), ('layers', None))])
def test_lamb_trust_ratio_is_one_per_stacked_layer(shape, names):
  train, schedule = _lamb()
  params = _stacked(shape)
  tx = optimizer_lib.make_optimizer(train, schedule, param_axes=_stacked_axes(names))
  # LAMB's step is lr x |weight| in every layer, the 100x one included.
  np.testing.assert_allclose(_update_weight_ratios(tx, params, shape), 1.0, rtol=1e-5)
  # One ratio over the whole stack (the bug): the large layer barely moves
  # and the others move ~40x too far.
  whole = _update_weight_ratios(optimizer_lib.make_optimizer(train, schedule), params, shape)
  assert whole[0] < 0.7 and np.all(whole[1:] > 10)


@pytest.mark.parametrize('shape, names', [((4,), ('layers',)), ((2, 3), ('layers', None))])
def test_lamb_on_stacked_layers_equals_lamb_on_each_layer(shape, names):
  train, schedule = _lamb(clip_norm=1.0)
  tx = optimizer_lib.make_optimizer(train, schedule, param_axes=_stacked_axes(names))
  params = _stacked(shape)
  separate_tx = optimizer_lib.make_optimizer(train, schedule)
  separate = _unstacked(params, shape)
  state, separate_state = tx.init(params), separate_tx.init(separate)
  for step in range(3):
    grads = _stacked(shape, seed=10 + step)  # The same gradients for both.
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    updates, separate_state = separate_tx.update(_unstacked(grads, shape), separate_state, separate)
    separate = optax.apply_updates(separate, updates)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    _unstacked(params, shape),
    separate,
  )


def _model_and_inputs(**model_overrides):
  config = pretrain.get_config('tiny')
  config.model.update(model_overrides)
  model = AlbertForPreTraining(PretrainConfig.from_config(config).model)
  ids = jnp.zeros((1, 8), jnp.int32)
  return model, (ids, ids, ids, ids[:, :2])


@pytest.mark.parametrize(
  'overrides, stacked',
  [
    (dict(sharing='none'), 'L'),
    (dict(sharing='ffn'), 'L'),
    (dict(num_layers=4, num_hidden_groups=2, inner_group_num=3), 'GI'),
    (dict(inner_group_num=3), 'I'),
    (dict(), ''),
  ],
)
def test_param_axes_of_the_model_find_its_stacked_layers(overrides, stacked):
  model, inputs = _model_and_inputs(**overrides)
  axes = optimizer_lib.model_param_axes(model, *inputs)
  shapes = tree_paths.shapes(
    jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), *inputs)['params']))
  )
  sizes = {
    'L': model.config.num_layers,
    'G': model.config.num_groups,
    'I': model.config.inner_group_num,
  }
  layer_axes = {
    tree_paths.path_str(path): optimizer_lib.num_layer_axes(names)
    for path, names in jax.tree_util.tree_flatten_with_path(
      axes, is_leaf=lambda x: isinstance(x, tuple)
    )[0]
  }
  assert layer_axes.keys() == shapes.keys()
  for name, shape in shapes.items():
    # Only the scanned layer's own params are stacked (partial sharing keeps
    # its shared half in encoder/shared_*), on one axis per stacked level.
    in_layer = name.startswith('albert/encoder/layer/')
    expected = tuple(sizes[level] for level in stacked) if in_layer else ()
    assert shape[: layer_axes[name]] == expected, name
  assert any(layer_axes.values()) == bool(stacked)


def test_all_shared_model_updates_are_bitwise_those_without_param_axes():
  model, inputs = _model_and_inputs()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), *inputs)['params'])
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01) + 1e-3 * p, params)
  train, schedule = _lamb()
  results = []
  for axes in (None, optimizer_lib.model_param_axes(model, *inputs)):
    tx = optimizer_lib.make_optimizer(train, schedule, param_axes=axes)
    results.append(jax.jit(tx.update)(grads, tx.init(params), params)[0])
  jax.tree.map(np.testing.assert_array_equal, *results)


def test_param_axes_must_cover_every_param():
  train, schedule = _lamb()
  params = _stacked((2,))
  # The bias is excluded from the trust ratio: it needs no entry.
  axes = {'encoder': {'layer': {'bias': ('layers', 'mlp')}}}
  tx = optimizer_lib.make_optimizer(train, schedule, param_axes=axes)
  with pytest.raises(ValueError, match='encoder/layer/kernel is missing from param_axes'):
    tx.update(params, tx.init(params), params)
