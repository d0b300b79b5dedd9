"""The benchmark's pieces on a tiny model: batch, JSON record, AOT memory, peak.

No timing assertions: speed is measured by `launch.benchmark`, not by tests.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from albert_jax import benchmark, hf_peer, memory_plan
from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import UsageError
from albert_jax.finetune import trainer as finetune_trainer
from albert_jax.train import metrics as metrics_lib
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain

import export_testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
  'model.vocab_size': 64,
  'model.embedding_size': 8,
  'model.hidden_size': 16,
  'model.num_layers': 2,
  'model.num_heads': 2,
  'model.intermediate_size': 32,
  'model.max_position_embeddings': 32,
}


def tiny_config(**overrides):
  config = pretrain.get_config('tiny')
  for key, value in {
    **TINY,
    'data.max_seq_length': 16,
    'data.max_predictions_per_seq': 3,
    'train.batch_size': 8,
    **overrides,
  }.items():
    section, name = key.split('.')
    config[section][name] = value
  return config


def test_num_masked_positions_scales_with_sequence_length():
  data = pretrain.get_config('base').data
  data.max_seq_length = 128
  assert benchmark.num_masked_positions(data) == 20
  data.max_seq_length = 512
  assert benchmark.num_masked_positions(data) == 76


def test_synthetic_batch_follows_the_data_contract():
  batch = benchmark.synthetic_batch(np.random.default_rng(0), 4, 16, 5, 64)
  assert {k: v.shape for k, v in batch.items()} == {
    'input_ids': (4, 16),
    'input_mask': (4, 16),
    'segment_ids': (4, 16),
    'masked_lm_positions': (4, 5),
    'masked_lm_ids': (4, 5),
    'masked_lm_weights': (4, 5),
    'sentence_order_label': (4,),
  }
  assert all(v.dtype == np.int32 for v in batch.values())
  positions = batch['masked_lm_positions']
  assert positions.min() >= 1 and positions.max() < 16  # Never [CLS].
  assert all(len(set(row)) == 5 for row in positions)  # Distinct.
  np.testing.assert_array_equal(
    batch['masked_lm_ids'], np.take_along_axis(batch['input_ids'], positions, axis=1)
  )
  assert batch['input_ids'].min() >= 5 and batch['input_ids'].max() < 64
  with pytest.raises(UsageError, match='do not fit'):
    benchmark.synthetic_batch(np.random.default_rng(0), 1, 4, 4, 64)


def test_compiled_step_runs_and_reports_memory():
  step = benchmark.compile_train_step(PretrainConfig.from_config(tiny_config()), jax.devices()[:1])
  batch = benchmark.synthetic_batch(np.random.default_rng(0), 8, 16, 3, 64)
  trainer = benchmark.JaxTrainer(step, batch)
  times = benchmark.interleaved_rounds({'jax': trainer.run}, rounds=2, steps=1)
  assert len(times['jax'].wall) == 2 and min(times['jax'].wall) > 0
  memory = benchmark.memory(step.compiled)
  assert memory.arguments > 0 and memory.peak >= memory.arguments
  assert step.compile_s > 0 and step.lower_s > 0


def test_aot_memory_shrinks_with_fsdp_and_remat():
  """Simulated devices: sharding the state over 4 devices and remat cut the
  per-device figures that the memory plan reports."""

  def peak(mesh, policy):
    config = tiny_config(**{'train.batch_size': 16, 'data.max_seq_length': 32})
    config.mesh = memory_plan.mesh_config(mesh, 4)
    config.model.remat_policy = policy
    config.model.unroll = 1  # Remat shrinks a loop's memory; the CPU's straight-line code less.
    compiled = benchmark.compile_train_step(
      PretrainConfig.from_config(config), jax.devices()[:4]
    ).compiled
    return benchmark.memory(compiled)

  data, fsdp = peak('data', 'none'), peak('fsdp', 'none')
  assert fsdp.arguments < data.arguments / 2
  assert peak('data', 'full').temporaries < data.temporaries


def test_memory_plan_table_and_mesh_layouts():
  assert memory_plan.mesh_config('fsdp', 8) == {'data': 1, 'fsdp': -1, 'tensor': 1}
  assert memory_plan.mesh_config('fsdp=-1+tensor=2', 8) == {'data': 1, 'fsdp': -1, 'tensor': 2}
  with pytest.raises(UsageError, match='bad mesh layout'):
    memory_plan.mesh_config('model=2', 8)
  record = {
    'preset': 'x',
    'dtype': 'float32',
    'batch_size': 64,
    'seq_len': 16,
    'micro_batch_per_device': 2,
    'num_devices': 8,
    'mesh': 'fsdp=8',
    'remat_policy': 'full',
    'grad_accum_steps': 4,
    'memory_per_device_bytes': 20 * 2**30,
    'memory_analysis': {'arguments': 2**30, 'temporaries': 19 * 2**30},
  }
  table = memory_plan.markdown_table([record])
  assert '| 8 | fsdp=8 | full | 4 | 1.00 | 19.00 | 20.00 | no | yes |' in table
  assert 'Fits 16 GiB: none.' in table
  assert 'Fits 80 GiB: 8 x fsdp=8 / full.' in table

  # --device_memory: sizes in GiB and known devices, spelt loosely.
  v5e, h200, a100 = (memory_plan.device_memory(s) for s in ('tpu-v5e', 'H200', 'A100-80GB'))
  assert (v5e.gib, h200.gib, a100.gib) == (16, 141, 80)
  assert memory_plan.device_memory('tpu_v4').gib == 32
  assert memory_plan.device_memory('v5p').gib == 95
  assert memory_plan.device_memory('a100-40').gib == 40
  assert memory_plan.device_memory('h100').gib == 80
  assert memory_plan.device_memory('19.5') == memory_plan.DeviceMemory(19.5)
  table = memory_plan.markdown_table([record], [v5e, memory_plan.DeviceMemory(19.5), h200])
  assert '| fits TPU v5e (16 GiB) | fits 19.5 GiB | fits H200 (141 GiB) |' in table
  assert '| 20.00 | no | no | yes |' in table
  assert 'Fits TPU v5e (16 GiB): none.' in table
  assert 'Fits H200 (141 GiB): 8 x fsdp=8 / full.' in table
  for bad, message in [
    ('a100', 'say a100-40 or a100-80'),
    ('v3', 'not a size in GiB nor a known device .*h200'),
    ('0', 'must be positive'),
  ]:
    with pytest.raises(UsageError, match=message):
      memory_plan.device_memory(bad)


def test_launch_memory_plan_judges_against_device_memory():
  args = [
    '--config=experiments/configs/pretrain.py:tiny',
    *_flags(),
    '--config.data.max_seq_length=16',
    '--config.data.max_predictions_per_seq=3',
    '--config.train.batch_size=8',
    '--num_devices=1',
    '--meshes=data',
    '--remat_policies=none',
  ]
  result = _launch('launch.memory_plan', *args, '--device_memory=v5e,h200,0.000001')
  assert result.returncode == 0, result.stderr
  assert 'fits TPU v5e (16 GiB) | fits H200 (141 GiB) | fits 1e-06 GiB |' in result.stdout
  assert '| yes | yes | no |' in result.stdout
  assert 'Fits 1e-06 GiB: none.' in result.stdout
  result = _launch('launch.memory_plan', *args, '--device_memory=v9')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    'error: --device_memory=v9: not a size in GiB nor a known device '
    '(v4, v5e, v5p, a100-40, a100-80, h100, h200)'
  ]


def test_cpu_peak_from_cpuinfo():
  cpuinfo = (
    'vendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2000.000\n'
    'flags\t\t: fpu avx avx2 fma avx512f\n'
  )
  peak = metrics_lib.cpu_peak_fp32(cpuinfo, num_cores=4)
  assert peak.flops_per_sec == 4 * 2e9 * 2 * 16 * 2
  zen4 = cpuinfo.replace('GenuineIntel', 'AuthenticAMD').replace(': 6', ': 25')
  assert metrics_lib.cpu_peak_fp32(zen4, 4).flops_per_sec == 4 * 2e9 * 2 * 8 * 2
  assert metrics_lib.cpu_peak_fp32('flags: sse', 1).flops_per_sec is None


def _launch(module, *args):
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  return subprocess.run(
    [sys.executable, '-m', module, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**env, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'},
  )


def _flags(config=TINY):
  return [f'--config.{k}={v}' for k, v in config.items()]


def test_launch_benchmark_prints_one_json_line_with_sane_values(tmp_path):
  result = _launch(
    'launch.benchmark',
    '--config=experiments/configs/pretrain.py:tiny',
    '--batch_size=4',
    '--max_seq_length=16',
    '--steps=1',
    '--rounds=2',
    '--warmup=1',
    '--json',
    f'--profile={tmp_path}',
    '--config.data.max_predictions_per_seq=3',
    *_flags(),
  )
  assert result.returncode == 0, result.stderr
  assert len(list(tmp_path.glob('plugins/profile/*/*.xplane.pb'))) == 1
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  record = json.loads(lines[0])
  assert record['batch_size'] == 4 and record['seq_len'] == 16
  assert record['num_masked'] == 3
  assert record['tokens_per_sec'] == pytest.approx(64 / record['step_time_s'])
  assert record['flops_per_sec'] == pytest.approx(record['flops_per_step'] / record['step_time_s'])
  assert record['compile_s'] > 0 and record['memory_per_device_bytes'] > 0
  assert record['max_rss_bytes'] > 0
  assert 0 < record['mfu'] == pytest.approx(record['flops_per_sec'] / record['peak_flops_per_sec'])
  assert 'peer_tokens_per_sec' not in record
  # Started without GLIBC_TUNABLES, the launcher restarted itself with them (launch/__init__.py).
  assert record['glibc_tunables'] == 'glibc.malloc.hugetlb=1'


def test_launch_benchmark_rejects_bad_input_in_one_line():
  result = _launch(
    'launch.benchmark',
    '--config=experiments/configs/pretrain.py:tiny',
    '--max_seq_length=4096',
    *_flags(),
  )
  assert result.returncode != 0
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith('error: ') and 'max_seq_length=4096' in line, line


# ---------------------------------------------------------------- fine-tuning on real batches


def test_finetune_runner_and_the_transformers_loop_train_on_the_same_tsv(tmp_path):

  train = export_testing.write_classification(str(tmp_path / 'train.tsv'), 64, seed=0)
  config = export_testing.finetune_config('classification', 4, train=train, bucket_multiple=8)
  prepared = finetune_trainer.prepare(
    config, pretrained_lib.load_flax(export_testing.exported('flax'))
  )
  runner = benchmark.FinetuneRunner(prepared)
  shapes = runner.compile_shapes()
  assert shapes == sorted(set(prepared.batches.padded_lengths(0, 4).tolist()))
  assert set(shapes) <= {8, 16, 24, 32}
  wall, cpu = runner.run(2)
  assert wall > 0 and cpu > 0

  recipe = hf_peer.Recipe(
    batch_size=16,
    num_epochs=1.0,
    learning_rate=1e-3,
    warmup_fraction=0.1,
    weight_decay=0.01,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    clip_norm=1.0,
    max_seq_length=32,
    seed=0,
  )
  result = hf_peer.finetune_command(export_testing.exported('hf'), train, train, recipe, 1)
  assert result['examples'] == 64 and result['peer_steps'] == 4
  assert 0 <= result['accuracy'] <= 1 and result['loop_s'] <= result['wall_s']


def test_classification_benchmark_refuses_bad_input_in_one_line(tmp_path):
  for args, message in (
    ([], '--task=classification needs --model=HF_DIR and --data=TRAIN.tsv'),
    ([f'--model={tmp_path}', f'--data={tmp_path}/x.tsv'], 'is not a Hugging Face directory'),
  ):
    result = subprocess.run(
      [sys.executable, '-m', 'launch.benchmark', '--task=classification', *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(message) or message in result.stderr
