"""Training metrics: throughput and MFU, and one writer for console, TensorBoard and JSONL.

Every logged record goes to three places with the same values (process 0):
  console             in a terminal, a live progress bar (ETA, loss, tokens/s)
                      with evaluations as lines above it; otherwise (a pipe,
                      CI, a SLURM log) one line per record;
  DIR/tensorboard/    TensorBoard event files (tensorboardX, no TensorFlow),
                      tags grouped as train/..., eval/... and perf/..., the
                      run's config as text and its hyperparameters for the
                      HParams view;
  DIR/metrics.jsonl   one JSON object per record: {"step": s, key: value, ...},
                      append-only (albert_jax/records.py: a torn last line,
                      left by a crash, is cut off when the run resumes).
Evaluation records carry `eval_`-prefixed keys.
"""

import contextlib
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import jax
import tqdm

from albert_jax import records


@contextlib.contextmanager
def _hidden(module: str) -> Iterator[None]:
  """Inside the block `import module` fails, unless it was imported before."""
  if module in sys.modules:
    yield
    return
  sys.modules[module] = None
  try:
    yield
  finally:
    del sys.modules[module]


# tensorboardX imports torch whenever it is installed, only to accept torch
# tensors, which this writer never passes: 1.5 s of every trainer's start, and
# torch's thread pools in a JAX process.
with _hidden('torch'):
  import tensorboardX  # noqa: E402
  from tensorboardX import summary as summary_lib  # noqa: E402

# Peak dense bf16 FLOP/s of one JAX device, by a substring of `device_kind`;
# the first match wins. (TPU v2/v3 expose each core as a device.)
PEAK_FLOPS = (
  ('TPU v2', 22.5e12),
  ('TPU v3', 61.5e12),
  ('TPU v4', 275e12),
  ('TPU v5 lite', 197e12),
  ('TPU v5e', 197e12),
  ('TPU v5', 459e12),
  ('TPU v6 lite', 918e12),
  ('TPU v6e', 918e12),
  ('TPU7x', 2307e12),
  ('B200', 2250e12),
  ('H200', 989e12),
  ('H100', 989e12),
  ('A100', 312e12),
  ('L4', 121e12),
  ('V100', 125e12),
)


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
  """`override` if > 0, else the table entry for `device_kind`; None if unknown."""
  if override > 0:
    return override
  return next((peak for name, peak in PEAK_FLOPS if name in device_kind), None)


@dataclasses.dataclass(frozen=True)
class Peak:
  flops_per_sec: float | None
  derivation: str


def cpu_peak_fp32(cpuinfo: str, num_cores: int) -> Peak:
  """fp32 peak of `num_cores` cores from /proc/cpuinfo text:
  cores x clock x FMA pipes x fp32 lanes per pipe x 2 FLOPs per FMA.

  Two FMA pipes per core (every x86 core with FMA since Haswell / Zen). Lanes
  per pipe: 16 with AVX-512 on Intel, 8 with AVX2 (and with AVX-512 on AMD
  family 25, Zen 4, which runs 512-bit FMAs on 256-bit pipes), 4 with SSE.
  The clock is the nominal 'cpu MHz' (turbo not counted).
  """
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get('flags', '').split())
  vendor, family = fields.get('vendor_id', ''), fields.get('cpu family', '')
  zen4 = vendor == 'AuthenticAMD' and family == '25'
  if 'avx512f' in flags and not zen4:
    lanes, why = 16, 'AVX-512'
  elif 'avx512f' in flags:
    lanes, why = 8, 'AVX-512 on 256-bit pipes (AMD Zen 4)'
  elif {'avx2', 'fma'} <= flags:
    lanes, why = 8, 'AVX2 + FMA'
  else:
    lanes, why = 4, 'SSE'
  if 'cpu MHz' not in fields:
    return Peak(None, 'no "cpu MHz" in /proc/cpuinfo')
  hz = float(fields['cpu MHz']) * 1e6
  peak = num_cores * hz * 2 * lanes * 2
  return Peak(
    peak,
    f'{num_cores} cores x {hz / 1e9:.3f} GHz x 2 FMA pipes x '
    f'{lanes} fp32 lanes ({why}) x 2 FLOPs = '
    f'{peak / 1e9:.1f} GFLOP/s',
  )


def peak_flops(devices: list[jax.Device], override: float = 0.0) -> Peak:
  """Peak FLOP/s of `devices` together: `override` per device if > 0, the
  bf16 table of train.metrics for accelerators, fp32 from cpuinfo on CPU."""
  kind = devices[0].device_kind
  per_device = peak_flops_per_device(kind, override)
  if per_device:
    source = 'override' if override > 0 else f'{kind}, dense bf16'
    return Peak(
      per_device * len(devices), f'{len(devices)} x {per_device / 1e12:g} TFLOP/s ({source})'
    )
  if devices[0].platform == 'cpu' and os.path.exists('/proc/cpuinfo'):
    # Every process's CPU devices share its cores: the peak is per host.
    with open('/proc/cpuinfo') as f:
      host = cpu_peak_fp32(f.read(), len(os.sched_getaffinity(0)))
    hosts = len({d.process_index for d in devices})
    if host.flops_per_sec is None or hosts == 1:
      return host
    return Peak(host.flops_per_sec * hosts, f'{hosts} hosts x ({host.derivation})')
  return Peak(None, f'unknown device kind {kind!r}: set --config.train.peak_flops_per_device')


class Throughput:
  """Step time, tokens/s, MFU and ETA over the steps since the last `restart`.

  Restart after anything that is not training (compilation, evaluation,
  checkpointing) so that it does not count as step time.
  """

  def __init__(
    self, *, flops_per_step: float, tokens_per_step: int, peak_flops: float | None, total_steps: int
  ):
    self._flops_per_step = flops_per_step
    self._tokens_per_step = tokens_per_step
    self._peak_flops = peak_flops  # Of all devices together.
    self._total_steps = total_steps
    self._start_step, self._start_time = 0, time.perf_counter()

  def restart(self, step: int) -> None:
    self._start_step, self._start_time = step, time.perf_counter()

  def measure(self, step: int) -> dict[str, float | None]:
    """Throughput since the restart, up to `step` (whose results are ready)."""
    steps = step - self._start_step
    if steps <= 0:  # Nothing timed yet (the first step compiles).
      return dict.fromkeys(('step_time', 'tokens_per_sec', 'mfu', 'eta_seconds'))
    step_time = (time.perf_counter() - self._start_time) / steps
    flops_per_sec = self._flops_per_step / step_time
    return {
      'step_time': step_time,
      'tokens_per_sec': self._tokens_per_step / step_time,
      'mfu': flops_per_sec / self._peak_flops if self._peak_flops else None,
      'eta_seconds': (self._total_steps - step) * step_time,
    }


# Console: short label and format of the keys that have one.
_CONSOLE = {
  'loss': ('loss', '{:.4f}'),
  'mlm_accuracy': ('mlm_acc', '{:.3f}'),
  'sop_accuracy': ('sop_acc', '{:.3f}'),
  'nsp_accuracy': ('nsp_acc', '{:.3f}'),
  'learning_rate': ('lr', '{:.2e}'),
  'grad_norm': ('grad_norm', '{:.3f}'),
  'step_time': ('s/step', '{:.3f}'),
  'tokens_per_sec': ('tok/s', '{:,.0f}'),
  'mfu': ('mfu', '{:.2%}'),
}
_CONSOLE_SKIP = ('mlm_loss', 'sop_loss', 'nsp_loss', 'window_steps', 'param_norm')


def format_line(
  step: int, metrics: Mapping[str, float | None], total_steps: int | None = None
) -> str:
  """'step 10/300 | loss 7.1234 | mlm_acc 0.051 | ... | eta 0:00:34'."""
  parts = [f'step {step}' + (f'/{total_steps}' if total_steps else '')]
  known = [k for k in _CONSOLE if k in metrics]
  for key in known + [k for k in metrics if k not in _CONSOLE]:
    value = metrics[key]
    if key in _CONSOLE_SKIP:
      continue
    if key == 'eta_seconds' and value is not None:
      parts.append(f'eta {datetime.timedelta(seconds=round(value))}')
    elif value is None:
      parts.append(f'{_CONSOLE.get(key, (key.removesuffix("_seconds"),))[0]} n/a')
    elif key in _CONSOLE:
      label, fmt = _CONSOLE[key]
      parts.append(f'{label} {fmt.format(value)}')
    else:
      parts.append(f'{key} {value:.4g}')
  return ' | '.join(parts)


# TensorBoard groups tags by the part before '/': throughput and timing
# under perf/, evaluations under eval/, the rest (loss, accuracies, learning
# rate, norms) under train/.
_PERF_KEYS = ('step_time', 'tokens_per_sec', 'mfu', 'eta_seconds', 'window_steps')


def tensorboard_tag(key: str) -> str:
  """The TensorBoard tag of a record key: 'loss' -> 'train/loss',
  'eval_mlm_loss' -> 'eval/mlm_loss', 'mfu' -> 'perf/mfu'."""
  if key.startswith('eval_'):
    return 'eval/' + key.removeprefix('eval_')
  return ('perf/' if key in _PERF_KEYS else 'train/') + key


def interactive(stream: TextIO) -> bool:
  """Whether `stream` is a terminal someone watches (a live bar) rather than
  a file or pipe (CI, SLURM logs), where a bar's carriage returns would be
  noise and plain lines are what log readers and tests parse."""
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # No isatty, or already closed.
    return False


# The bar on the console now, if any: other console lines go above it.
_bar: tqdm.tqdm | None = None


def console(message: str) -> None:
  """Prints `message` as a line: above the progress bar while one shows (a
  plain print would break it in two), else as print does."""
  if _bar is not None:
    _bar.write(message, file=_bar.fp)
    _bar.fp.flush()
  else:
    print(message, flush=True)


class MetricsWriter:
  """Writes metric records to console, TensorBoard and `workdir/metrics.jsonl`.

  Only process 0 writes; on the others every method does nothing. A run
  resumed at `resume_step` appends to the existing files, first dropping the
  records of later steps (written after the checkpoint it resumes from, and
  about to be written again): from metrics.jsonl, and from TensorBoard's view
  through its purge step. The console is `stream` (default sys.stdout): a
  terminal gets a progress bar of `total_steps`, anything else a line per
  record.
  """

  def __init__(
    self,
    workdir: str,
    *,
    total_steps: int | None = None,
    resume_step: int = 0,
    stream: TextIO | None = None,
  ):
    global _bar
    self._active = jax.process_index() == 0
    self._total_steps = total_steps
    self._resume_step = resume_step
    self._stream = stream if stream is not None else sys.stdout
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    self._bar: tqdm.tqdm | None = None
    self._last_train: tuple[int, Mapping[str, float | None]] | None = None
    if self._active:
      _drop_records_after(self.jsonl_path, resume_step)
      self._jsonl = open(self.jsonl_path, 'a')
      self._tensorboard = tensorboardX.SummaryWriter(
        self.tensorboard_dir, purge_step=resume_step + 1 if resume_step else None
      )
      if total_steps and interactive(self._stream):
        self._bar = _bar = tqdm.tqdm(
          total=total_steps,
          initial=resume_step,
          file=self._stream,
          desc='train',
          unit='step',
          dynamic_ncols=True,
        )

  def describe_run(self, config: Mapping[str, Any], num_params: int) -> None:
    """Writes the resolved `config` (nested dicts, as config.json) to
    TensorBoard as text, and with `num_params` as the run's hyperparameters."""
    if not self._active:
      return
    text = json.dumps(config, indent=2, sort_keys=True)
    # Indented four spaces: a Markdown code block in TensorBoard's text view.
    block = '\n'.join('    ' + line for line in text.splitlines())
    text_summary = summary_lib.text('config', f'{num_params:,} parameters\n\n{block}')
    text_summary.value[0].tag = 'config'  # Not add_text's 'config/text_summary'.
    # At the step this session starts from: a resumed run's changed settings
    # show next to the first.
    self._tensorboard.file_writer.add_summary(text_summary, self._resume_step)
    hparams = {'num_params': num_params, **_hparam_values(config)}
    # Only the session's start: TensorBoard's HParams view then takes every
    # scalar tag of the run as a metric, and compares runs of a logdir. (The
    # experiment summary add_hparams writes would fix one metric list, and
    # add_hparams puts it in a sub-run directory besides.)
    _, session_start, _ = summary_lib.hparams(hparams, {})
    self._tensorboard.file_writer.add_summary(session_start)
    self._tensorboard.flush()

  def advance(self, step: int) -> None:
    """Moves the progress bar, if any, to `step` (call once per step)."""
    if self._bar is not None and step > self._bar.n:
      self._bar.update(step - self._bar.n)

  def write(self, step: int, metrics: Mapping[str, float | None]) -> None:
    """Writes one record; None values (unknown MFU) are skipped in TensorBoard."""
    if not self._active:
      return
    self._to_console(step, metrics)
    for key, value in metrics.items():
      if value is not None and math.isfinite(value):
        self._tensorboard.add_scalar(tensorboard_tag(key), value, step)
    self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self._jsonl.flush()

  def _to_console(self, step: int, metrics: Mapping[str, float | None]) -> None:
    line = format_line(step, metrics, self._total_steps)
    if self._bar is None:
      print(line, flush=True)
    elif any(key.startswith('eval_') for key in metrics):
      console(line)  # Evaluations stay on screen, above the bar.
    else:
      self.advance(step)
      self._bar.set_postfix_str(_bar_postfix(metrics), refresh=True)
      self._last_train = (step, metrics)

  def close(self) -> None:
    global _bar
    if not self._active:
      return
    if self._bar is not None:
      self._bar.close()
      self._bar = _bar = None
      if self._last_train is not None:  # The whole of the last record stays.
        print(format_line(*self._last_train, self._total_steps), file=self._stream, flush=True)
    self._tensorboard.close()
    self._jsonl.close()


def _bar_postfix(metrics: Mapping[str, float | None]) -> str:
  """'loss 7.1234, tok/s 12,345': what the bar shows besides its count and ETA."""
  parts = []
  for key in ('loss', 'tokens_per_sec'):
    if metrics.get(key) is not None:
      label, fmt = _CONSOLE[key]
      parts.append(f'{label} {fmt.format(metrics[key])}')
  return ', '.join(parts)


def _hparam_values(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """`config` flattened to 'section.key' -> a number, bool or string, the
  types the HParams view shows (lists and None as their JSON)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(_hparam_values(value, f'{prefix}{key}.'))
    elif isinstance(value, bool | int | float | str):
      flat[f'{prefix}{key}'] = value
    else:
      flat[f'{prefix}{key}'] = json.dumps(value)
  return flat


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites the metrics file `path` without the records after `step`, and
  without a torn last line (a crash or a full disk mid-write)."""
  if records.repair_jsonl(path):
    console(f'{path}: dropped a torn last line (written when the previous run stopped)')
  kept = records.read_jsonl(path)
  keep = [record for record in kept if record['step'] <= step]
  if len(keep) < len(kept):
    records.write_jsonl(path, keep)
