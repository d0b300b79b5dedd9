r"""Times the pretraining step alone, after compilation; or fine-tuning on real text.

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

  python -m launch.benchmark --task=classification --model=out/hf \
      --data=train.tsv --eval_data=dev.tsv --peer=hf --seeds=0,1,2

--task=classification times fine-tuning with the classification preset of
experiments/configs/finetune.py (every --config.KEY override applies) on a
TSV of real texts (--data, a header naming text and label), from --model (a
Hugging Face directory: the peer loads it too). Inside the loop: rounds of
--steps steps on the trainer's own batches, interleaved: ours (batches padded
to their bucket length), ours with every batch padded to max_seq_length (as
before buckets), and with --peer=hf a plain transformers loop in a child
process (albert_jax/hf_peer.py: DataCollatorWithPadding, torch AdamW, linear
warmup then decay, as many threads); every shape is compiled before the timed
rounds. Whole command: for each of --seeds, `launch.finetune` and the peer's
whole script, each timed from process start to exit, alternating which goes
first, with the dev accuracy of each when --eval_data is given. The record
(one JSON object; with --json the last line printed) gives examples/s of each, the ratios,
and the load average of the machine before and after.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags

from albert_jax import benchmark, model_path
from albert_jax.errors import UsageError
from albert_jax.finetune import trainer as finetune_trainer
from albert_jax.finetune.config import FinetuneConfig
from albert_jax.train import metrics as metrics_lib
from albert_jax.train.config import PretrainConfig
from launch import command_line

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TASK = flags.DEFINE_enum(
  'task',
  'pretraining',
  ['pretraining', 'classification'],
  'What to time: the pretraining step (synthetic batches), or fine-tuning a classifier on --data.',
)
_MODEL = flags.DEFINE_string(
  'model', None, 'Classification: the pretrained model, a Hugging Face directory.'
)
_DATA = flags.DEFINE_string('data', None, 'Classification: training TSV (text, label).')
_EVAL_DATA = flags.DEFINE_string(
  'eval_data', None, 'Classification: dev TSV for the whole-command runs (accuracy).'
)
_SEEDS = flags.DEFINE_list(
  'seeds', ['0'], 'Classification: a whole-command run of each side per seed; empty: none.'
)

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
  if _TASK.value == 'classification':
    result = _time_finetuning(FinetuneConfig.from_config(config))
    print(json.dumps(result) if _JSON.value else _finetuning_table(result))
    return
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


def _time_finetuning(config: FinetuneConfig) -> dict:
  """The classification benchmark (module docstring): the JSON record."""
  if not (_MODEL.value and _DATA.value):
    raise UsageError('--task=classification needs --model=HF_DIR and --data=TRAIN.tsv')
  if not os.path.isfile(os.path.join(_MODEL.value, 'config.json')):
    raise UsageError(
      f'--model={_MODEL.value} is not a Hugging Face directory (no config.json): '
      'export one with launch.export --format=hf'
    )
  for name, value in (('--steps', _STEPS.value), ('--rounds', _ROUNDS.value)):
    if value < 1:
      raise UsageError(f'{name} must be >= 1, got {value}')
  load_before = os.getloadavg()
  config = dataclasses.replace(
    config, data=dataclasses.replace(config.data, train=_DATA.value, eval='')
  )
  pretrained = model_path.load(_MODEL.value).pretrained
  fixed = dataclasses.replace(
    config, data=dataclasses.replace(config.data, bucket_multiple=0, group_batches=1)
  )
  ours = finetune_trainer.prepare(config, pretrained)
  jax_runner = benchmark.FinetuneRunner(ours)
  fixed_runner = benchmark.FinetuneRunner(finetune_trainer.prepare(fixed, pretrained))
  start = time.perf_counter()
  shapes = jax_runner.compile_shapes()
  compile_s = time.perf_counter() - start
  fixed_runner.compile_shapes()
  runners = {'jax': jax_runner.run, 'fixed': fixed_runner.run}
  train, threads = ours.config.train, len(os.sched_getaffinity(0))
  recipe = _recipe(ours.config)
  peer = None
  if _PEER.value == 'hf':
    from albert_jax import hf_peer  # pylint: disable=g-import-not-at-top

    peer = hf_peer.PeerProcess(
      None,
      None,
      classifier=dict(
        model=_MODEL.value,
        train=_DATA.value,
        recipe=dataclasses.asdict(recipe),
        num_threads=threads,
      ),
    )
    runners['peer'] = peer.run
  try:
    for run in runners.values():
      if _WARMUP.value:
        run(_WARMUP.value)
    times = benchmark.interleaved_rounds(runners, rounds=_ROUNDS.value, steps=_STEPS.value)
  finally:
    if peer is not None:
      peer.close()
  examples_per_sec = {
    name: train.batch_size / statistics.median(rounds.wall) for name, rounds in times.items()
  }
  result = {
    'task': 'classification',
    'data': _DATA.value,
    'model': _MODEL.value,
    'train_rows': int(ours.batches.per_epoch * train.batch_size),
    'batch_size': train.batch_size,
    'max_seq_length': config.data.max_seq_length,
    'bucket_multiple': config.data.bucket_multiple,
    'group_batches': config.data.group_batches,
    'compiled_shapes': shapes,
    'compile_s': compile_s,
    'mean_padded_length': ours.batches.mean_length,
    'grad_accum_steps': ours.run.train.grad_accum_steps,
    'fixed_grad_accum_steps': fixed_runner.prepared.run.train.grad_accum_steps,
    'steps': _STEPS.value,
    'rounds': _ROUNDS.value,
    'threads': threads,
    'step_times_s': {name: rounds.wall for name, rounds in times.items()},
    'cpu_s_per_step': {name: statistics.median(r.cpu) for name, r in times.items()},
    'loop_examples_per_sec': examples_per_sec,
    'loop_ratio_vs_fixed': examples_per_sec['jax'] / examples_per_sec['fixed'],
  }
  if peer is not None:
    result.update(peer.info)
    result['loop_ratio_vs_peer'] = examples_per_sec['jax'] / examples_per_sec['peer']
  seeds = [int(s) for s in _SEEDS.value]
  if seeds:
    result['whole_command'] = [
      _whole_commands(seed, recipe, peer_first=i % 2 == 1) for i, seed in enumerate(seeds)
    ]
    for side in ('jax', 'peer') if peer is not None else ('jax',):
      rates = [run[side]['examples_per_sec'] for run in result['whole_command']]
      result[f'whole_examples_per_sec_{side}'] = statistics.median(rates)
    if peer is not None:
      result['whole_ratio_vs_peer'] = (
        result['whole_examples_per_sec_jax'] / result['whole_examples_per_sec_peer']
      )
  result['load_average_before'] = list(load_before)
  result['load_average_after'] = list(os.getloadavg())
  return result


def _recipe(config: FinetuneConfig):
  """The peer's settings: the fine-tuning run's."""
  from albert_jax import hf_peer  # pylint: disable=g-import-not-at-top

  train = config.train
  return hf_peer.Recipe(
    batch_size=train.batch_size,
    num_epochs=_epochs(config),
    learning_rate=train.learning_rate,
    warmup_fraction=train.warmup_steps / train.num_steps,
    weight_decay=train.weight_decay,
    b1=train.b1,
    b2=train.b2,
    eps=train.eps,
    clip_norm=train.clip_norm,
    max_seq_length=config.data.max_seq_length,
    seed=train.seed,
  )


def _epochs(config: FinetuneConfig) -> float:
  """The run's passes over the data (its steps are fitted from them)."""
  return FinetuneConfig.from_config(flags.FLAGS.config).train.num_epochs or (
    config.train.num_steps * config.train.batch_size / _rows(_DATA.value)
  )


def _rows(path: str) -> int:
  with open(path, encoding='utf-8') as f:
    return sum(1 for line in f if line.strip()) - 1


def _whole_commands(seed: int, recipe, *, peer_first: bool) -> dict:
  """Each side's whole fine-tuning command at `seed`, timed as a process:
  {'jax': {...}, 'peer': {...}} with wall_s, examples, examples_per_sec and
  accuracy (None without --eval_data)."""
  sides = ['peer', 'jax'] if peer_first else ['jax', 'peer']
  if _PEER.value != 'hf':
    sides = ['jax']
  return {'seed': seed, **{side: _WHOLE[side](seed, recipe) for side in sides}}


def _ours_whole(seed: int, recipe) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    args = [
      sys.executable,
      '-m',
      'launch.finetune',
      f'--model={_MODEL.value}',
      '--task=classification',
      f'--workdir={workdir}/run',
      f'--config.data.train={_DATA.value}',
      f'--config.data.eval={_EVAL_DATA.value or ""}',
      *command_line.config_overrides(sys.argv),
      f'--config.train.seed={seed}',
      f'--config.data.seed={seed}',
    ]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
      raise UsageError(f'launch.finetune failed: {done.stderr.strip().splitlines()[-1]}')
    records = [json.loads(line) for line in open(f'{workdir}/run/metrics.jsonl', encoding='utf-8')]
  steps = max(r['step'] for r in records)
  evals = [r for r in records if 'eval_accuracy' in r]
  examples = steps * recipe.batch_size
  return {
    'wall_s': wall,
    'examples': examples,
    'examples_per_sec': examples / wall,
    'accuracy': evals[-1]['eval_accuracy'] if evals else None,
    'metric': {k: v for k, v in evals[-1].items() if k.startswith('eval_')} if evals else {},
  }


def _peer_whole(seed: int, recipe) -> dict:
  spec = dict(
    model=_MODEL.value,
    train=_DATA.value,
    evaluation=_EVAL_DATA.value or '',
    recipe={**dataclasses.asdict(recipe), 'seed': seed},
    num_threads=len(os.sched_getaffinity(0)),
  )
  start = time.perf_counter()
  done = subprocess.run(
    [sys.executable, '-m', 'albert_jax.hf_peer', 'finetune', json.dumps(spec)],
    cwd=_ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  wall = time.perf_counter() - start
  if done.returncode:
    raise UsageError(f'the transformers peer failed: {done.stderr.strip().splitlines()[-1]}')
  reply = json.loads(done.stdout.strip().splitlines()[-1])
  return {
    'wall_s': wall,
    'loop_s': reply['loop_s'],
    'examples': reply['examples'],
    'examples_per_sec': reply['examples'] / wall,
    'accuracy': reply['accuracy'],
  }


_WHOLE = {'jax': _ours_whole, 'peer': _peer_whole}


_SIDES = (
  ('jax', 'albert-jax, bucketed'),
  ('fixed', 'albert-jax, fixed padding'),
  ('peer', 'transformers loop'),
)


def _finetuning_table(result: dict) -> str:
  """The record as a few lines of text (a markdown table of examples/s)."""
  rate = result['loop_examples_per_sec']
  lines = [
    f'classification fine-tuning on {result["data"]} ({result["train_rows"]:,} rows a pass), '
    f'batch {result["batch_size"]}, max_seq_length {result["max_seq_length"]}, '
    f'{result["threads"]} threads; compiled shapes: seq '
    f'{", ".join(map(str, result["compiled_shapes"]))} '
    f'({result["compile_s"]:.1f} s), mean padded length {result["mean_padded_length"]:.1f}',
    '',
    '| | examples/s in the loop | whole command examples/s | dev accuracy per seed |',
    '|---|---|---|---|',
  ]
  whole = result.get('whole_command', [])
  for side, name in _SIDES:
    if side not in rate:
      continue
    runs = [w[side] for w in whole if side in w]
    whole_rate = f'{result[f"whole_examples_per_sec_{side}"]:.0f}' if runs else ''
    accuracy = ', '.join(f'{r["accuracy"]:.3f}' for r in runs if r['accuracy'] is not None)
    lines.append(f'| {name} | {rate[side]:.0f} | {whole_rate} | {accuracy} |')
  lines.append('')
  lines.append(f'ours / fixed padding in the loop: {result["loop_ratio_vs_fixed"]:.2f}x')
  if 'loop_ratio_vs_peer' in result:
    lines.append(f'ours / transformers in the loop: {result["loop_ratio_vs_peer"]:.2f}x')
  if 'whole_ratio_vs_peer' in result:
    lines.append(f'ours / transformers, whole command: {result["whole_ratio_vs_peer"]:.2f}x')
  lines.append(
    f'load average before {", ".join(f"{x:.2f}" for x in result["load_average_before"])}, '
    f'after {", ".join(f"{x:.2f}" for x in result["load_average_after"])}'
  )
  return '\n'.join(lines)


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


def _default_config(argv) -> str:
  """The pretraining base preset, or for --task=classification the
  classification fine-tuning preset."""
  if command_line.flag_value(argv, 'task', 'pretraining') == 'classification':
    return os.path.join(_ROOT, 'experiments', 'configs', 'finetune.py') + ':classification'
  return 'experiments/configs/pretrain.py:base'


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      _default_config,
      keys_file='experiments/configs/pretrain.py or experiments/configs/finetune.py',
      lock_config=False,
      resolve=_apply_flags,
    ),
  )
