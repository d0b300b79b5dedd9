r"""Times the pretraining step alone, after compilation.

  python -m launch.benchmark --config=experiments/configs/pretrain.py:base \
      --batch_size=8 --max_seq_length=128 --json
  python -m launch.benchmark --config=experiments/configs/pretrain.py:base \
      --batch_size=8 --max_seq_length=512 --peer=hf --config.train.optimizer=adamw
  python -m launch.benchmark --config=experiments/configs/pretrain.py:base \
      --compile_depths=12,48                    # compile time vs depth

Reports step time (median over rounds), tokens/s, model FLOP/s and MFU against
the devices' peak (fp32 from /proc/cpuinfo on CPU, the bf16 table of
albert_jax.train.metrics on accelerators), lowering and compile time, the
cuDNN fused-attention kernels in the compiled step (0: XLA's spelled-out
attention), and memory: XLA's buffer assignment of the compiled step per
device, the allocator's peak on accelerators and the process's max RSS on CPU.
The batch is synthetic (albert_jax.benchmark.synthetic_batch).

--peer=hf also trains Hugging Face's PyTorch AlbertForPreTraining (AdamW) on
the same batch with as many threads as XLA uses, in a child process driven in
alternating rounds with the JAX step, and adds peer_tokens_per_sec and ratio
(JAX / peer tokens/s). CPU seconds per step are reported for both: with other
work on the machine they are steadier than wall time.

--compile_depths compiles the step (nothing run) at each num_layers, with the
layer scan and unrolled, and prints compile_s of each.
"""

import dataclasses
import json
import os
import statistics

import jax
import numpy as np
from absl import flags

from albert_jax import benchmark
from albert_jax.errors import UsageError
from albert_jax.train import metrics as metrics_lib
from albert_jax.train.config import PretrainConfig
from launch import command_line

_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Global batch (sets train.batch_size).')
_MAX_SEQ_LENGTH = flags.DEFINE_integer(
  'max_seq_length', None, 'Sequence length (sets data.max_seq_length).'
)
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timing rounds (alternating with the peer).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_PEER = flags.DEFINE_enum('peer', 'none', ['none', 'hf'], 'Also time this peer on the same batch.')
_COMPILE_DEPTHS = flags.DEFINE_list(
  'compile_depths',
  [],
  'Only compile, at each of these num_layers, scanned and unrolled, and print compile times.',
)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON line per result.')
_PROFILE = flags.DEFINE_string(
  'profile',
  None,
  'Write a jax.profiler trace of one extra round of JAX steps, after the timed '
  'ones, into this directory (TensorBoard profile plugin or Perfetto).',
)


def main(argv: list[str]) -> None:
  del argv  # Flags only.
  config = flags.FLAGS.config
  record = _checked(config)
  if _COMPILE_DEPTHS.value:
    _compile_depths(config, [int(d) for d in _COMPILE_DEPTHS.value])
  else:
    _print(_time_step(record))


def _apply_flags(config) -> None:
  """Sets the config keys of --batch_size and --max_seq_length."""
  if _BATCH_SIZE.value is not None:
    config.train.batch_size = _BATCH_SIZE.value
  if _MAX_SEQ_LENGTH.value is not None:
    config.data.max_seq_length = _MAX_SEQ_LENGTH.value


def _checked(config) -> PretrainConfig:
  """The config as a record; UsageError for it or for a bad flag."""
  record = PretrainConfig.from_config(config)
  for name, value in (('--steps', _STEPS.value), ('--rounds', _ROUNDS.value)):
    if value < 1:
      raise UsageError(f'{name} must be >= 1, got {value}')
  if _COMPILE_DEPTHS.value and not all(d.isdigit() and int(d) > 0 for d in _COMPILE_DEPTHS.value):
    raise UsageError(
      f'--compile_depths takes positive integers, got {",".join(_COMPILE_DEPTHS.value)}'
    )
  return record


def _time_step(config: PretrainConfig) -> dict:
  """Compiles, warms up and times the step (and the peer); the JSON record."""
  data, train = config.data, config.train
  step = benchmark.compile_train_step(config)
  num_masked = benchmark.num_masked_positions(data)
  batch = benchmark.synthetic_batch(
    np.random.default_rng(0),
    train.batch_size,
    data.max_seq_length,
    num_masked,
    config.model.vocab_size,
  )
  runners = {'jax': benchmark.JaxTrainer(step, batch).run}
  threads = len(os.sched_getaffinity(0))
  peer = None
  if _PEER.value == 'hf':
    from albert_jax import hf_peer  # pylint: disable=g-import-not-at-top

    peer = hf_peer.PeerProcess(
      config.model,
      batch,
      learning_rate=train.learning_rate,
      weight_decay=train.weight_decay,
      b1=train.b1,
      b2=train.b2,
      eps=train.eps,
      clip_norm=train.clip_norm,
      num_threads=threads,
    )
    runners['peer'] = peer.run
  try:
    for run in runners.values():
      if _WARMUP.value:
        run(_WARMUP.value)
    times = benchmark.interleaved_rounds(runners, rounds=_ROUNDS.value, steps=_STEPS.value)
    if _PROFILE.value:  # Apart from the timed rounds: tracing slows the step.
      with jax.profiler.trace(_PROFILE.value, create_perfetto_trace=True):
        runners['jax'](_STEPS.value)
  finally:
    if peer is not None:
      peer.close()

  devices = list(step.mesh.devices.flat)
  tokens = train.batch_size * data.max_seq_length
  step_time = statistics.median(times['jax'].wall)
  flops_per_step = benchmark.train_flops_per_step(config)
  peak = metrics_lib.peak_flops(devices, train.peak_flops_per_device)
  memory = benchmark.memory(step.compiled)
  result = {
    'preset': config.preset,
    'backend': jax.default_backend(),
    'device_kind': devices[0].device_kind,
    'num_devices': len(devices),
    'batch_size': train.batch_size,
    'seq_len': data.max_seq_length,
    'num_masked': num_masked,
    'grad_accum_steps': step.grad_accum_steps,
    'dtype': config.model.dtype,
    'remat_policy': config.model.remat_policy,
    'unroll': step.layer_unroll,
    'optimizer': train.optimizer,
    'steps': _STEPS.value,
    'rounds': _ROUNDS.value,
    'step_time_s': step_time,
    'step_times_s': times['jax'].wall,
    'cpu_s_per_step': statistics.median(times['jax'].cpu),
    'tokens_per_sec': tokens / step_time,
    'flops_per_step': flops_per_step,
    'flops_per_sec': flops_per_step / step_time,
    'peak_flops_per_sec': peak.flops_per_sec,
    'peak_derivation': peak.derivation,
    'mfu': (flops_per_step / step_time / peak.flops_per_sec if peak.flops_per_sec else None),
    'lower_s': step.lower_s,
    'compile_s': step.compile_s,
    'fused_attention_calls': benchmark.fused_attention_calls(step.compiled),
    'memory_per_device_bytes': memory.peak,
    'memory_analysis': dataclasses.asdict(memory),
    'device_peak_bytes': benchmark.device_peak_bytes(devices[0]),
    'max_rss_bytes': benchmark.max_rss_bytes(),
    'threads': threads,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
  }
  if 'peer' in runners:
    peer_time = statistics.median(times['peer'].wall)
    result.update(
      {
        'peer': 'hf',
        **peer.info,
        'peer_step_time_s': peer_time,
        'peer_step_times_s': times['peer'].wall,
        'peer_cpu_s_per_step': statistics.median(times['peer'].cpu),
        'peer_tokens_per_sec': tokens / peer_time,
        'ratio': peer_time / step_time,
        'cpu_ratio': (statistics.median(times['peer'].cpu) / statistics.median(times['jax'].cpu)),
      }
    )
  return result


def _compile_depths(config, depths: list[int]) -> None:
  """Compile time of the step at each depth, as a loop and unrolled."""
  records = []
  for scan in (True, False):
    for depth in depths:
      config.model.num_layers = depth
      config.model.unroll = 1 if scan else depth
      step = benchmark.compile_train_step(PretrainConfig.from_config(config))
      records.append(
        {
          'preset': config.get('preset', ''),
          'num_layers': depth,
          'scan': scan,
          'lower_s': step.lower_s,
          'compile_s': step.compile_s,
        }
      )
      if _JSON.value:
        print(json.dumps(records[-1]), flush=True)
  if not _JSON.value:
    print('| layers | scan | lower (s) | compile (s) |\n|---|---|---|---|')
    for r in records:
      print(f'| {r["num_layers"]} | {r["scan"]} | {r["lower_s"]:.2f} | {r["compile_s"]:.2f} |')
    for scan in (True, False):
      times = {r['num_layers']: r['compile_s'] for r in records if r['scan'] == scan}
      print(
        f'{"scan" if scan else "unrolled"}: compile at {max(depths)} layers '
        f'/ at {min(depths)} = {times[max(depths)] / times[min(depths)]:.2f}x'
      )


def _print(result: dict) -> None:
  if _JSON.value:
    print(json.dumps(result))
    return
  mfu = f'{result["mfu"]:.1%}' if result['mfu'] is not None else 'n/a'
  print(
    f'{result["preset"]} on {result["num_devices"]} x {result["device_kind"]}: '
    f'batch {result["batch_size"]} x seq {result["seq_len"]}, '
    f'{result["dtype"]}, remat {result["remat_policy"]}'
  )
  print(
    f'  step {result["step_time_s"] * 1e3:.1f} ms | '
    f'{result["tokens_per_sec"]:,.0f} tokens/s | '
    f'{result["flops_per_sec"] / 1e9:,.1f} GFLOP/s | MFU {mfu}'
  )
  print(f'  peak: {result["peak_derivation"]}')
  print(
    f'  compile {result["compile_s"]:.1f} s (lowering {result["lower_s"]:.1f} s) | '
    f'memory/device {result["memory_per_device_bytes"] / 2**30:.2f} GiB '
    f'(XLA buffer assignment) | max RSS {result["max_rss_bytes"] / 2**30:.2f} GiB'
  )
  if 'peer' in result:
    print(
      f'  peer hf (torch, {result["peer_attention"]} attention): '
      f'{result["peer_tokens_per_sec"]:,.0f} tokens/s | '
      f'JAX / peer = {result["ratio"]:.2f}x '
      f'(CPU seconds per step: {result["cpu_ratio"]:.2f}x)'
    )


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      'experiments/configs/pretrain.py:base',
      keys_file='experiments/configs/pretrain.py',
      lock_config=False,
      resolve=_apply_flags,
    ),
  )
