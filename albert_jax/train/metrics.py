"""Training metrics: throughput and MFU, and one writer for console, TensorBoard and JSONL.

Every logged record goes to three places with the same keys and values:
  console             one line per record (process 0);
  DIR/tensorboard/    TensorBoard event files (tensorboardX, no TensorFlow);
  DIR/metrics.jsonl   one JSON object per record: {"step": s, key: value, ...}.
Evaluation records carry `eval_`-prefixed keys.
"""

import dataclasses
import datetime
import json
import math
import os
import time
from collections.abc import Mapping

import jax
import tensorboardX

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


class MetricsWriter:
  """Writes metric records to console, TensorBoard and `workdir/metrics.jsonl`.

  Only process 0 writes; on the others every method does nothing. A run
  resumed at `resume_step` appends to the existing files, first dropping the
  records of later steps (written after the checkpoint it resumes from, and
  about to be written again): from metrics.jsonl, and from TensorBoard's view
  through its purge step.
  """

  def __init__(self, workdir: str, *, total_steps: int | None = None, resume_step: int = 0):
    self._active = jax.process_index() == 0
    self._total_steps = total_steps
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard_dir = os.path.join(workdir, 'tensorboard')
    if self._active:
      _drop_records_after(self.jsonl_path, resume_step)
      self._jsonl = open(self.jsonl_path, 'a')
      self._tensorboard = tensorboardX.SummaryWriter(
        self.tensorboard_dir, purge_step=resume_step + 1 if resume_step else None
      )

  def write(self, step: int, metrics: Mapping[str, float | None]) -> None:
    """Writes one record; None values (unknown MFU) are skipped in TensorBoard."""
    if not self._active:
      return
    print(format_line(step, metrics, self._total_steps), flush=True)
    for key, value in metrics.items():
      if value is not None and math.isfinite(value):
        self._tensorboard.add_scalar(key, value, step)
    self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self._active:
      self._tensorboard.close()
      self._jsonl.close()


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites the metrics file `path` without the records after `step`."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = [line for line in lines if line.strip() and json.loads(line)['step'] <= step]
  if len(keep) == len(lines):
    return
  partial = f'{path}.partial'
  with open(partial, 'w') as f:
    f.writelines(keep)
  os.replace(partial, path)
