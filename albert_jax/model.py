"""ALBERT (Lan et al. 2020) in Flax linen.

Modules, outermost first:
  AlbertForPreTraining             -> MLM logits, sentence-order logits
  AlbertForSequenceClassification  -> class logits
  AlbertForTokenClassification     -> per-token class logits
  AlbertForQuestionAnswering       -> span start / end logits
    AlbertModel (the backbone, 'albert')
      Embeddings   word [V, E] + position + token type, LayerNorm at width E
      Encoder      E -> H projection (only when E != H), then L post-LN layers
      pooler       dense + tanh on the first ([CLS]) token

The encoder runs its layers with `nn.scan` in every sharing mode; how many
layers one loop iteration holds (`model.unroll`; 0: the backend's choice,
backend_defaults.py) changes the program, never the params: 1 keeps the
program flat in depth, the depth unrolls it into straight-line code. Layer
weights live in one module, `encoder/layer`, whose params carry a leading
axis per stacked scan level:
  * groups: G distinct groups, stacked (sharing 'none' is G = L);
  * repeats: each group is applied L / G times in a row, weights broadcast;
  * inner: each group holds I distinct layers applied in sequence, stacked.
Levels of length 1 are not scanned, so ALBERT's default (all shared) stores
plain [H, H] kernels and sharing 'none' stores [L, H, H].

Partial sharing ('attention' / 'ffn'): nn.scan decides stacked vs broadcast
per variable collection, not per parameter path, so the shared half cannot
live inside the scanned layer. Its params are created once in the Encoder
(`encoder/shared_attention` or `encoder/shared_ffn`) and enter the scan as a
broadcast input; the layer applies that half functionally with them and owns
the other half itself (stacked per layer).

Every param is boxed with logical axis names (nn.Partitioned); the mesh
mapping lives in the config's sharding rules.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import backend_defaults
from albert_jax.config import REMAT_POLICIES, ModelConfig, check_sequence_fits

Array = jax.Array
Params = Mapping[str, Any]


def _truncated_normal(config: ModelConfig, axes: tuple[str, ...]):
  return nn.with_logical_partitioning(
    nn.initializers.truncated_normal(config.initializer_range), axes
  )


def _bias_init(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _dense(config: ModelConfig, features: int, axes: tuple[str, str], name: str | None) -> nn.Dense:
  """A dense layer with ALBERT's init; `axes` names the kernel's (in, out)."""
  return nn.Dense(
    features,
    dtype=config.compute_dtype,
    param_dtype=config.params_dtype,
    kernel_init=_truncated_normal(config, axes),
    bias_init=_bias_init(axes[-1:]),
    name=name,
  )


def _einsum(
  config: ModelConfig,
  equation: str,
  shape: tuple[int, ...],
  axes: tuple[str, ...],
  bias_axes: tuple[str, ...],
  name: str,
) -> nn.Einsum:
  """A dense layer over several dims (kernel `shape`, e.g. [H, heads, d])."""
  # nn.Einsum, not nn.DenseGeneral: the latter initialises a flattened 2-D
  # kernel, which clashes with 3 logical axis names when a mesh is active.
  return nn.Einsum(
    shape,
    equation,
    dtype=config.compute_dtype,
    param_dtype=config.params_dtype,
    kernel_init=_truncated_normal(config, axes),
    bias_init=_bias_init(bias_axes),
    name=name,
  )


def _layer_norm(config: ModelConfig, axis_name: str, name: str | None) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=config.layer_norm_eps,
    dtype=config.compute_dtype,
    param_dtype=config.params_dtype,
    # Exact variance, as in the original code and Hugging Face.
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
    bias_init=_bias_init((axis_name,)),
    name=name,
  )


def _constrain(x: Array) -> Array:
  """Activation sharding [batch, seq, width]: batch-parallel, width whole."""
  return nn.with_logical_constraint(x, ('batch', 'length', None))


def attention(
  query: Array,
  key: Array,
  value: Array,
  lengths: Array,
  *,
  dropout_rate: float = 0.0,
  dropout_rng: Array | None = None,
) -> Array:
  """Scaled dot-product attention over the first `lengths` keys, softmax in float32.

  On GPUs, 16-bit inputs without dropout go to cuDNN's fused kernel, which
  never materialises the [seq, seq] probabilities; elsewhere it is spelled
  out as einsums for XLA to fuse.

  Args:
    query, key, value: [batch, seq, heads, head_dim].
    lengths: [batch] int32, real tokens per sequence (padding comes last).
    dropout_rate: dropout on the attention probabilities.
    dropout_rng: key for that dropout; None runs without it.

  Returns:
    [batch, seq, heads, head_dim].
  """
  # A row of padding alone still attends to one key, so it stays finite.
  lengths = jnp.maximum(lengths, 1)
  if (
    dropout_rng is None
    and jax.default_backend() == 'gpu'
    and query.dtype in (jnp.bfloat16, jnp.float16)
  ):
    try:
      # Padding as key lengths, not as a mask: cuDNN takes lengths natively,
      # while a [batch, 1, 1, seq] mask silently makes JAX fall back to XLA's
      # attention, which materialises the [seq, seq] probabilities.
      # `launch.benchmark` counts the fused kernels in the compiled step, so
      # a fallback shows.
      return jax.nn.dot_product_attention(
        query, key, value, key_value_seq_lengths=lengths, implementation='cudnn'
      )
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # Shapes cuDNN rejects at trace time.
  # Spelled out rather than jax.nn.dot_product_attention's XLA
  # implementation, which is slower on CPUs (benchmarks/results/README.md).
  # Scaling the query is cheaper than scaling the [seq, seq] logits.
  mask = jnp.arange(key.shape[1]) < lengths[:, None, None, None]
  logits = jnp.einsum(
    'btnd,bsnd->bnts', query * query.shape[-1] ** -0.5, key, preferred_element_type=jnp.float32
  )
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bnts,bsnd->btnd', probs.astype(value.dtype), value)


class Embeddings(nn.Module):
  """Factorized embeddings: word + position + token type at width E."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    embed = functools.partial(nn.Embed, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype)
    self.word_embeddings = embed(
      cfg.vocab_size, cfg.embedding_size, embedding_init=_truncated_normal(cfg, ('vocab', 'embed'))
    )
    self.position_embeddings = embed(
      cfg.max_position_embeddings,
      cfg.embedding_size,
      embedding_init=_truncated_normal(cfg, ('positions', 'embed')),
    )
    self.token_type_embeddings = embed(
      cfg.type_vocab_size,
      cfg.embedding_size,
      embedding_init=_truncated_normal(cfg, ('types', 'embed')),
    )
    self.LayerNorm = _layer_norm(cfg, 'embed', name=None)
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, segment_ids: Array, *, deterministic: bool) -> Array:
    """[batch, seq] ids and segment ids -> [batch, seq, E]."""
    seq_len = input_ids.shape[1]
    check_sequence_fits(seq_len, self.config)
    # The tables' width is gathered before the lookups: a row gather from a
    # width-sharded table cannot be resharded to batch-sharded efficiently,
    # while a vocab-sharded one is the usual vocab-parallel lookup.
    words = nn.with_logical_constraint(self.word_embeddings.embedding, ('vocab', None))
    types = nn.with_logical_constraint(self.token_type_embeddings.embedding, (None, None))
    positions = self.position_embeddings.embedding[:seq_len]
    x = jnp.take(words, input_ids, axis=0) + jnp.take(types, segment_ids, axis=0) + positions
    x = _constrain(self.LayerNorm(x.astype(self.config.compute_dtype)))
    return self.dropout(x, deterministic=deterministic)


class SelfAttention(nn.Module):
  """Attention sublayer: Q/K/V, attention, output dense, residual, LayerNorm."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, lengths: Array) -> Array:
    """x [batch, seq, H], lengths [batch] (real tokens) -> [batch, seq, H]."""
    cfg = self.config
    shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
    project = functools.partial(
      _einsum, cfg, 'bsh,hnd->bsnd', shape, ('hidden', 'heads', 'kv'), ('heads', 'kv')
    )
    query, key, value = (project(name)(x) for name in ('query', 'key', 'value'))
    use_dropout = not self.deterministic and cfg.attention_dropout_prob > 0
    context = attention(
      query,
      key,
      value,
      lengths,
      dropout_rate=cfg.attention_dropout_prob,
      dropout_rng=self.make_rng('dropout') if use_dropout else None,
    )
    out = _einsum(
      cfg,
      'bsnd,ndh->bsh',
      (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
      ('heads', 'kv', 'hidden'),
      ('hidden',),
      'dense',
    )(context)
    out = nn.Dropout(cfg.hidden_dropout_prob)(out, self.deterministic)
    return _layer_norm(cfg, 'hidden', 'LayerNorm')(x + out)


class FeedForward(nn.Module):
  """FFN sublayer: dense H -> F, activation, dense F -> H, residual, LayerNorm."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[batch, seq, H] -> [batch, seq, H]."""
    cfg = self.config
    h = _dense(cfg, cfg.intermediate_size, ('hidden', 'mlp'), 'dense')(x)
    h = cfg.activation(h)
    h = _dense(cfg, cfg.hidden_size, ('mlp', 'hidden'), 'output')(h)
    h = nn.Dropout(cfg.hidden_dropout_prob)(h, self.deterministic)
    return _layer_norm(cfg, 'hidden', 'LayerNorm')(x + h)


_SUBLAYERS = {'attention': SelfAttention, 'ffn': FeedForward}


class EncoderLayer(nn.Module):
  """One post-LN transformer layer (attention then FFN)."""

  config: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, lengths: Array, shared: Params) -> Array:
    """x [batch, seq, H] -> [batch, seq, H].

    `shared` maps a sublayer name ('attention' or 'ffn') to params owned
    outside the layer (partial sharing); other sublayers own their params.
    """
    x = self._sublayer('attention', shared, x, lengths)
    x = self._sublayer('ffn', shared, x)
    return _constrain(x)

  def _sublayer(self, name: str, shared: Params, *args: Array) -> Array:
    module_type = _SUBLAYERS[name]
    if name not in shared:
      return module_type(self.config, self.deterministic, name=name)(*args)
    rngs = {} if self.deterministic else {'dropout': self.make_rng('dropout')}
    detached = module_type(self.config, self.deterministic, parent=None)
    return detached.apply({'params': shared[name]}, *args, rngs=rngs)


def _sublayer_params(config: ModelConfig, name: str, rng: Array) -> Params:
  """Fresh params of one sublayer, for the Encoder to own when it is shared."""
  x = jnp.zeros((1, 1, config.hidden_size), config.compute_dtype)
  args = (x, jnp.ones((1,), jnp.int32)) if name == 'attention' else (x,)
  return _SUBLAYERS[name](config).init(rng, *args)['params']


def _layer_loop(config: ModelConfig, unroll: int) -> Callable[..., tuple[Array, None]]:
  """(layer, x, lengths, shared) -> (x, None), running the layer L * I times.

  Nested nn.scan over the levels (groups: stacked, repeats: broadcast,
  inner: stacked), outermost last; levels of length 1 are skipped. Each
  level runs up to `unroll` of its iterations per loop iteration.
  """

  def body(layer, x, lengths, shared):
    return layer(x, lengths, shared), None

  groups = config.num_groups
  levels = (
    # (length, stacked, logical name of the stacked axis). Names must be
    # unique within an array, so only one stacked axis is 'layers'.
    (config.inner_group_num, True, 'layers' if groups == 1 else None),
    (config.layers_per_group, False, None),
    (groups, True, 'layers'),
  )
  loop = body
  for length, stacked, axis_name in levels:
    if length == 1:
      continue
    loop = nn.scan(
      loop,
      length=length,
      variable_axes={'params': 0} if stacked else {},
      variable_broadcast=False if stacked else 'params',
      split_rngs={'params': stacked, 'dropout': True},
      in_axes=nn.broadcast,
      metadata_params={nn.PARTITION_NAME: axis_name},
      unroll=min(unroll, length),
    )
  return loop


class Encoder(nn.Module):
  """E -> H projection (when E != H) and the L (* I) transformer layers."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, input_mask: Array, *, deterministic: bool) -> Array:
    """x [batch, seq, E], input_mask [batch, seq] -> [batch, seq, H].

    input_mask is 1 on real tokens, which come first, then 0 on padding.
    """
    cfg = self.config
    if cfg.has_projection:
      x = _dense(cfg, cfg.hidden_size, ('embed', 'hidden'), 'embedding_hidden_mapping_in')(x)
    x = _constrain(x)
    lengths = jnp.sum(input_mask, axis=-1, dtype=jnp.int32)
    shared = {}
    if cfg.shared_sublayer:
      name = cfg.shared_sublayer
      shared[name] = self.param(f'shared_{name}', functools.partial(_sublayer_params, cfg, name))

    depth = cfg.num_layer_applications
    unroll = backend_defaults.layer_unroll(cfg, jax.default_backend())
    layer_type = EncoderLayer
    if cfg.remat_policy != 'none':
      # Inside a loop, common-subexpression elimination cannot undo remat; in
      # straight-line code it could.
      layer_type = nn.remat(
        layer_type, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=unroll >= depth
      )
    layer = layer_type(cfg, deterministic, name='layer')
    x, _ = _layer_loop(cfg, unroll)(layer, x, lengths, shared)
    return x


class AlbertModel(nn.Module):
  """The ALBERT backbone: embeddings, encoder, pooler."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embeddings = Embeddings(cfg)
    self.encoder = Encoder(cfg)
    # Pooler + sentence head form a small MLP on [CLS]; logical names must
    # differ within an array, so the pooler's output width is its 'mlp'.
    self.pooler = _dense(cfg, cfg.hidden_size, ('hidden', 'mlp'), None)

  def __call__(
    self, input_ids: Array, input_mask: Array, segment_ids: Array, *, deterministic: bool = True
  ) -> tuple[Array, Array]:
    """[batch, seq] int32 inputs -> ([batch, seq, H] sequence, [batch, H] pooled)."""
    x = self.embeddings(input_ids, segment_ids, deterministic=deterministic)
    sequence = self.encoder(x, input_mask, deterministic=deterministic)
    pooled = jnp.tanh(self.pooler(sequence[:, 0]))
    return sequence, pooled

  def word_embeddings(self) -> Array:
    """The [V, E] word embedding table (tied to the MLM output layer)."""
    return self.embeddings.word_embeddings.embedding


class MaskedLMHead(nn.Module):
  """Dense H -> E, activation, LayerNorm, then tied output layer + bias[V]."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, word_embeddings: Array) -> Array:
    """x [batch, P, H], word_embeddings [V, E] -> float32 logits [batch, P, V]."""
    cfg = self.config
    x = _dense(cfg, cfg.embedding_size, ('hidden', 'embed'), 'dense')(x)
    x = _layer_norm(cfg, 'embed', 'LayerNorm')(cfg.activation(x))
    bias = self.param('bias', _bias_init(('vocab',)), (cfg.vocab_size,), cfg.params_dtype)
    logits = jnp.einsum(
      'bpe,ve->bpv',
      x,
      word_embeddings.astype(cfg.compute_dtype),
      preferred_element_type=jnp.float32,
    )
    return logits + bias.astype(jnp.float32)


def _gather(sequence: Array, positions: Array | None) -> Array:
  """[batch, seq, H] at positions [batch, P] -> [batch, P, H] (None: all)."""
  if positions is None:
    return sequence
  return jnp.take_along_axis(sequence, positions[:, :, None], axis=1)


class AlbertForPreTraining(nn.Module):
  """ALBERT with the MLM head and the 2-way sentence (SOP / NSP) head."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.albert = AlbertModel(cfg)
    self.predictions = MaskedLMHead(cfg)
    self.sop_classifier = _dense(cfg, 2, ('hidden', 'classes'), None)

  def __call__(
    self,
    input_ids: Array,
    input_mask: Array,
    segment_ids: Array,
    masked_lm_positions: Array | None = None,
    *,
    deterministic: bool = True,
  ) -> dict[str, Array]:
    """Runs the model.

    Args:
      input_ids, input_mask (1 on real tokens, which come first),
        segment_ids: [batch, seq] int32.
      masked_lm_positions: [batch, P] int32 positions to predict; None
        predicts every position.
      deterministic: False enables dropout (rng stream 'dropout').

    Returns:
      'mlm_logits' [batch, P, V] (or [batch, seq, V]) float32,
      'sentence_logits' [batch, 2] float32, 'sequence_output' [batch, seq, H],
      'pooled_output' [batch, H].
    """
    sequence, pooled = self.albert(input_ids, input_mask, segment_ids, deterministic=deterministic)
    mlm_logits = self.predictions(
      _gather(sequence, masked_lm_positions), self.albert.word_embeddings()
    )
    return {
      'mlm_logits': mlm_logits,
      'sentence_logits': self.sop_classifier(pooled).astype(jnp.float32),
      'sequence_output': sequence,
      'pooled_output': pooled,
    }


class AlbertForSequenceClassification(nn.Module):
  """ALBERT with a classifier on the pooled output (e.g. GLUE).

  The backbone runs with its config's dropout (0 for ALBERT v2); the pooled
  output alone gets `classifier_dropout_prob` before the classifier, as in the
  original's classifier_utils (a fixed 0.1) and Hugging Face
  (`AlbertConfig.classifier_dropout_prob`, default 0.1).
  """

  config: ModelConfig
  num_labels: int
  classifier_dropout_prob: float = 0.1

  @nn.compact
  def __call__(
    self, input_ids: Array, input_mask: Array, segment_ids: Array, *, deterministic: bool = True
  ) -> dict[str, Array]:
    """[batch, seq] int32 inputs -> {'logits': [batch, num_labels] float32}."""
    _, pooled = AlbertModel(self.config, name='albert')(
      input_ids, input_mask, segment_ids, deterministic=deterministic
    )
    return {'logits': _classify(self, pooled, deterministic)}


class AlbertForTokenClassification(nn.Module):
  """ALBERT with a per-token classifier (e.g. named entities).

  As Hugging Face's: the sequence output gets `classifier_dropout_prob`
  before the classifier.
  """

  config: ModelConfig
  num_labels: int
  classifier_dropout_prob: float = 0.1

  @nn.compact
  def __call__(
    self, input_ids: Array, input_mask: Array, segment_ids: Array, *, deterministic: bool = True
  ) -> dict[str, Array]:
    """[batch, seq] int32 inputs -> {'logits': [batch, seq, num_labels] float32}."""
    sequence, _ = AlbertModel(self.config, name='albert')(
      input_ids, input_mask, segment_ids, deterministic=deterministic
    )
    return {'logits': _classify(self, sequence, deterministic)}


def _classify(
  head: AlbertForSequenceClassification | AlbertForTokenClassification,
  features: Array,
  deterministic: bool,
) -> Array:
  """The classifier of `head` (called in its compact __call__): dropout, then
  the 'classifier' projection; [..., H] -> [..., num_labels] float32."""
  features = nn.Dropout(head.classifier_dropout_prob)(features, deterministic)
  logits = _dense(head.config, head.num_labels, ('hidden', 'classes'), 'classifier')(features)
  return logits.astype(jnp.float32)


class AlbertForQuestionAnswering(nn.Module):
  """ALBERT with a per-token span start / end classifier (e.g. SQuAD).

  No dropout of its own: the span head reads the sequence output directly,
  as the original's run_squad (v1) and Hugging Face do.
  """

  config: ModelConfig

  @nn.compact
  def __call__(
    self, input_ids: Array, input_mask: Array, segment_ids: Array, *, deterministic: bool = True
  ) -> dict[str, Array]:
    """[batch, seq] int32 inputs -> 'start_logits', 'end_logits' [batch, seq]."""
    cfg = self.config
    sequence, _ = AlbertModel(cfg, name='albert')(
      input_ids, input_mask, segment_ids, deterministic=deterministic
    )
    logits = _dense(cfg, 2, ('hidden', 'classes'), 'qa_outputs')(sequence)
    logits = logits.astype(jnp.float32)
    return {'start_logits': logits[..., 0], 'end_logits': logits[..., 1]}
