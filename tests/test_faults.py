"""Fault injection: the workdir survives what operators and clusters do to it.

Real trainer processes on real files: two trainers on one workdir, a rerun
with another model or changed training settings, corrupt checkpoints, a full
disk and read-only paths (tmpfs, root only), a truncated Hugging Face model,
bad learning rates, divergence, SIGTERM, and kill -9 at random points during
saves. Each case checks the exit status, the one line that explains it, that
no traceback is printed, and that no complete checkpoint or metrics record
was lost or changed.

One uninterrupted run (`reference`, in process) gives the losses every
resumed run must end on, and a workdir to copy.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import time

import jax
import numpy as np
import pytest

from albert_jax import model_path, pretraining
from albert_jax import pretrained as pretrained_lib
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train.config import PretrainConfig

import faults_testing as ft
import train_testing

NUM_STEPS = 10
# The reference run's settings (a checkpoint every step); what a case changes
# on top is named there. Only train.* values other than log_every and
# eval_every, and model / data shapes, need another compilation.
SETTINGS = {
  'train.num_steps': NUM_STEPS,
  'checkpoint.every_steps': 1,
  'checkpoint.keep': 100,
}

LOCKED = (
  r'^error: (?P<path>.*) is in use by another run: host (?P<host>\S+), pid (?P<pid>\d+), '
  r'since .+; wait for it to end or stop it first$'
)
TAKEN_OVER = (
  r'previous run \(host (?P<host>\S+), pid (?P<pid>\d+)\) ended without releasing '
  r'the workdir; taking it over'
)
OTHER_MODEL = (
  r'^error: .* holds a run of another model \((?P<changes>.*->.*)\); '
  r'rerun with its settings or use a new --workdir$'
)
UNREADABLE = (
  r'checkpoint (?P<step>\d+) .* is unreadable \(.*\); moved it to '
  r'(?P<to>\S*unusable_checkpoints/(?P<aside>\d+))'
)
RESUMED = r'^resum.*\bat step (?P<step>\d+)'
# The first step whose loss, or the parameters after it, is not finite.
DIVERGED = (
  r'^error: training diverged at step (?P<step>\d+) \(loss \S+, parameter norm \S+\): '
  r'.*; (the last good checkpoint is step (?P<good>\d+)|no checkpoint was written)$'
)


def _flags(vocab: str, **overrides) -> list[str]:
  return train_testing.tiny_flags(vocab, **{**SETTINGS, **overrides})


def _trainer(workdir, vocab: str, **overrides) -> ft.Trainer:
  return ft.Trainer(str(workdir), _flags(vocab, **overrides))


@pytest.fixture(scope='module')
def reference(vocab, tmp_path_factory) -> str:
  """The workdir of NUM_STEPS uninterrupted steps, a checkpoint at each."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  config = PretrainConfig.from_config(train_testing.tiny_config(vocab, **SETTINGS))
  # Cached for the trainer processes to come, as they cache (ft.subprocess_env).
  minimum = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    pretraining.train(config, workdir)
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', minimum)
  assert ft.steps(workdir) == list(range(1, NUM_STEPS + 1))
  return workdir


@pytest.fixture(scope='module')
def can_mount() -> None:
  reason = ft.mount_error()
  if reason:
    pytest.skip(reason)


def _copy(reference: str, tmp_path) -> str:
  return ft.copy_run(reference, str(tmp_path / 'run'))


def _assert_same_losses(workdir: str, reference: str) -> None:
  """Every step once, each with the reference run's loss, bitwise."""
  steps = [r['step'] for r in ft.training_records(workdir)]
  assert steps == sorted(set(steps)), f'duplicate or unordered steps: {steps}'
  assert train_testing.train_losses(workdir) == train_testing.train_losses(reference)


def _resumed_step(result: ft.Result) -> int:
  return int(ft.search(RESUMED, result)['step'])


def _step(line: str) -> int | None:
  """The step of a training record's console line ('step 3/10 | loss ...')."""
  match = re.match(r'step (\d+)/\d+ \| loss ', line)
  return int(match[1]) if match else None


# ---------------------------------------------------------------- 1. one writer


def test_second_trainer_is_refused_while_the_first_runs_on(vocab, reference, tmp_path):
  workdir = tmp_path / 'run'
  settings = {'checkpoint.every_steps': 1000}  # Saves take time; none is needed.
  first = _trainer(workdir, vocab, **settings)
  first.wait_for(lambda line: line.startswith('mesh '))  # It holds the workdir.
  first.signal(signal.SIGSTOP)  # Still holding it, whatever the second's speed.
  try:
    second = _trainer(workdir, vocab, **settings).finish()
  finally:
    first.signal(signal.SIGCONT)
  match = ft.assert_refused(second, LOCKED)
  assert (match['host'], int(match['pid'])) == (socket.gethostname(), first.pid)
  assert os.path.samefile(match['path'], workdir)

  result = first.finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  assert f'finished at step {NUM_STEPS}' in result.stdout
  _assert_same_losses(str(workdir), reference)


@pytest.fixture(scope='module')
def killed_and_resumed(vocab, tmp_path_factory):
  """A run killed (-9) after its first periodic checkpoint, and its rerun."""
  workdir = str(tmp_path_factory.mktemp('killed') / 'run')
  settings = {'checkpoint.every_steps': 2, 'train.log_every': 4}
  run = _trainer(workdir, vocab, **settings)
  deadline = time.monotonic() + 240
  while not ft.steps(workdir) and run.process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.01)
  run.kill()
  killed = run.finish()
  assert killed.returncode == -signal.SIGKILL, (
    f'the trainer was to be killed after its first checkpoint\n{killed.describe()}'
  )
  complete = ft.steps(workdir)
  assert complete and complete[-1] < NUM_STEPS, complete
  before = train_testing.snapshot(workdir)
  resumed = _trainer(workdir, vocab, **settings).finish()
  return {
    'workdir': workdir,
    'killed_pid': run.pid,
    'complete': complete,
    'before': before,
    'resumed': resumed,
  }


def test_lock_of_a_killed_trainer_is_taken_over(killed_and_resumed):
  resumed = killed_and_resumed['resumed']
  ft.assert_no_traceback(resumed)
  assert resumed.returncode == 0, resumed.describe()
  match = ft.search(TAKEN_OVER, resumed)
  assert (match['host'], int(match['pid'])) == (
    socket.gethostname(),
    killed_and_resumed['killed_pid'],
  )


# ---------------------------------------------------------------- 2-3. config drift


@pytest.mark.parametrize(
  'key, value',
  [
    ('model.hidden_act', 'relu'),
    ('data.sentence_objective', 'nsp'),
    ('data.sentence_objective', 'none'),
  ],
)
def test_rerun_with_another_model_of_the_same_shapes_is_refused_untouched(
  key, value, vocab, reference, tmp_path
):
  workdir = _copy(reference, tmp_path)
  before = train_testing.snapshot(workdir)
  result = _trainer(workdir, vocab, **{key: value}).finish()
  match = ft.assert_refused(result, OTHER_MODEL)
  with open(os.path.join(workdir, 'config.json')) as f:
    section, name = key.split('.')
    saved = json.load(f)[section][name]
  assert f'{key} {saved} -> {value}' in match['changes']
  assert train_testing.snapshot(workdir) == before


def test_rerun_with_changed_training_settings_resumes_and_records_them(vocab, reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  before = train_testing.snapshot(workdir)
  changes = {
    'train.num_steps': NUM_STEPS + 2,
    'train.learning_rate': 2e-2,
    'train.warmup_steps': 2,
    'train.batch_size': 8,
  }
  result = _trainer(workdir, vocab, **changes).finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  line = ft.search(r'^resuming at step (\d+) with changed settings: (.*)$', result)
  assert int(line[1]) == NUM_STEPS
  saved = {k: SETTINGS.get(k, train_testing.TINY.get(k)) for k in changes}
  for key, value in changes.items():
    assert f'{key} {saved[key]} -> {value}' in line[2]
  ft.assert_kept(before, workdir)  # config.json keeps the run's origin.
  assert ft.steps(workdir) == list(range(1, NUM_STEPS + 3))

  # Another restart, changing what needs no new compilation: nothing to do.
  result = _trainer(workdir, vocab, **changes, **{'train.log_every': 2}).finish()
  assert result.returncode == 0, result.describe()
  ft.search(r'^resuming at step (\d+) with changed settings: train\.log_every 1 -> 2$', result)
  ft.assert_kept(before, workdir)
  with open(os.path.join(workdir, 'resumes.jsonl')) as f:
    resumes = [json.loads(line) for line in f]
  assert [r['step'] for r in resumes] == [NUM_STEPS, NUM_STEPS + 2]
  assert all(isinstance(r['time'], str) and r['time'] for r in resumes)
  assert resumes[0]['changed'] == {k: [saved[k], v] for k, v in changes.items()}
  assert resumes[1]['changed'] == {'train.log_every': [1, 2]}  # Since the last start.
  steps = [r['step'] for r in ft.training_records(workdir)]
  assert steps == list(range(1, NUM_STEPS + 3))


# ---------------------------------------------------------------- 4. corrupt checkpoints


@pytest.mark.parametrize('kind', list(ft.CORRUPTIONS))
def test_unreadable_latest_checkpoint_is_moved_aside_and_the_run_resumes(
  kind, vocab, reference, tmp_path
):
  workdir = _copy(reference, tmp_path)
  ft.CORRUPTIONS[kind](os.path.join(workdir, ft.CHECKPOINTS, str(NUM_STEPS)))
  before = train_testing.snapshot(workdir)
  result = _trainer(workdir, vocab).finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  match = ft.search(UNREADABLE, result)
  assert int(match['step']) == int(match['aside']) == NUM_STEPS
  after = train_testing.snapshot(workdir)
  assert ft.checkpoint_files(after, NUM_STEPS, ft.UNUSABLE) == ft.checkpoint_files(
    before, NUM_STEPS
  ), 'the unreadable checkpoint was changed, not moved'
  assert _resumed_step(result) == NUM_STEPS - 1
  ft.assert_kept(before, workdir, upto=NUM_STEPS - 1)
  assert ft.steps(workdir) == list(range(1, NUM_STEPS + 1))
  _assert_same_losses(workdir, reference)


def test_no_usable_checkpoint_is_one_line_and_none_is_deleted(vocab, reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  # Three checkpoints left, each corrupt in its own way.
  bad = list(range(NUM_STEPS - len(ft.CORRUPTIONS) + 1, NUM_STEPS + 1))
  for step in ft.steps(workdir):
    if step not in bad:
      shutil.rmtree(os.path.join(workdir, ft.CHECKPOINTS, str(step)))
  for step, corrupt in zip(bad, ft.CORRUPTIONS.values()):
    corrupt(os.path.join(workdir, ft.CHECKPOINTS, str(step)))
  before = train_testing.snapshot(workdir)
  result = _trainer(workdir, vocab).finish()
  ft.assert_refused(result, r'^error: no usable checkpoint in .*')
  after = train_testing.snapshot(workdir)
  assert ft.steps(workdir) == []
  assert ft.steps(workdir, ft.UNUSABLE) == bad
  for step in bad:
    assert ft.checkpoint_files(after, step, ft.UNUSABLE) == ft.checkpoint_files(before, step)
  for name in ('config.json', 'metrics.jsonl'):
    assert after[name] == before[name], name


# ---------------------------------------------------------------- 5-6. disk and paths


def test_full_disk_stops_at_the_save_that_failed(vocab, reference, tmp_path, can_mount):
  disk = str(tmp_path / 'disk')
  # A checkpoint takes about 2 MB of tmpfs: the first fits, the third does not.
  with ft.tmpfs(disk, '5m'):
    workdir = os.path.join(disk, 'run')
    result = _trainer(workdir, vocab).finish()
    ft.assert_last_error(result, r'^error: no space left on device: .*')
    complete = ft.steps(workdir)
    assert complete and complete[-1] < NUM_STEPS, complete
    assert ft.stray_temp_files(workdir) == []
    before = train_testing.snapshot(workdir)
    copy = ft.copy_run(workdir, str(tmp_path / 'copy'))
  # The last complete checkpoint resumes, on a disk with room.
  result = _trainer(copy, vocab).finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  assert _resumed_step(result) == complete[-1]
  ft.assert_kept(before, copy, upto=complete[-1])
  _assert_same_losses(copy, reference)


@pytest.mark.parametrize(
  'path, pattern',
  [
    ('file', r'^error: workdir .*file is a file'),
    ('file/run', r'^error: cannot create workdir .*file/run'),
  ],
)
def test_workdir_on_a_file_is_refused(path, pattern, vocab, tmp_path):
  with open(tmp_path / 'file', 'w') as f:
    f.write('not a workdir\n')
  before = train_testing.snapshot(str(tmp_path))
  result = _trainer(tmp_path / path, vocab).finish()
  ft.assert_refused(result, pattern)
  assert train_testing.snapshot(str(tmp_path)) == before
  assert sorted(os.listdir(tmp_path)) == ['file']


@pytest.mark.parametrize(
  'path, pattern',
  [
    ('', r'^error: cannot write to workdir .*read_only'),
    ('run', r'^error: cannot create workdir .*read_only/run'),
  ],
)
def test_read_only_workdir_is_refused(path, pattern, vocab, tmp_path, can_mount):
  disk = str(tmp_path / 'read_only')
  with ft.tmpfs(disk, '1m'):
    ft.remount_read_only(disk)
    result = _trainer(os.path.join(disk, path), vocab).finish()
    assert os.listdir(disk) == []
  ft.assert_refused(result, pattern)


# ---------------------------------------------------------------- 7-8. inputs


def test_truncated_safetensors_is_one_line(reference, tmp_path):
  hf_dir = str(tmp_path / 'hf')
  pretrained_lib.save_hf(model_path.restore_run(reference).pretrained, hf_dir)
  weights = os.path.join(hf_dir, 'model.safetensors')
  with open(weights, 'r+b') as f:
    f.truncate(os.path.getsize(weights) // 2)
  output = str(tmp_path / 'flax')
  result = ft.launch('launch.export', f'--from_hf={hf_dir}', f'--output={output}')
  ft.assert_refused(result, r'^error: .*model\.safetensors')
  assert not os.path.exists(output)


@pytest.mark.parametrize('learning_rate', ['nan', 'inf', '-1'])
def test_learning_rate_that_is_not_finite_and_positive_is_refused_first(
  learning_rate, vocab, tmp_path
):
  workdir = tmp_path / 'run'
  # No vocabulary given: a run that got as far would train one in the workdir.
  result = _trainer(
    workdir, vocab, **{'train.learning_rate': learning_rate, 'data.vocab': ''}
  ).finish()
  ft.assert_refused(result, r'^error: train\.learning_rate must be a finite number > 0')
  assert not os.path.exists(workdir)


# ---------------------------------------------------------------- 9-10. divergence, SIGTERM


def test_divergence_names_its_step_and_leaves_only_finite_checkpoints(vocab, tmp_path):
  workdir = str(tmp_path / 'run')
  # Logged only past the end: the divergence is noticed at its own step.
  result = _trainer(
    workdir, vocab, **{'train.learning_rate': 1e30, 'train.log_every': 1000}
  ).finish()
  match = ft.assert_refused(result, DIVERGED)
  diverged = int(match['step'])
  complete = ft.steps(workdir)
  if match['good'] is None:
    assert complete == []
  else:
    assert complete and int(match['good']) == complete[-1]
    assert complete[-1] < diverged
  directory = os.path.join(workdir, ft.CHECKPOINTS)
  for step in complete:
    params = checkpoint_lib.restore_params(directory, step)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params)), step
  assert ft.stray_temp_files(workdir) == []


def test_sigterm_stops_after_the_step_in_flight_with_a_checkpoint(vocab, reference, tmp_path):
  workdir = str(tmp_path / 'run')
  run = _trainer(workdir, vocab, **{'checkpoint.every_steps': 1000})
  run.wait_for(lambda line: line.startswith('step '))
  run.signal(signal.SIGSTOP)  # Then everything it printed so far is read.
  run.drain()
  printed = max(int(m[1]) for m in map(re.compile(r'^step (\d+)/').match, run.lines) if m)
  run.signal(signal.SIGTERM)
  run.signal(signal.SIGCONT)
  result = run.finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  step = int(
    ft.search(
      r'preempted at step (\d+): checkpoint saved; rerun the same command to resume', result
    )[1]
  )
  assert printed <= step <= printed + 2, (printed, step)
  assert 'finished at step' not in result.stdout
  assert ft.steps(workdir) == [step]
  losses = train_testing.train_losses(workdir)
  assert losses == {s: v for s, v in train_testing.train_losses(reference).items() if s <= step}


# ---------------------------------------------------------------- 11-12. kill -9


def test_resume_after_kill_writes_each_step_once_and_says_how_many_it_averages(
  killed_and_resumed,
):
  workdir, resumed = killed_and_resumed['workdir'], killed_and_resumed['resumed']
  assert resumed.returncode == 0, resumed.describe()
  start = _resumed_step(resumed)
  assert start == killed_and_resumed['complete'][-1]
  ft.assert_kept(killed_and_resumed['before'], workdir, upto=start)
  records = ft.training_records(workdir)
  steps = [r['step'] for r in records]
  assert steps == sorted(set(steps)) and steps[-1] == NUM_STEPS, steps
  previous = 0
  for record in records:  # A resumed run's first window starts at its checkpoint.
    since = start if previous < start < record['step'] else previous
    assert record.get('window_steps') == record['step'] - since, (record, since)
    previous = record['step']
  first_after = next(r for r in records if r['step'] > start)
  assert first_after['window_steps'] == first_after['step'] - start
  assert ft.stray_temp_files(workdir) == []


KILLS = 5
KILL_AFTER = 2.0  # At most, in seconds, after the line of the step chosen.


def test_kill_9_during_saves_then_resume_is_bitwise_the_straight_run(vocab, reference, tmp_path):
  """Each run is killed a random time after its first or second step (a
  checkpoint of that step or the one before is being saved then), at the
  last step's line at the latest, so that each of the five kills lands."""
  workdir = str(tmp_path / 'run')
  seed = random.randrange(2**32)
  rng = random.Random(seed)
  killed_pid = None
  for attempt in range(KILLS + 1):  # The last one runs to the end.
    before, latest = train_testing.snapshot(workdir), (ft.steps(workdir) or [0])[-1]
    run = _trainer(workdir, vocab)
    when = 'to the end'
    if attempt < KILLS:
      target = min(latest + rng.randint(1, 2), NUM_STEPS)
      line = run.wait_for(lambda line, target=target: _step(line) in (target, NUM_STEPS))
      delay = rng.uniform(0, KILL_AFTER) if _step(line) < NUM_STEPS else 0.0
      run.watch(lambda line: _step(line) == NUM_STEPS, delay)
      run.kill()
      when = f'killed {delay:.2f} s after step {target}'
    result = run.finish()
    stepped = [line.split('|')[0].strip() for line in run.lines if line.startswith('step ')]
    context = (
      f'run {attempt + 1} (seed {seed}, {when}): '
      f'{stepped[-1:]}, checkpoints {ft.steps(workdir)}, '
      f'partial {ft.stray_temp_files(workdir)}'
    )
    print(context)  # Where the kills landed.
    ft.assert_no_traceback(result)
    if killed_pid is not None:  # Its lock was left behind.
      match = re.search(TAKEN_OVER, result.stdout)
      assert match and int(match['pid']) == killed_pid, f'{context}\n{result.describe()}'
    expected = -signal.SIGKILL if attempt < KILLS else 0
    assert result.returncode == expected, f'{context}\n{result.describe()}'
    ft.assert_kept(before, workdir, upto=latest)
    killed_pid = run.pid
  _assert_same_losses(workdir, reference)
  got, expected = (
    checkpoint_lib.restore_params(os.path.join(w, ft.CHECKPOINTS), NUM_STEPS)
    for w in (workdir, reference)
  )
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)))
  assert ft.stray_temp_files(workdir) == []
