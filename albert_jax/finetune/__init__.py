"""Fine-tuning a pretrained ALBERT on downstream tasks, and predicting with it.

  classification.py  sequence (pair) classification: examples from TSV/CSV
                     files or a TFDS dataset, features, loss, accuracy / F1.
  span_qa.py         extractive QA in SQuAD format: windowed features, loss,
                     best-span decoding, exact match / F1.
  trainer.py         `finetune(config, pretrained, workdir)`: the task's data,
                     model and evaluation, trained by the loop, train step,
                     optimizer, mesh and initial state of albert_jax/train.
  predict.py         a task model's outputs, batched and sharded: evaluation's
                     and `launch.predict`'s labels and answers.

Configs: experiments/configs/finetune.py; launchers: `python -m launch.finetune`,
`python -m launch.predict`.
"""
