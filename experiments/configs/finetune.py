"""Fine-tuning presets: `python -m launch.finetune --model=OUT --task=NAME`.

NAME is one of:
  classification  sequence (pair) classification from --config.data.train /
                  .eval: PATH.tsv, PATH.csv or tfds:NAME[/CONFIG][:SPLIT];
  sst2            GLUE SST-2 from TFDS (glue/sst2, train / validation);
  imdb            IMDb reviews from TFDS (imdb_reviews, train / test);
  span_qa         extractive QA from SQuAD-format JSON files
                  (--config.data.train / .eval).
Hyperparameters follow ALBERT's run_classifier / run_squad (AdamW without
bias correction, linear decay from step 0 with linear warmup), with the run's length in epochs
(train.num_epochs, warmup as train.warmup_fraction of its steps); every key can be overridden,
e.g. `--config.train.learning_rate=1e-5 --config.data.max_seq_length=256`.
"""

import ml_collections

from experiments.configs import pretrain

# ALBERT's runs: SST-2 20,935 steps of 32 over 67,349 examples (~10 epochs,
# 6 % warmup) at seq 512; SQuAD 1.1 3,649 steps of 48 over ~88k windows (~2
# epochs, 10 % warmup). In epochs, a preset fits a data set of any size.
_PRESETS = {
  'classification': dict(task='classification', epochs=3.0, warmup=0.1, lr=2e-5),
  'sst2': dict(
    task='classification',
    train='tfds:glue/sst2:train',
    eval='tfds:glue/sst2:validation',
    text_feature='sentence',
    # As ALBERT's run_glue.sh; the sentences fit in 128, ~4x cheaper
    # (--config.data.max_seq_length=128).
    max_seq_length=512,
    epochs=10.0,
    warmup=0.06,
    lr=1e-5,
  ),
  'imdb': dict(
    task='classification',
    train='tfds:imdb_reviews:train',
    eval='tfds:imdb_reviews:test',
    max_seq_length=512,
    epochs=3.0,
    warmup=0.1,
    lr=2e-5,
  ),
  'span_qa': dict(task='span_qa', max_seq_length=384, epochs=2.0, warmup=0.1, lr=5e-5),
}


def get_config(arg: str = 'classification') -> ml_collections.ConfigDict:
  """The fine-tuning config of preset `arg`."""
  if arg not in _PRESETS:
    raise ValueError(f'unknown fine-tuning task {arg!r}: choose one of {", ".join(_PRESETS)}')
  preset = _PRESETS[arg]
  task = preset['task']
  config = ml_collections.ConfigDict()
  config.preset = arg
  config.task = task  # 'classification' | 'span_qa'

  config.data = ml_collections.ConfigDict(
    dict(
      train=preset.get('train', ''),
      # Empty: no evaluation.
      eval=preset.get('eval', ''),
      # Classification: column / feature names (see finetune/classification.py).
      text_feature=preset.get('text_feature', 'text'),
      text_b_feature='',
      label_feature='label',
      # 0: from the data.
      num_labels=0,
      max_seq_length=preset.get('max_seq_length', 128),
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
      unroll=0,  # Layers per loop iteration; 0: the backend's choice.
    )
  )

  config.train = pretrain.train_config(
    batch_size=48 if task == 'span_qa' else 32,
    # 0: from num_epochs (set one of the two).
    num_steps=0,
    optimizer='adamw',
    learning_rate=preset['lr'],
    # 0: from warmup_fraction (set one of the two).
    warmup_steps=0,
    log_every=100,
    eval_every=1000,
    # Passes over the training data; the run's steps follow the data size.
    num_epochs=preset['epochs'],
    # Warmup as a fraction of the run's steps.
    warmup_fraction=preset['warmup'],
  )
  pretrain.add_run_blocks(config, checkpoint_every=1000, checkpoint_keep=1)
  return config
