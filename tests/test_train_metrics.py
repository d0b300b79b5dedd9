"""Metric records (console, TensorBoard, JSONL), throughput and MFU, loss sums."""

import glob
import io
import json
import os
import re
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from google.protobuf import json_format
from tensorboardX.proto import event_pb2, plugin_hparams_pb2

from albert_jax import pretraining
from albert_jax.train import metrics as metrics_lib
from albert_jax.train.config import PretrainConfig

import train_testing


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


def _events(directory: str) -> list[event_pb2.Event]:
  """The events of the one event file in `directory`: TFRecords (length, its
  CRC, the serialized Event, its CRC), read without TensorBoard installed."""
  (path,) = glob.glob(os.path.join(directory, 'events.out.tfevents.*'))
  events = []
  with open(path, 'rb') as f:
    while header := f.read(12):
      (length,) = struct.unpack('<Q', header[:8])
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)
  return events


def _scalars(events: list[event_pb2.Event]) -> dict[str, list[tuple[int, float]]]:
  scalars = {}
  for event in events:
    for value in event.summary.value:
      if value.HasField('simple_value'):
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_writer_sends_the_same_record_to_jsonl_and_tensorboard(tmp_path, capsys):
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=5)
  writer.write(1, {'loss': 3.0, 'mfu': None, 'tokens_per_sec': 10.0})
  writer.write(1, {'eval_mlm_loss': 2.0})
  writer.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert records == [
    {'step': 1, 'loss': 3.0, 'mfu': None, 'tokens_per_sec': 10.0},
    {'step': 1, 'eval_mlm_loss': 2.0},
  ]
  # Not a terminal (as in CI and SLURM logs): one plain line per record.
  assert capsys.readouterr().out == (
    'step 1/5 | loss 3.0000 | tok/s 10 | mfu n/a\nstep 1/5 | eval_mlm_loss 2\n'
  )
  assert _scalars(_events(os.path.join(tmp_path, 'tensorboard'))) == {
    'train/loss': [(1, 3.0)],
    'perf/tokens_per_sec': [(1, 10.0)],
    'eval/mlm_loss': [(1, 2.0)],
  }


def test_tensorboard_tags_are_grouped():
  assert [
    metrics_lib.tensorboard_tag(key)
    for key in ('loss', 'mlm_accuracy', 'learning_rate', 'eval_sop_accuracy', 'mfu', 'step_time')
  ] == [
    'train/loss',
    'train/mlm_accuracy',
    'train/learning_rate',
    'eval/sop_accuracy',
    'perf/mfu',
    'perf/step_time',
  ]


def test_run_config_as_text_and_hparams(tmp_path):
  config = {
    'model': {'hidden_size': 32, 'sharing': 'all', 'dropout': 0.0},
    'train': {'num_steps': 4, 'profile_steps': None, 'schedule': [1, 2], 'remat': False},
  }
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=4)
  writer.describe_run(config, num_params=12345)
  writer.close()
  events = _events(os.path.join(tmp_path, 'tensorboard'))
  values = {value.tag: value for event in events for value in event.summary.value}
  text = values['config'].tensor.string_val[0].decode()
  assert values['config'].metadata.plugin_data.plugin_name == 'text'
  assert text.startswith('12,345 parameters\n\n    {\n')
  # The config's JSON, indented as a Markdown code block.
  assert json.loads('\n'.join(line[4:] for line in text.splitlines()[2:])) == config
  session = values['_hparams_/session_start_info']
  assert session.metadata.plugin_data.plugin_name == 'hparams'
  hparams = plugin_hparams_pb2.HParamsPluginData.FromString(
    session.metadata.plugin_data.content
  ).session_start_info.hparams
  assert {key: json_format.MessageToDict(value) for key, value in hparams.items()} == {
    'num_params': 12345,
    'model.hidden_size': 32,
    'model.sharing': 'all',
    'model.dropout': 0,
    'train.num_steps': 4,
    'train.profile_steps': 'null',
    'train.schedule': '[1, 2]',
    'train.remat': False,
  }
  # In the run's own event file: no sub-run directory as add_hparams makes.
  assert os.listdir(os.path.join(tmp_path, 'tensorboard')) == [
    os.path.basename(glob.glob(os.path.join(tmp_path, 'tensorboard', '*'))[0])
  ]


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_console_is_a_bar_in_a_terminal_and_lines_elsewhere(tmp_path):
  assert metrics_lib.interactive(_Terminal())
  assert not metrics_lib.interactive(io.StringIO())
  with open(os.devnull) as closed:
    pass
  assert not metrics_lib.interactive(closed)  # isatty raises ValueError.
  assert not metrics_lib.interactive(object())

  terminal = _Terminal()
  writer = metrics_lib.MetricsWriter(str(tmp_path), total_steps=4, stream=terminal)
  for step in (1, 2):
    writer.advance(step)
  record = {'loss': 3.25, 'mlm_accuracy': 0.5, 'tokens_per_sec': 5000.0, 'eta_seconds': 1.0}
  writer.write(2, record)
  writer.write(2, {'eval_mlm_loss': 2.5})
  metrics_lib.console('a message')
  writer.advance(4)
  writer.write(4, {**record, 'loss': 3.0})
  writer.close()
  screen = terminal.getvalue()
  # The bar, redrawn in place: count, ETA, loss and tokens/s.
  half = r'train: +50%.*\| 2/4 \[.*<.*, loss 3\.2500, tok/s 5,000\]'
  assert any(re.search(half, frame) for frame in screen.split('\r'))
  assert re.search(r'train: 100%.*\| 4/4 \[.*, loss 3\.0000, tok/s 5,000\]', screen)
  # Evaluations and messages as lines above the bar; no line per training
  # record, but the last one in full once the bar is done.
  lines = [line.strip() for line in re.split(r'[\r\n]', screen) if 'step ' in line or 'a m' in line]
  assert lines == [
    'step 2/4 | eval_mlm_loss 2.5',
    'a message',
    'step 4/4 | loss 3.0000 | mlm_acc 0.500 | tok/s 5,000 | eta 0:00:01',
  ]
  # Once the bar is closed, messages print as before.
  assert metrics_lib._bar is None


def test_training_in_a_terminal_shows_the_bar_and_tensorboard_reads_well(
  vocab, tmp_path, monkeypatch
):
  """The loop moves the bar every step; the log_every lines are left to pipes."""
  terminal = _Terminal()
  monkeypatch.setattr(sys, 'stdout', terminal)
  config = train_testing.tiny_config(vocab, **{'train.eval_every': 4})
  workdir = str(tmp_path)
  pretraining.train(PretrainConfig.from_config(config), workdir, devices=jax.devices()[:1])
  screen = terminal.getvalue()
  counts = re.findall(r'\| (\d)/4 \[', screen)
  assert counts[0] == '0' and sorted(set(counts)) == ['0', '1', '2', '3', '4'], screen
  assert re.search(r'4/4 \[[^]]*, loss \d\.\d{4}, tok/s [\d,]+\]', screen), screen
  lines = [line for line in re.split(r'[\r\n]', screen) if line.startswith('step ')]
  assert [line.split(' | ')[0] for line in lines] == ['step 4/4', 'step 4/4'], screen
  assert 'eval_mlm_loss' in lines[0] and 'loss' in lines[1].split(' | ')[1]
  assert 'model tiny: ' in screen  # The trainer's own lines still print.

  events = _events(os.path.join(workdir, 'tensorboard'))
  assert set(_scalars(events)) >= {
    'train/loss',
    'train/mlm_accuracy',
    'train/learning_rate',
    'perf/tokens_per_sec',
    'perf/mfu',
    'eval/mlm_loss',
  }
  (text,) = [v for e in events for v in e.summary.value if v.tag == 'config']
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  body = text.tensor.string_val[0].decode().split('\n\n', 1)[1]
  assert json.loads('\n'.join(line[4:] for line in body.splitlines())) == saved


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
  sums = pretraining.loss_sums(outputs, batch)
  metrics = pretraining.summarize(sums, 'sop')
  mlm = -np.mean(np.log([0.7, 0.1, 0.6]))
  sop = -np.mean(np.log([0.9, 0.4]))
  np.testing.assert_allclose(metrics['mlm_loss'], mlm, rtol=1e-6)
  np.testing.assert_allclose(metrics['sop_loss'], sop, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], mlm + sop, rtol=1e-6)
  np.testing.assert_allclose(metrics['mlm_accuracy'], 2 / 3)  # Ids 0 and 2 right, 2 wrong.
  np.testing.assert_allclose(metrics['sop_accuracy'], 0.5)


def test_objective_none_trains_mlm_only():
  outputs, batch = _outputs_and_batch()
  metrics = pretraining.summarize(pretraining.loss_sums(outputs, batch), 'none')
  assert set(metrics) == {'mlm_loss', 'mlm_accuracy', 'loss'}
  assert metrics['loss'] == metrics['mlm_loss']


@pytest.mark.parametrize('launcher', ['pretrain', 'finetune'])
def test_the_trainers_do_not_import_torch(launcher):
  # tensorboardX would import torch whenever it is installed (as it is for
  # these tests): seconds of every trainer's start, and its thread pools.
  code = f'import sys, launch.{launcher}; print("torch" in sys.modules)'
  out = subprocess.run(
    [sys.executable, '-c', code],
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert out.strip() == 'False'
