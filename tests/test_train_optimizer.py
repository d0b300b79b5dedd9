"""LAMB/AdamW as in ALBERT: schedule, decay mask, masked trust ratio."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax.config import ModelConfig
from albert_jax.model import AlbertForPreTraining
from albert_jax.train import optimizer as optimizer_lib
from albert_jax import tree_paths
from experiments.configs import pretrain


def _train_config(**overrides) -> ml_collections.ConfigDict:
  train = pretrain.get_config('tiny').train
  train.update(overrides)
  return train


def _params():
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: np.asarray(x, np.float32), {
      'embeddings': {'word_embeddings': {'embedding': rng.normal(size=(6, 4))},
                     'LayerNorm': {'scale': np.ones(4), 'bias': np.zeros(4)}},
      'encoder': {'layer': {'query': {'kernel': rng.normal(size=(4, 4)),
                                      'bias': rng.normal(size=4)}}},
      'predictions': {'bias': rng.normal(size=6)},
  })


def test_schedule_warms_up_then_decays_linearly_to_zero():
  schedule = optimizer_lib.learning_rate_schedule(1.0, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose(
      [schedule(s) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_decay_mask_excludes_layer_norm_and_biases():
  mask = optimizer_lib.weight_decay_mask(
      _params(), _train_config().weight_decay_exclude)
  assert mask == {
      'embeddings': {'word_embeddings': {'embedding': True},
                     'LayerNorm': {'scale': False, 'bias': False}},
      'encoder': {'layer': {'query': {'kernel': True, 'bias': False}}},
      'predictions': {'bias': False},
  }


@pytest.mark.parametrize('sharing', ['all', 'attention', 'ffn', 'none'])
def test_decay_mask_on_the_model_spares_exactly_layer_norms_and_biases(sharing):
  config = pretrain.get_config('tiny')
  config.model.sharing = sharing
  model = AlbertForPreTraining(ModelConfig.from_config(config.model))
  ids = jnp.zeros((1, 8), jnp.int32)
  params = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids, ids[:, :2]))['params']
  mask = optimizer_lib.weight_decay_mask(nn.unbox(params),
                                         config.train.weight_decay_exclude)
  for path, decayed in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = tree_paths.path_str(path)
    leaf = name.rsplit('/', 1)[-1]
    assert leaf in ('kernel', 'embedding', 'scale', 'bias'), name
    # LayerNorm scales and all biases are spared; weight matrices decay.
    assert decayed == (leaf in ('kernel', 'embedding')), name


def test_decay_mask_sees_through_logical_boxes():
  boxed = {'LayerNorm': {'scale': nn.Partitioned(jnp.ones(4), ('embed',))},
           'dense': {'kernel': nn.Partitioned(jnp.ones((4, 4)), ('embed', 'mlp'))}}
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
  reference = _run(optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.lamb(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)), _params())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, reference)


def test_lamb_skips_trust_ratio_and_decay_on_excluded_params():
  train = _train_config(learning_rate=0.1, warmup_steps=0, clip_norm=1e9)
  schedule = optimizer_lib.learning_rate_schedule(0.1, 0, train.num_steps)
  ours = _run(optimizer_lib.make_optimizer(train, schedule), _params())
  adam = _run(optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-6), _params())
  lamb = _run(optax.lamb(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01), _params())
  # Excluded: plain Adam. Decayed: LAMB.
  np.testing.assert_allclose(ours['encoder']['layer']['query']['bias'],
                             adam['encoder']['layer']['query']['bias'], rtol=1e-6)
  np.testing.assert_allclose(ours['embeddings']['LayerNorm']['scale'],
                             adam['embeddings']['LayerNorm']['scale'], rtol=1e-6)
  np.testing.assert_allclose(ours['encoder']['layer']['query']['kernel'],
                             lamb['encoder']['layer']['query']['kernel'], rtol=1e-6)
  assert not np.allclose(ours['encoder']['layer']['query']['bias'],
                         lamb['encoder']['layer']['query']['bias'])


def test_adamw_decays_only_masked_params():
  train = _train_config(optimizer='adamw', learning_rate=0.1, warmup_steps=0,
                        weight_decay=0.5)
  schedule = optimizer_lib.learning_rate_schedule(0.1, 0, train.num_steps)
  tx = optimizer_lib.make_optimizer(train, schedule)
  params = _params()
  zero = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert np.all(updates['embeddings']['LayerNorm']['scale'] == 0)
  np.testing.assert_allclose(updates['encoder']['layer']['query']['kernel'],
                             -0.1 * 0.5 * params['encoder']['layer']['query']['kernel'],
                             rtol=1e-6)


def test_unknown_optimizer_is_rejected():
  train = _train_config(optimizer='sgd')
  with pytest.raises(ValueError, match="set --config.train.optimizer to 'lamb' or 'adamw'"):
    optimizer_lib.make_optimizer(train, optax.constant_schedule(1.0))
