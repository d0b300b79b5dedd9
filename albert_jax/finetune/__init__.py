"""Fine-tuning a pretrained (exported) ALBERT on downstream tasks.

  classification.py  sequence (pair) classification: examples from TSV/CSV
                     files or a TFDS dataset, features, loss, accuracy / F1.
  span_qa.py         extractive QA in SQuAD format: windowed features, loss,
                     best-span decoding, exact match / F1.
  trainer.py         `finetune(config, model_dir, workdir)`: the task's data,
                     model and evaluation, trained by the loop, train step,
                     optimizer, mesh and initial state of albert_jax/train.

Configs: experiments/configs/finetune.py; launcher: `python -m launch.finetune`.
"""
