"""Pretraining presets: `--config=experiments/configs/pretrain.py:NAME`.

NAME is one of: tiny (a few minutes on a 2-core CPU), mini (the ablations'
CPU scale: H = 256, about 15 minutes on a 2-core CPU), base, large, xlarge,
xxlarge (ALBERT v2 shapes), bert_base, bert_large (E = H, nothing shared; for
comparison).
Every key can be overridden on the command line, e.g.
`--config.model.embedding_size=64 --config.model.sharing=none`.
"""

import ml_collections

from albert_jax.train import mesh as mesh_lib

# name: (hidden, layers, heads, intermediate, embedding, sharing)
_SIZES = {
  'tiny': (64, 4, 4, 256, 32, 'all'),
  'mini': (256, 4, 4, 1024, 128, 'all'),
  'base': (768, 12, 12, 3072, 128, 'all'),
  'large': (1024, 24, 16, 4096, 128, 'all'),
  'xlarge': (2048, 24, 16, 8192, 128, 'all'),
  'xxlarge': (4096, 12, 64, 16384, 128, 'all'),
  'bert_base': (768, 12, 12, 3072, 768, 'none'),
  'bert_large': (1024, 24, 16, 4096, 1024, 'none'),
}


# The run settings of the CPU presets; every other preset takes ALBERT's
# (sequence 512, batch 4096, 125k steps). mini is sized to one run of <= 15
# minutes on a 2-core CPU: its worst sweep variant (E = 256) is ~9.4e13
# training + evaluation FLOPs (albert_jax.flops), which at the ~1.2e11 FLOP/s
# mini's step reaches on that CPU at the backend's defaults (0.65-0.75 s per
# step) is ~13 minutes, leaving time to start and compile
# (tests/test_sweep.py checks).
# Fields: held-out documents, vocabulary pieces, batch, steps, LAMB learning
# rate, warmup, log_every, eval_every, eval_steps, checkpoint_every.
_SMALL = {
  'tiny': (16, 2000, 16, 600, 2e-2, 60, 20, 200, 4, 200),
  # Over a real corpus (thousands of documents): more held-out documents, so
  # that the evaluation's 256 examples per objective are mostly distinct.
  'mini': (100, 8000, 32, 1000, 1e-2, 100, 50, 200, 8, 200),
}
_LARGE = (10000, 30000, 4096, 125000, 0.00176, 3125, 100, 5000, 50, 5000)


def model_config(name: str) -> ml_collections.ConfigDict:
  """The `config.model` block of preset `name`."""
  hidden, layers, heads, ffn, embedding, sharing = _SIZES[name]
  small = name in _SMALL
  return ml_collections.ConfigDict(
    dict(
      # Embedding rows; 0: the run's vocabulary's size (with init_from, that
      # model's). A size set here must hold every id of the vocabulary.
      vocab_size=0,
      embedding_size=embedding,
      hidden_size=hidden,
      num_layers=layers,
      num_heads=heads,
      intermediate_size=ffn,
      sharing=sharing,
      num_hidden_groups=1,
      inner_group_num=1,
      hidden_act='gelu_new',
      hidden_dropout_prob=0.0,
      attention_dropout_prob=0.0,
      max_position_embeddings=128 if small else 512,
      type_vocab_size=2,
      layer_norm_eps=1e-12,
      initializer_range=0.02,
      dtype='float32',
      param_dtype='float32',
      remat_policy='none',
      unroll=0,  # Layers per loop iteration; 0: the backend's choice.
    )
  )


def train_config(
  *,
  batch_size: int,
  num_steps: int,
  optimizer: str,
  learning_rate: float,
  warmup_steps: int,
  log_every: int,
  eval_every: int,
  **more,
) -> ml_collections.ConfigDict:
  """A `config.train` block: these settings, `more` after eval_every, and
  the defaults shared with fine-tuning."""
  return ml_collections.ConfigDict(
    dict(
      batch_size=batch_size,  # global, over all processes
      # Micro-batches per step (one update); 0: the backend's choice.
      grad_accum_steps=0,
      num_steps=num_steps,
      optimizer=optimizer,  # 'lamb' | 'adamw'
      learning_rate=learning_rate,
      warmup_steps=warmup_steps,
      # True: ALBERT's schedule, linear decay to 0 counted from step 0, the
      # warmup overriding it; False: the decay starts after warmup.
      decay_from_step_0=True,
      weight_decay=0.01,
      # Regexes searched in param paths ('encoder/layer/.../kernel'): matches
      # get neither weight decay nor LAMB's trust ratio (ALBERT's list).
      weight_decay_exclude=('LayerNorm', 'layer_norm', 'bias'),
      b1=0.9,
      b2=0.999,
      eps=1e-6,
      # AdamW's moments bias-corrected (optax); False: not, as ALBERT's AdamW.
      adamw_bias_correction=False,
      clip_norm=1.0,
      seed=0,
      log_every=log_every,
      eval_every=eval_every,
      **more,
      # Peak FLOP/s per device for MFU; 0: the device kind's (CPUs: from cpuinfo).
      peak_flops_per_device=0.0,
      # 'START:END': a jax.profiler trace of those steps in WORKDIR/profile.
      profile_steps='',
    )
  )


def add_run_blocks(
  config: ml_collections.ConfigDict, *, checkpoint_every: int, checkpoint_keep: int
) -> None:
  """Sets `config.checkpoint`, `config.mesh` (all devices on 'data') and
  `config.sharding_rules`."""
  config.checkpoint = ml_collections.ConfigDict(
    dict(
      every_steps=checkpoint_every,
      keep=checkpoint_keep,
    )
  )
  # -1 takes the devices left over by the other axes.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  config.sharding_rules = mesh_lib.DEFAULT_RULES


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """Returns the full pretraining config of preset `arg`."""
  if arg not in _SIZES:
    raise ValueError(f'unknown preset {arg!r}: choose one of {", ".join(_SIZES)}')
  small = arg in _SMALL
  (
    eval_documents,
    vocab_size,
    batch_size,
    num_steps,
    learning_rate,
    warmup_steps,
    log_every,
    eval_every,
    eval_steps,
    checkpoint_every,
  ) = _SMALL.get(arg, _LARGE)
  config = ml_collections.ConfigDict()
  config.preset = arg
  config.model = model_config(arg)

  config.data = ml_collections.ConfigDict(
    dict(
      # 'builtin' | 'text:GLOB' | 'parquet:GLOB' | 'jsonl:GLOB' |
      # 'tfds:NAME[/CONFIG][:SPLIT]' | 'prepared:DIR' (data/sources.py).
      source='builtin',
      # The text column, field or feature of a parquet, jsonl or tfds record.
      text_feature='text',
      # text: files: 'lines' (a sentence per line, a blank line between
      # documents) | 'document' (each file one document of prose paragraphs).
      text_format='lines',
      # Drop code and table lines (data/markup.py), e.g. from documentation.
      drop_markup=False,
      # ISO 639 code: the sentence splitter's abbreviation rules.
      language='en',
      # Held-out data for evaluation; empty: `eval_documents` documents of
      # `source` are held out and never trained on (0: no evaluation): its last
      # ones ('last'), or ones spread evenly through it ('spread', for a source
      # in topic order such as files sorted by path).
      eval_source='',
      eval_documents=eval_documents,
      eval_split='last',
      # Tokenizer directory (spiece.model, tokenizer.json or vocab.txt); empty:
      # prepared data's own, else one trained on the training documents into
      # WORKDIR/vocab.
      vocab='',
      # Pieces of a tokenizer trained for the run (fewer on a small corpus),
      # when model.vocab_size is 0; a set model.vocab_size is the target then.
      vocab_size=vocab_size,
      # Normalisation of a tokenizer trained here; a loaded one keeps its own.
      lowercase=True,
      max_seq_length=128 if small else 512,
      max_predictions_per_seq=20,
      masked_lm_prob=0.15,
      short_seq_prob=0.1,
      max_ngram=3,
      sentence_objective='sop',  # 'sop' | 'nsp' | 'none'
      # ALBERT's create_pretraining_data rules (the other value of each: this
      # code's earlier rule): the short-sequence target drawn once per document;
      short_seq_per_document=True,
      # [CLS] and [SEP] counted in the masking budget;
      num_to_predict_counts_specials=True,
      # the 10 % random token drawn from the whole vocabulary;
      random_token_includes_specials=True,
      # pieces such as 's and n't start a word (True: continue the previous).
      apostrophe_joins_word=False,
      seed=0,
      # Worker processes building batches; 0: in the training process.
      num_workers=0,
      # Batches prepared ahead (per worker, or on a thread when 0 workers).
      prefetch_buffer_size=2,
    )
  )

  config.train = train_config(
    batch_size=batch_size,
    num_steps=num_steps,
    optimizer='lamb',
    # LAMB's step is relative to each weight's norm: a small model takes a large one.
    learning_rate=learning_rate,
    warmup_steps=warmup_steps,
    log_every=log_every,
    eval_every=eval_every,
    eval_steps=eval_steps,
  )
  add_run_blocks(config, checkpoint_every=checkpoint_every, checkpoint_keep=3)

  # A model path to start from (albert_jax/model_path.py): a flax export, a
  # Hugging Face directory or cached hub id, a pretraining or fine-tuning run.
  config.init_from = ''
  return config
