"""Fine-tuning presets: `python -m launch.finetune --model=OUT --task=NAME`.

NAME is one of:
  classification  sequence (pair) classification from --config.data.train /
                  .eval: PATH.tsv, PATH.csv or tfds:NAME[/CONFIG][:SPLIT];
  sst2            GLUE SST-2 from TFDS (glue/sst2, train / validation);
  imdb            IMDb reviews from TFDS (imdb_reviews, train / test);
  span_qa         extractive QA from SQuAD-format JSON files
                  (--config.data.train / .eval).
Hyperparameters follow ALBERT's run_classifier / run_squad (AdamW-style
fine-tuning, linear warmup 10% then decay); every key can be overridden,
e.g. `--config.train.learning_rate=1e-5 --config.data.max_seq_length=256`.
"""

import ml_collections

from experiments.configs import pretrain

# name: (task, train source, eval source, text feature, max_seq_length)
_PRESETS = {
  'classification': ('classification', '', '', 'text', 128),
  'sst2': ('classification', 'tfds:glue/sst2:train', 'tfds:glue/sst2:validation', 'sentence', 128),
  'imdb': ('classification', 'tfds:imdb_reviews:train', 'tfds:imdb_reviews:test', 'text', 512),
  'span_qa': ('span_qa', '', '', 'text', 384),
}


def get_config(arg: str = 'classification') -> ml_collections.ConfigDict:
  """The fine-tuning config of preset `arg`."""
  if arg not in _PRESETS:
    raise ValueError(f'unknown fine-tuning task {arg!r}: choose one of {", ".join(_PRESETS)}')
  task, train, evaluation, text_feature, max_seq_length = _PRESETS[arg]
  config = ml_collections.ConfigDict()
  config.preset = arg
  config.task = task  # 'classification' | 'span_qa'

  config.data = ml_collections.ConfigDict(
    dict(
      train=train,
      # Empty: no evaluation.
      eval=evaluation,
      # Classification: column / feature names (see finetune/classification.py).
      text_feature=text_feature,
      text_b_feature='',
      label_feature='label',
      # 0: from the data.
      num_labels=0,
      max_seq_length=max_seq_length,
      # Span QA: windows over long contexts, question and answer lengths.
      doc_stride=128,
      max_query_length=64,
      max_answer_length=30,
      seed=0,
    )
  )

  # Run-time settings of the exported model (its architecture is fixed). The
  # backbone keeps the model's own dropout (0 for ALBERT v2), as the original
  # run_classifier / run_squad do; classification adds 0.1 dropout on the
  # pooled output only (AlbertForSequenceClassification).
  config.model = ml_collections.ConfigDict(
    dict(
      dtype='float32',
      remat_policy='none',
    )
  )

  squad = task == 'span_qa'
  config.train = pretrain.train_config(
    batch_size=48 if squad else 32,
    num_steps=3649 if squad else 20935,
    optimizer='adamw',
    learning_rate=5e-5 if squad else 1e-5,
    warmup_steps=365 if squad else 1256,
    log_every=100,
    eval_every=1000,
  )
  pretrain.add_run_blocks(config, checkpoint_every=1000, checkpoint_keep=1)
  return config
