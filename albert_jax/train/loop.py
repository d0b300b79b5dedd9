"""The training loop that pretraining and fine-tuning share.

  Training   resume from the workdir's latest checkpoint (refusing one of
             another model), or start from the trainer's fresh state; then
             step, log, checkpoint and handle preemption until
             train.num_steps, handing the params back for each evaluation
Each trainer (albert_jax/pretraining.py, albert_jax/finetune/trainer.py)
assembles its `Run` (train/step.py), brings its own data and initial params,
and evaluates where `Training.steps` yields (see `Training`).
"""

import contextlib
import dataclasses
import errno
import math
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np

from albert_jax.errors import AlbertError, UsageError
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import distributed
from albert_jax.train import mesh as mesh_lib
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import workdir as workdir_lib
from albert_jax.train.config import CheckpointConfig, TrainConfig
from albert_jax.train.state import TrainState
from albert_jax.train.step import Run

PROFILE_SUBDIR = 'profile'  # train.profile_steps' trace, in the workdir.
_DIVERGED = 'lower --config.train.learning_rate or raise --config.train.warmup_steps'


class RunConfig(Protocol):
  """What the loop reads of a pretraining or fine-tuning config record (a
  dataclass, written whole to TensorBoard)."""

  train: TrainConfig
  checkpoint: CheckpointConfig


@dataclasses.dataclass(frozen=True)
class RunResult:
  """Where a run stopped, what it last logged and where its outputs are."""

  step: int
  first_step: int  # The step it started from (== step: nothing to do).
  preempted: bool
  train_metrics: dict[str, float | None]  # The last logged training record.
  eval_metrics: dict[str, float]  # The last evaluation, without 'eval_'.
  workdir: str
  checkpoint_dir: str
  metrics_path: str
  tensorboard_dir: str


class Training:
  """A run trained in its claimed workdir, as the trainers read it:

    with loop.Training(run, config, workdir, train_iter, preemption) as training:
      state = training.resumed or run.initial.materialize(initial_params)
      for params in training.steps(state):  # At each evaluation.
        training.record_eval(evaluate(params))
    return training.result

  Entering resumes from the newest readable checkpoint (moving `train_iter`
  there; unreadable ones are moved aside): `resumed` is its state, None on a
  first start, when the trainer makes the fresh state itself. `steps` trains
  up to config.train.num_steps: every train.log_every steps the mean metrics
  since, with throughput, go to metrics.jsonl, TensorBoard and the console (a
  line, or in a terminal the progress bar, moved every step); every
  train.eval_every steps and at the last it yields the params, for the
  trainer to evaluate and `record_eval` ('eval_' prefixed). A checkpoint is
  saved every checkpoint.every_steps, at the last step and on a preemption
  notice; never of a state whose loss or parameters are not finite.

  Raises UsageError for a checkpoint of other shapes, no readable
  checkpoint, a diverged run or a full disk.
  """

  def __init__(
    self,
    run: Run,
    config: RunConfig,
    workdir: workdir_lib.Workdir,
    train_iter: Iterator[Any],
    preemption: distributed.PreemptionWatcher,
  ):
    self._run, self._config, self._workdir = run, config, workdir
    self._train_iter, self._preemption = train_iter, preemption
    self._checkpoint_dir = os.path.join(workdir.path, checkpoint_lib.WORKDIR_SUBDIR)
    self._cleanup = contextlib.ExitStack()
    self._loop: _Loop | None = None
    self.resumed: TrainState | None = None
    self.result: RunResult | None = None

  def __enter__(self) -> 'Training':
    self._cleanup.enter_context(_full_disk_stops(self._checkpoint_dir))
    every, keep = self._config.checkpoint.every_steps, self._config.checkpoint.keep
    self._checkpointer = checkpoint_lib.Checkpointer(
      self._checkpoint_dir, every_steps=every, keep=keep
    )
    self._cleanup.callback(self._checkpointer.close)
    self._cleanup.callback(self._checkpointer.wait)  # Runs first: pending saves land.
    log(f'step: {self._run.step_settings}')
    self.resumed = _resume(self._run, self._checkpointer, self._train_iter)
    return self

  def __exit__(self, *error: Any) -> bool | None:
    return self._cleanup.__exit__(*error)

  def steps(self, state: TrainState) -> Iterator[Any]:
    """Trains from `state`; yields its params whenever an evaluation is due."""
    config = self._config
    self._workdir.record_start(config, int(state.step))
    writer = self._cleanup.enter_context(
      contextlib.closing(
        metrics_lib.MetricsWriter(
          self._workdir.path, total_steps=config.train.num_steps, resume_step=int(state.step)
        )
      )
    )
    writer.describe_run(dataclasses.asdict(config), self._run.num_params)
    profile_dir = os.path.join(self._workdir.path, PROFILE_SUBDIR)
    loop = _Loop(self._run, config.train, self._checkpointer, writer, self._preemption, profile_dir)
    self._loop = loop
    yield from loop.steps(state, self._train_iter)
    if not loop.evaluated and not loop.preempted:
      yield loop.params  # Resumed at the end: report anyway.
    self._checkpointer.wait()
    _log_end(loop, config.train.num_steps)
    self.result = RunResult(
      step=loop.step,
      first_step=loop.first_step,
      preempted=loop.preempted,
      train_metrics=loop.last,
      eval_metrics=loop.scores,
      workdir=self._workdir.path,
      checkpoint_dir=self._checkpoint_dir,
      metrics_path=writer.jsonl_path,
      tensorboard_dir=writer.tensorboard_dir,
    )

  def record_eval(self, scores: dict[str, float]) -> None:
    """The evaluation of the params `steps` last yielded."""
    self._loop.record_eval(scores)


@contextlib.contextmanager
def _full_disk_stops(checkpoint_dir: str) -> Iterator[None]:
  """A full disk, wherever the write was, as one line: what is left
  partial is removed, the complete checkpoints stay."""
  try:
    yield
  except Exception as e:
    full = _no_space(e)
    if full is None:
      raise
    checkpoint_lib.remove_partial(checkpoint_dir)
    raise UsageError(
      f'no space left on device: {full}; the last complete checkpoint is '
      f'{_last_checkpoint(checkpoint_dir)} (free some space and rerun to resume)'
    ) from None


def _log_end(loop: '_Loop', num_steps: int) -> None:
  """Says why the run stopped before its last step (preempted, or nothing to do)."""
  if loop.preempted:
    stopped = 'interrupted' if loop.preemption.interrupted else 'preempted'
    log(f'{stopped} at step {loop.step}: checkpoint saved; rerun the same command to resume')
  elif loop.step == loop.first_step:
    log(
      f'nothing to do: the checkpoint is at step {loop.step} of '
      f'{num_steps}; raise --config.train.num_steps to train on'
    )


def _resume(
  run: Run, checkpointer: checkpoint_lib.Checkpointer, train_iter: Iterator[Any]
) -> TrainState | None:
  """The newest readable checkpoint's state, None when there is none;
  unreadable checkpoints are moved aside, and when none is readable the run
  stops."""
  moved = []
  for step in reversed(checkpointer.all_steps()):
    try:
      checkpointer.check_compatible(step, run.initial.abstract)
      state = checkpointer.restore(step, run.initial.abstract, train_iter)
    except AlbertError:
      raise
    except Exception as e:  # Truncated or missing files, whatever orbax says.
      moved.append(checkpointer.move_aside(step))
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
      log(
        f'checkpoint {step} in {checkpointer.directory} is unreadable ({reason}); '
        f'moved it to {moved[-1]}'
      )
      continue
    log(f'resumed from {checkpointer.directory} at step {step}')
    return state
  if moved:
    raise UsageError(
      f'no usable checkpoint in {checkpointer.directory} (moved aside: {", ".join(moved)}); '
      'rerun in a new --workdir to start over'
    )
  return None


class _Loop:
  """The stepping part of `Training`: what it has logged so far, and where."""

  def __init__(
    self,
    run: Run,
    train_config: TrainConfig,
    checkpointer: checkpoint_lib.Checkpointer,
    writer: metrics_lib.MetricsWriter,
    preemption: distributed.PreemptionWatcher,
    profile_dir: str,
  ):
    self.run, self.config = run, train_config
    self.checkpointer, self.writer = checkpointer, writer
    self.preemption = preemption
    self.throughput = metrics_lib.Throughput(
      flops_per_step=train_config.batch_size * run.flops_per_example,
      tokens_per_step=train_config.batch_size * run.tokens_per_example,
      peak_flops=_peak_flops(run.mesh, train_config.peak_flops_per_device),
      total_steps=train_config.num_steps,
    )
    self.first_step = self.step = 0
    self.saved_step: int | None = None  # The newest checkpoint, all finite.
    self.profile_dir = profile_dir  # Where train.profile_steps' trace goes.
    self._tracing = False
    self.preempted = False
    self.last: dict[str, float | None] = {}
    self.scores: dict[str, float] = {}
    self.evaluated = False  # Whether record_eval was called.
    self.params: Any = None  # The params at the end.

  def steps(self, state: TrainState, train_iter: Iterator[Any]) -> Iterator[Any]:
    """Trains from `state` to the last step or a preemption, yielding the
    params when an evaluation is due."""
    config, run = self.config, self.run
    self.first_step = self.step = int(state.step)
    self.saved_step = self.first_step or None
    pending: list[dict[str, float]] = []  # Checked metrics not yet logged.
    unchecked: list[tuple[int, dict[str, jax.Array]]] = []  # At most one step.
    with mesh_lib.activate(run.mesh, run.rules):
      while self.step < config.num_steps and not self.preempted:
        self.checkpointer.check_for_errors()  # A failed save stops the run.
        self._profile(self.step + 1, state)
        state, metrics = run.step(state, next(train_iter))
        self.step += 1
        self.writer.advance(self.step)  # A terminal's bar moves every step.
        step, last_step = self.step, self.step == config.num_steps
        # The previous step's numbers, while this one runs: the host stays
        # one step ahead, and a divergence is named at its own step.
        pending += [self._checked(*item) for item in unchecked]
        unchecked = [(step, metrics)]
        if step == self.first_step + 1:  # Compiled; time from here.
          jax.block_until_ready(metrics)
          self.throughput.restart(step)
        if step % config.log_every == 0 or last_step:
          pending += [self._checked(*unchecked.pop())]
          self.last = {
            **_mean(pending),
            'window_steps': len(pending),
            **self.throughput.measure(step),
          }
          self.writer.write(step, self.last)
          pending = []
        if step % config.eval_every == 0 or last_step:
          yield state.params
          self.throughput.restart(step)
        self.preempted = self.preemption.should_stop(step)
        if self.checkpointer.should_save(step) or last_step or self.preempted:
          pending += [self._checked(*item) for item in unchecked]  # Never save a diverged state.
          unchecked = []
          self.checkpointer.save(step, state, train_iter)
          self.saved_step = step
          self.throughput.restart(step)
      self._profile(self.step + 1, state)
    self.params = state.params

  def record_eval(self, scores: dict[str, float]) -> None:
    self.scores, self.evaluated = scores, True
    self.writer.write(self.step, {f'eval_{k}': v for k, v in scores.items()})

  def _profile(self, step: int, state: TrainState) -> None:
    """Starts the trace before the first step of train.profile_steps, and
    stops it before the step after its last (or when the loop ends)."""
    profile = self.config.profile_range
    if profile is None:
      return
    if not self._tracing and step == profile[0]:
      jax.profiler.start_trace(self.profile_dir, create_perfetto_trace=True)
      self._tracing = True
    elif self._tracing and (step > profile[1] or step > self.config.num_steps or self.preempted):
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self._tracing = False
      where = shlex.quote(self.profile_dir)
      log(f'profile of steps {profile[0]}-{step - 1}: tensorboard --logdir {where}')

  def _checked(self, step: int, metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """`metrics` of `step` on the host; UsageError when its loss or the
    parameters after it are not finite."""
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    if math.isfinite(values['loss']) and math.isfinite(values['param_norm']):
      return values
    good = (
      'no checkpoint was written'
      if self.saved_step is None
      else f'the last good checkpoint is step {self.saved_step}'
    )
    raise UsageError(
      f'training diverged at step {step} (loss {values["loss"]:.4g}, parameter norm '
      f'{values["param_norm"]:.4g}): {_DIVERGED}; {good}'
    )


def log(message: str) -> None:
  """Prints `message` on process 0 (above the progress bar, while one shows)."""
  if jax.process_index() == 0:
    metrics_lib.console(message)


def _mean(records: list[Mapping[str, float]]) -> dict[str, float]:
  return {k: float(np.mean([r[k] for r in records])) for k in records[-1]}


def _no_space(error: BaseException) -> str | None:
  """The path of a 'no space left on device' anywhere in the chain of
  `error` (orbax reports tensorstore's as text), else None."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
      return seen.filename or str(seen)
    if 'No space left on device' in str(seen):
      paths = re.findall(r'"(/[^"]+)"', str(seen))
      return paths[-1] if paths else str(seen).strip().splitlines()[0]
    seen = seen.__cause__ or seen.__context__
  return None


def _last_checkpoint(directory: str) -> str:
  steps = checkpoint_lib.checkpoint_steps(directory)
  return f'step {steps[-1]}' if steps else 'none (no checkpoint was completed)'


def _peak_flops(mesh: jax.sharding.Mesh, override: float) -> float | None:
  """Peak FLOP/s of all devices of `mesh` (the benchmark's estimate), None
  when unknown."""
  return metrics_lib.peak_flops(list(mesh.devices.flat), override).flops_per_sec
