"""`launch.memory_plan --topology`: the real train step compiled by the TPU
compiler (libtpu) for TPU slices, on a machine without any TPU.

Each compile runs in a launcher subprocess, so that libtpu is loaded by
none of the test processes' jax.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from albert_jax import benchmark, flops, memory_plan, param_count
from albert_jax.train.config import PretrainConfig
from experiments.configs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_libtpu = pytest.mark.skipif(
  not memory_plan.libtpu_installed(),
  reason='libtpu is not installed (pip install -r requirements-tpu-compiler.txt)',
)

TINY = PretrainConfig.from_config(pretrain.get_config('tiny'))


def _plan(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.memory_plan',
      '--config=experiments/configs/pretrain.py:tiny',
      *args,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _records(*args: str) -> list[dict]:
  result = _plan('--json', *args)
  assert result.returncode == 0, result.stderr[-3000:]
  # libtpu's warnings about the missing TPU VM stay out of the output.
  assert 'TPU_' not in result.stdout + result.stderr, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_tpu_compiler_pin_is_the_one_jax_tpu_takes():
  """requirements-tpu-compiler.txt's libtpu is the release jax[tpu] (requirements-tpu.txt) pins."""
  with open(os.path.join(ROOT, 'requirements-tpu-compiler.txt')) as f:
    (pin,) = re.findall(r'^libtpu==([\d.]+);', f.read(), re.M)
  (wanted,) = [r for r in importlib.metadata.requires('jax') if r.startswith('libtpu')]
  version = re.match(r'libtpu==([\d.*]+)', wanted).group(1)
  assert re.fullmatch(version.replace('.', r'\.').replace('*', r'\d+'), pin), (pin, wanted)


@pytest.fixture(scope='module')
def pretraining() -> list[dict]:
  """The tiny preset's pretraining step on a v5e 2x2 slice, remat none and full."""
  return _records('--topology=v5e:2x2', '--remat_policies=none,full')


@needs_libtpu
def test_pretraining_step_compiles_for_v5e(pretraining):
  assert [r['remat_policy'] for r in pretraining] == ['none', 'full']
  none, full = pretraining
  for r in pretraining:
    assert r['device_kind'] == 'TPU v5 lite'
    assert (r['num_devices'], r['hosts'], r['mesh']) == (4, 1, 'data=4')
    assert r['device_hbm_bytes'] == 16 * 2**30
    # The TPU's choices for the 0 ("auto") settings: one micro-batch (16 x 128
    # tokens a chip); unrolled layers without remat, a loop with it.
    assert (r['grad_accum_steps'], r['layer_unroll']) == (1, 4 if r is none else 1)
    m = r['memory_analysis']
    assert min(m.values()) > 0 and m['aliased'] <= m['outputs']
    assert r['memory_per_device_bytes'] == (
      m['arguments'] + m['outputs'] - m['aliased'] + m['temporaries']
    )
  # Arguments: the replicated params and LAMB's two moments (float32), and
  # this device's quarter of the batch.
  state = 3 * 4 * param_count.count_params(TINY.model)['total']
  assert state <= none['memory_analysis']['arguments'] <= state + 2**20
  # The state is donated: the new state is written over it.
  assert none['memory_analysis']['aliased'] >= state


@needs_libtpu
def test_pretraining_flops_against_the_model_count(pretraining):
  none, full = pretraining
  masked = benchmark.num_masked_positions(TINY.data)
  model = flops.train_flops_per_example(TINY.model, TINY.data.max_seq_length, masked)
  for r in pretraining:
    assert r['model_flops_per_device'] == model * TINY.train.batch_size / 4
    assert r['estimated_step_s'] > 0 and 0 < r['estimated_mfu'] < 1
  # The compiler counts the matmuls and the rest (softmax, LayerNorm, the
  # optimizer), all four layers: a loop's body counted once would be ~1/3.
  assert 1.0 < none['estimated_flops_per_device'] / none['model_flops_per_device'] < 1.3
  # Full remat runs each layer's forward again in the backward pass.
  assert full['estimated_flops_per_device'] > 1.15 * none['estimated_flops_per_device']


@needs_libtpu
def test_loop_estimates_agree_with_the_programs_without_loops(pretraining):
  (loop,) = _records('--topology=v5e:2x2', '--remat_policies=none', '--config.model.unroll=1')
  assert loop['layer_unroll'] == 1
  unrolled = pretraining[0]
  assert unrolled['layer_unroll'] == 4
  ratio = loop['estimated_flops_per_device'] / unrolled['estimated_flops_per_device']
  assert 0.95 < ratio < 1.05
  # Two micro-batches of 8: the same FLOPs but for the optimizer's update, counted twice.
  (two,) = _records(
    '--topology=v5e:2x2', '--remat_policies=none', '--config.train.grad_accum_steps=2'
  )
  assert two['grad_accum_steps'] == 2 and two['estimated_step_s'] > 0
  ratio = two['estimated_flops_per_device'] / unrolled['estimated_flops_per_device']
  assert 1.0 <= ratio < 1.05


@needs_libtpu
def test_classification_step_compiles_for_a_multi_host_slice():
  """A fine-tuning step on a v5e 4x4: 16 chips on 4 hosts, compiled as the
  job on those hosts would be (devices of 4 processes)."""
  (r,) = _records('--topology=v5e:4x4', '--step=classification')
  assert (r['step'], r['device_kind'], r['num_devices'], r['hosts']) == (
    'classification',
    'TPU v5 lite',
    16,
    4,
  )
  assert r['mesh'] == 'data=16'
  # The classifier's head is not the pretraining heads: no MLM, no SOP.
  state = 3 * 4 * param_count.count_params(TINY.model)['backbone']
  assert state <= r['memory_analysis']['arguments'] <= state + 2**20
  model = flops.train_flops_per_example(TINY.model, TINY.data.max_seq_length, 0)
  assert r['model_flops_per_device'] == model * TINY.train.batch_size / 16
  assert 1.0 < r['estimated_flops_per_device'] / r['model_flops_per_device'] < 1.3


@needs_libtpu
def test_a_step_over_the_chips_memory_is_refused_by_the_compiler():
  big = ('--topology=v5e:2x2', '--config.train.batch_size=65536')
  (r,) = _records(*big, '--config.train.grad_accum_steps=1')
  assert r['compile_error'].startswith('RESOURCE_EXHAUSTED: ')
  assert 'exceeds available HBM' in r['compile_error']
  assert 'memory_analysis' not in r and 'estimated_step_s' not in r
  # The TPU's choice: micro-batches of 4,096 tokens a chip (32 x 128), which fit.
  (auto,) = _records(*big)
  assert auto['grad_accum_steps'] == 65536 // 4 // 32
  assert auto['memory_per_device_bytes'] < auto['device_hbm_bytes']


@needs_libtpu
def test_step_time_of_a_wide_layer_leaves_out_what_the_cost_model_cannot_price():
  """At base's width the compiler emits ConcatBitcast calls, which its cost
  model prices at -1 s each: the estimate leaves them out, and is no
  faster than the chip's bf16 peak or its HBM bandwidth allow."""
  (r,) = _records(
    '--topology=v5e:2x2',
    '--config.model.hidden_size=768',
    '--config.model.num_heads=12',
    '--config.model.intermediate_size=3072',
    '--config.model.num_layers=1',
  )
  assert r['estimate_unpriced_ops'] > 0
  peak = memory_plan.TPU_CHIPS['TPU v5 lite'].bf16_flops
  assert r['estimated_flops_per_device'] / peak < r['estimated_step_s'] < 1.0


@needs_libtpu
def test_markdown_table_and_bad_topologies():
  result = _plan('--topology=v5e:2x2', '--device_memory=0.001')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'estimates of its cost model' in result.stdout
  assert '| v5e:2x2 | 4 (1) | data=4 | none | 1 | 4 |' in result.stdout
  assert '| fits 0.001 GiB |' in result.stdout and '| no |' in result.stdout
  bad = _plan('--topology=v9:2x2')
  assert bad.returncode == 1
  lines = bad.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: --topology=v9:2x2: libtpu gives no'), (
    bad.stderr
  )
  # 16 examples do not split over the 64 hosts of a v5e 16x16.
  hosts = _plan('--topology=v5e:16x16')
  assert hosts.returncode == 1
  assert hosts.stderr.strip().splitlines() == [
    'error: a micro-batch of 16 examples does not split over the 64 hosts of v5e:16x16: '
    'change --config.train.batch_size or grad_accum_steps'
  ]
