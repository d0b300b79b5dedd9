"""Runs a plan on this machine, one run or several at a time.

Each run is a pretraining process (the caller says how to start one, e.g.
`python -m launch.pretrain` from the repository root) with the flags that
`--emit=shell` writes, then evaluated in this process. A run whose
sweep_result.json is at the final step is skipped; one whose final checkpoint
exists is only evaluated; any other is (re)started by its command, which
resumes from the run's latest checkpoint. A run that fails is reported and
the next one starts. With a downstream task (Plan.downstream), each trained
run is then fine-tuned (`launch.finetune`, the caller says how to start it)
in the same slot, and scored here (albert_jax.sweep.downstream); a run
scored before is not fine-tuned again, and a failed fine-tune is reported
without stopping the others. SIGTERM stops the sweep: it is passed on to the running
trainers, which checkpoint and exit, so that rerunning the sweep resumes.
"""

import collections
import concurrent.futures
import dataclasses
import os
import queue
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence

import ml_collections

from albert_jax.errors import DataError, ExportError, SweepError, UsageError
from albert_jax.sweep import downstream, results
from albert_jax.sweep.plan import Plan, Run

# The statuses of a run whose pretraining reached its final step.
TRAINED = ('finished before', 'trained', 'evaluated')


@dataclasses.dataclass(frozen=True)
class Outcome:
  run: str
  # 'finished before' | 'trained' | 'evaluated' | 'failed' | 'stopped'
  status: str
  message: str = ''
  # Its fine-tuning on the downstream task: '' (none asked, or the run not
  # trained) | 'fine-tuned before' | 'fine-tuned' | 'failed' | 'stopped'.
  downstream: str = ''
  downstream_message: str = ''

  def describe(self) -> str:
    """One line, e.g. 'trained; fine-tuned' or 'finished before;
    fine-tuning failed: exit status 1: ...'."""
    line = self.status + (f': {self.message}' if self.message else '')
    if self.downstream in ('failed', 'stopped'):
      line += f'; fine-tuning {self.downstream}'
    elif self.downstream:
      line += f'; {self.downstream}'
    return line + (f': {self.downstream_message}' if self.downstream_message else '')


def run_plan(
  plan: Plan,
  root: str,
  base_config: ml_collections.ConfigDict,
  *,
  pretrain: Sequence[str],
  cwd: str,
  eval_batches: int,
  parallel: int = 1,
  finetune: Sequence[str] = (),
  echo: Callable[[str], None] = print,
) -> list[Outcome]:
  """Runs every run of `plan` not finished yet in `root`/RUN.

  Args:
    plan: the runs to run (the caller saves the whole sweep's plan to
      `root`/sweep.json first: see `Plan.only`).
    root: absolute sweep directory.
    base_config: the preset with the base overrides applied (each run's
      config is it with the run's overrides).
    pretrain: the command starting a pretraining process, to which each
      run's flags are added (e.g. [sys.executable, '-m', 'launch.pretrain']).
    cwd: where it runs (the plan's config path is relative to it).
    eval_batches: batches per objective of the final evaluation, 0: the
      run's train.eval_steps.
    parallel: runs at a time, each training in its own process on its share
      of this process's CPU cores (`cores`): runs too small to fill an
      accelerator share it, and on a CPU, runs on a core each outpace one
      run on all (mini on 2 cores: 1.27x the steps per second). The
      evaluations run here, one at a time, as the runs finish.
    finetune: the command starting a fine-tuning process (e.g.
      [sys.executable, '-m', 'launch.finetune']), with a downstream task.
    echo: where the runs' console lines go.
  Returns: one outcome per run, in the plan's order.
  """
  if parallel < 1:
    raise SweepError(f'--parallel={parallel}: give a number of runs >= 1')
  stop = _StopOnSigterm(cwd)
  # A run holds its slot until it is evaluated and reported: with one slot,
  # runs go strictly one after another.
  slots = queue.SimpleQueue()
  for slot in range(parallel):
    slots.put(slot)
  available = sorted(os.sched_getaffinity(0))

  def train(run: Run) -> tuple[int, Outcome]:
    slot = slots.get()
    pinned = cores(slot, parallel, available) if parallel > 1 else None
    outcome = _train(plan, run, root, base_config, list(pretrain), echo, stop, pinned)
    if plan.downstream is not None and outcome.status in TRAINED:
      outcome = _finetune(plan, run, root, outcome, list(finetune), echo, stop, pinned)
    return slot, outcome

  outcomes = {}
  try:
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
      runs = {pool.submit(train, run): run for run in plan.runs}
      try:
        for training in concurrent.futures.as_completed(runs):
          run, (slot, outcome) = runs[training], training.result()
          outcomes[run.name] = _finish(run, root, outcome, eval_batches, echo)
          slots.put(slot)
      except BaseException:
        stop.requested = True  # The runs not started yet return at once.
        for slot in range(len(plan.runs)):
          slots.put(slot)
        raise
  finally:
    stop.close()
  return [outcomes[run.name] for run in plan.runs]


def _train(
  plan: Plan,
  run: Run,
  root: str,
  base_config: ml_collections.ConfigDict,
  pretrain: list[str],
  echo: Callable[[str], None],
  stop: '_StopOnSigterm',
  pinned: list[int] | None,
) -> Outcome:
  """Trains `run` to its final step unless done before, on the CPU cores
  `pinned` (None: all): status 'finished before', 'failed' or 'stopped', or
  'trained' / 'evaluated' (left to evaluate)."""
  if stop.requested:
    return Outcome(run.name, 'stopped', 'rerun the sweep to resume')
  workdir = os.path.join(root, run.name)
  config = base_config.copy_and_resolve_references()
  config.update_from_flattened_dict(dict(run.overrides))
  num_steps = config.train.num_steps
  result = results.read_result(workdir)
  if result is not None and result['step'] == num_steps:
    return Outcome(run.name, 'finished before')
  if results.final_step(workdir) == num_steps:
    return Outcome(run.name, 'evaluated')
  command = [*pretrain, *plan.arguments(run, root)]
  echo(f'$ {shlex.join(command)}' + (f'  # cores {",".join(map(str, pinned))}' if pinned else ''))
  returncode, last_line = stop.run(command, prefix=f'[{run.name}] ', echo=echo, cores=pinned)
  if stop.requested:
    return Outcome(run.name, 'stopped', 'rerun the sweep to resume')
  if returncode:
    return Outcome(run.name, 'failed', f'exit status {returncode}: {last_line}')
  step = results.final_step(workdir)
  if step != num_steps:
    return Outcome(
      run.name, 'failed', f'stopped at step {step} of {num_steps}: rerun the sweep to resume'
    )
  return Outcome(run.name, 'trained')


def _finish(
  run: Run, root: str, outcome: Outcome, eval_batches: int, echo: Callable[[str], None]
) -> Outcome:
  """`outcome` once the run is evaluated and its fine-tuning scored (here,
  one run at a time), said in one line."""
  if outcome.status in ('trained', 'evaluated'):
    outcome = _evaluate(run, root, outcome, eval_batches)
  outcome = _score(run, root, outcome)
  echo(f'[{run.name}] {outcome.describe()}')
  return outcome


def cores(slot: int, parallel: int, available: list[int]) -> list[int]:
  """The CPU cores of slot `slot` of `parallel`: an equal share of
  `available`, disjoint from the other slots' while there are enough."""
  if len(available) < parallel:
    return [available[slot % len(available)]]
  share = len(available) // parallel
  return available[slot * share : (slot + 1) * share]


def _evaluate(run: Run, root: str, outcome: Outcome, eval_batches: int) -> Outcome:
  try:
    results.evaluate_run(os.path.join(root, run.name), num_batches=eval_batches)
  except (ExportError, DataError, SweepError) as e:
    return dataclasses.replace(outcome, status='failed', message=f'evaluation: {e}')
  return outcome


def _finetune(
  plan: Plan,
  run: Run,
  root: str,
  outcome: Outcome,
  finetune: list[str],
  echo: Callable[[str], None],
  stop: '_StopOnSigterm',
  pinned: list[int] | None,
) -> Outcome:
  """Fine-tunes the trained `run` on the plan's downstream task unless
  scored before (on the CPU cores `pinned`; None: all): `outcome` with its
  downstream status. A rerun of a stopped or unscored fine-tuning resumes
  from its latest checkpoint."""
  if downstream.read_result(os.path.join(root, run.name)) is not None:
    return dataclasses.replace(outcome, downstream='fine-tuned before')
  if stop.requested:
    return dataclasses.replace(outcome, downstream='stopped')
  command = [*finetune, *plan.finetune_arguments(run, root)]
  echo(f'$ {shlex.join(command)}' + (f'  # cores {",".join(map(str, pinned))}' if pinned else ''))
  returncode, last_line = stop.run(
    command, prefix=f'[{run.name} fine-tuning] ', echo=echo, cores=pinned
  )
  if stop.requested:
    return dataclasses.replace(
      outcome, downstream='stopped', downstream_message='rerun the sweep to resume'
    )
  if returncode:
    return dataclasses.replace(
      outcome, downstream='failed', downstream_message=f'exit status {returncode}: {last_line}'
    )
  return dataclasses.replace(outcome, downstream='fine-tuned')


def _score(run: Run, root: str, outcome: Outcome) -> Outcome:
  """`outcome`, its fresh fine-tuning scored on the dev set (a failure to
  score is the fine-tuning's); any other as it is."""
  if outcome.downstream != 'fine-tuned':
    return outcome
  try:
    result = downstream.score(os.path.join(root, run.name))
  except (ExportError, DataError, SweepError, UsageError) as e:
    return dataclasses.replace(outcome, downstream='failed', downstream_message=f'scoring: {e}')
  return dataclasses.replace(
    outcome, downstream_message=f'dev accuracy {result["accuracy"]:.4f} ({result["examples"]})'
  )


def evaluate_unevaluated(plan: Plan, root: str, *, eval_batches: int) -> None:
  """Evaluates each finished run of `plan` (its checkpoint at the step its
  config.json ends at) that has no result of that step yet (runs launched by
  `--emit` commands), or no per-example outcomes with example ids (evaluated
  before they were kept: results.read_outcomes)."""
  for run in plan.runs:
    workdir = os.path.join(root, run.name)
    step, result = results.final_step(workdir), results.read_result(workdir)
    config = results.run_config(workdir)
    if (
      step is not None
      and config is not None
      and step == config.train.num_steps
      and (result is None or result['step'] != step or results.read_outcomes(workdir) is None)
    ):
      try:
        results.evaluate_run(workdir, num_batches=eval_batches)
      except (ExportError, DataError) as e:
        raise SweepError(f'{run.name}: {e}') from None


def finetune_unfinetuned(
  plan: Plan,
  root: str,
  *,
  finetune: Sequence[str],
  cwd: str,
  echo: Callable[[str], None] = print,
) -> list[Outcome]:
  """Fine-tunes and scores, one after another, each evaluated run of `plan`
  that has its final checkpoint but no downstream result (runs launched by
  `--emit` commands, or trained before `--downstream` was given); returns
  their outcomes, failed ones included. Nothing without a downstream task,
  or for runs whose checkpoints are gone (a committed sweep)."""
  if plan.downstream is None:
    return []
  stop, outcomes = _StopOnSigterm(cwd), []
  try:
    for run in plan.runs:
      workdir = os.path.join(root, run.name)
      if (
        results.read_result(workdir) is None
        or results.final_step(workdir) is None
        or downstream.read_result(workdir) is not None
      ):
        continue
      outcome = _finetune(
        plan, run, root, Outcome(run.name, 'finished before'), list(finetune), echo, stop, None
      )
      outcomes.append(_finish(run, root, outcome, 0, echo))
  finally:
    stop.close()
  return outcomes


class _StopOnSigterm:
  """Runs subprocesses in `cwd`, from any thread; on SIGTERM passes it to the
  running ones and records that the sweep must stop."""

  def __init__(self, cwd: str):
    self.requested = False
    self._cwd = cwd
    self._processes: set[subprocess.Popen] = set()
    self._lock = threading.Lock()
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    with self._lock:
      self.requested = True
      for process in self._processes:
        process.terminate()

  def run(
    self,
    command: list[str],
    *,
    prefix: str,
    echo: Callable[[str], None],
    cores: list[int] | None = None,
  ) -> tuple[int, str]:
    """Runs `command` (on the CPU cores `cores`; None: all), echoing its
    output; returns the exit status and the last line of output."""
    tail = collections.deque(maxlen=1)
    with self._lock:
      if self.requested:
        return -signal.SIGTERM, 'not started: the sweep is stopping'
      process = subprocess.Popen(
        command, cwd=self._cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
      )
      if cores:
        # Before the child has started a thread (an interpreter is still
        # loading): every thread it starts, XLA's pool sized to them, inherits.
        os.sched_setaffinity(process.pid, cores)
      self._processes.add(process)
    try:
      for line in process.stdout:
        line = line.rstrip()
        if line:
          echo(prefix + line)
          tail.append(line)
      returncode = process.wait()
    finally:
      with self._lock:
        self._processes.discard(process)
    return returncode, tail[0] if tail else ''

  def close(self) -> None:
    signal.signal(signal.SIGTERM, self._previous)
