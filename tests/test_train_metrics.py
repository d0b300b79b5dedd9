"""Metric records (console, TensorBoard, JSONL), throughput and MFU, loss sums."""

import glob
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.train import metrics as metrics_lib
from albert_jax.train import train_step as step_lib


def test_peak_flops_lookup():
  assert metrics_lib.peak_flops_per_device('TPU v4') == 275e12
  assert metrics_lib.peak_flops_per_device('TPU v5 lite') == 197e12
  assert metrics_lib.peak_flops_per_device('TPU v5') == 459e12
  assert metrics_lib.peak_flops_per_device('NVIDIA H100 80GB HBM3') == 989e12
  assert metrics_lib.peak_flops_per_device('cpu') is None
  assert metrics_lib.peak_flops_per_device('cpu', override=1e11) == 1e11


def test_throughput_mfu_and_eta(monkeypatch):
  clock = iter([0.0, 100.0, 102.0])  # Construction, restart, measure.
  monkeypatch.setattr(metrics_lib.time, 'perf_counter', lambda: next(clock))
  throughput = metrics_lib.Throughput(
    flops_per_step=4e12, tokens_per_step=1000, peak_flops=8e12, total_steps=30
  )
  throughput.restart(10)
  measured = throughput.measure(20)  # 10 steps in 2 s.
  assert measured == pytest.approx(
    {'step_time': 0.2, 'tokens_per_sec': 5000, 'mfu': 4e12 / 0.2 / 8e12, 'eta_seconds': 2.0}
  )


def test_throughput_without_peak_or_timed_steps():
  throughput = metrics_lib.Throughput(
    flops_per_step=1.0, tokens_per_step=1, peak_flops=None, total_steps=10
  )
  throughput.restart(3)
  assert throughput.measure(3) == dict.fromkeys(
    ('step_time', 'tokens_per_sec', 'mfu', 'eta_seconds')
  )
  assert throughput.measure(4)['mfu'] is None


def test_console_line():
  line = metrics_lib.format_line(
    10,
    {
      'mlm_loss': 2.0,
      'grad_norm': 1.5,
      'loss': 2.5,
      'mlm_accuracy': 0.25,
      'sop_accuracy': 0.5,
      'learning_rate': 1e-3,
      'step_time': 0.5,
      'tokens_per_sec': 12345.6,
      'mfu': 0.123,
      'eta_seconds': 65.0,
    },
    total_steps=100,
  )
  assert line == (
    'step 10/100 | loss 2.5000 | mlm_acc 0.250 | sop_acc 0.500 | '
    'lr 1.00e-03 | grad_norm 1.500 | s/step 0.500 | tok/s 12,346 | '
    'mfu 12.30% | eta 0:01:05'
  )
  assert metrics_lib.format_line(3, {'mfu': None, 'eta_seconds': None}) == (
    'step 3 | mfu n/a | eta n/a'
  )


def test_writer_sends_the_same_record_to_jsonl_and_tensorboard(tmp_path, capsys):
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=5)
  writer.write(1, {'loss': 3.0, 'mfu': None})
  writer.write(1, {'eval_mlm_loss': 2.0})
  writer.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert records == [{'step': 1, 'loss': 3.0, 'mfu': None}, {'step': 1, 'eval_mlm_loss': 2.0}]
  assert 'step 1/5 | loss 3.0000 | mfu n/a' in capsys.readouterr().out
  events = glob.glob(os.path.join(tmp_path, 'tensorboard', 'events.out.tfevents.*'))
  assert len(events) == 1
  with open(events[0], 'rb') as f:
    content = f.read()
  assert b'loss' in content and b'eval_mlm_loss' in content


def _outputs_and_batch():
  # 2 examples, 2 predictions each, vocabulary of 3.
  mlm_logits = jnp.log(
    jnp.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]])
  )
  sentence_logits = jnp.log(jnp.array([[0.9, 0.1], [0.4, 0.6]]))
  batch = {
    'masked_lm_ids': jnp.array([[0, 2], [2, 1]]),
    'masked_lm_weights': jnp.array([[1, 1], [1, 0]]),  # Last one is padding.
    'sentence_order_label': jnp.array([0, 0]),
  }
  return {'mlm_logits': mlm_logits, 'sentence_logits': sentence_logits}, batch


def test_loss_weights_real_predictions_and_adds_the_sentence_objective():
  outputs, batch = _outputs_and_batch()
  sums = step_lib.loss_sums(outputs, batch)
  metrics = step_lib.summarize(sums, 'sop')
  mlm = -np.mean(np.log([0.7, 0.1, 0.6]))
  sop = -np.mean(np.log([0.9, 0.4]))
  np.testing.assert_allclose(metrics['mlm_loss'], mlm, rtol=1e-6)
  np.testing.assert_allclose(metrics['sop_loss'], sop, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], mlm + sop, rtol=1e-6)
  np.testing.assert_allclose(metrics['mlm_accuracy'], 2 / 3)  # Ids 0 and 2 right, 2 wrong.
  np.testing.assert_allclose(metrics['sop_accuracy'], 0.5)


def test_objective_none_trains_mlm_only():
  outputs, batch = _outputs_and_batch()
  metrics = step_lib.summarize(step_lib.loss_sums(outputs, batch), 'none')
  assert set(metrics) == {'mlm_loss', 'mlm_accuracy', 'loss'}
  assert metrics['loss'] == metrics['mlm_loss']
