"""Fault injection: the workdir survives what operators and clusters do to it.

Real trainer processes on real files: two trainers on one workdir, a rerun
with another model or changed training settings, corrupt checkpoints, a full
disk and read-only paths (tmpfs, root only), a truncated Hugging Face model,
bad learning rates, divergence, SIGTERM, and kill -9 at random points during
saves; torn and corrupt records, a vocabulary changed at its path, non-finite
weights, corrupt prepared data, outputs under a file or on a full or
read-only disk, Ctrl-C once and twice, prepare_data stopped or killed with
its workers, values refused as the flags are parsed. Each case checks the
exit status, the one line that explains it, that no traceback is printed,
and that nothing complete was lost or changed (docs/workdir.md lists them).

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
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import safetensors.numpy

from albert_jax import model_path, pretraining
from albert_jax import pretrained as pretrained_lib
from albert_jax.data import prepared as prepared_lib
from albert_jax.data import vocabulary
from albert_jax.errors import DataError
from albert_jax.finetune import classification
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


# ---------------------------------------------------------------- 13. torn and corrupt records


def test_torn_last_lines_are_cut_off_and_the_run_resumes(vocab, reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  before = train_testing.snapshot(workdir)
  # What a crash or a full disk mid-write leaves: a line without its end.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 11, "loss": 5.4')
  with open(os.path.join(workdir, 'resumes.jsonl'), 'w') as f:
    f.write('{"step": 10, "time": "2026-')
  result = _trainer(workdir, vocab, **{'train.num_steps': NUM_STEPS + 1}).finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  ft.search(r'metrics\.jsonl: dropped a torn last line', result)
  assert _resumed_step(result) == NUM_STEPS
  ft.assert_kept(before, workdir)
  steps = [r['step'] for r in ft.training_records(workdir)]
  assert steps == list(range(1, NUM_STEPS + 2))
  with open(os.path.join(workdir, 'resumes.jsonl')) as f:
    resumes = [json.loads(line) for line in f]
  assert [r['step'] for r in resumes] == [NUM_STEPS]


@pytest.mark.parametrize(
  'name, damage',
  [
    ('config.json', lambda text: text[: len(text) // 2]),
    ('inputs.json', lambda text: 'not json\n'),
    (
      'resumes.jsonl',
      lambda text: '{"step": 3, "changed": {}}\ngarbage\n{"step": 4, "changed": {}}\n',
    ),
  ],
)
def test_a_corrupt_record_is_named_in_one_line_and_left_as_it_is(
  name, damage, vocab, reference, tmp_path
):
  workdir = _copy(reference, tmp_path)
  path = os.path.join(workdir, name)
  text = open(path).read() if os.path.exists(path) else ''
  with open(path, 'w') as f:
    f.write(damage(text))
  before = train_testing.snapshot(workdir)
  result = _trainer(workdir, vocab).finish()
  ft.assert_refused(result, rf'^error: \S*{re.escape(name)} is corrupt (\(.*\)|at line 2 .*): \S')
  assert train_testing.snapshot(workdir) == before


def test_an_invalid_hugging_face_config_json_is_one_line(reference, tmp_path):
  hf_dir = str(tmp_path / 'hf')
  pretrained_lib.save_hf(model_path.restore_run(reference).pretrained, hf_dir)
  with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
    f.write('{"model_type": "albert", "hidden_size": 3')
  output = str(tmp_path / 'flax')
  result = ft.launch('launch.export', f'--model={hf_dir}', f'--output={output}')
  ft.assert_refused(result, r'^error: .*hf/config\.json is corrupt \(not JSON at line 1')
  assert not os.path.exists(output)


# ---------------------------------------------------------------- 14. changed inputs


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(reference, tmp_path):
  hf_dir = str(tmp_path / 'hf')
  pretrained_lib.save_hf(model_path.restore_run(reference).pretrained, hf_dir)
  weights = os.path.join(hf_dir, 'model.safetensors')
  tensors = safetensors.numpy.load_file(weights)
  name = sorted(tensors)[3]
  tensors[name] = tensors[name].copy()
  tensors[name].flat[1] = np.nan
  safetensors.numpy.save_file(tensors, weights)
  output = str(tmp_path / 'flax')
  result = ft.launch('launch.export', f'--model={hf_dir}', f'--output={output}')
  ft.assert_refused(
    result, rf'^error: .*model\.safetensors: tensor {re.escape(name)} is not finite'
  )
  assert not os.path.exists(output)


@pytest.fixture(scope='module')
def interrupted(vocab, tmp_path_factory):
  """A run on its own copy of the vocabulary, stopped by Ctrl-C after a step."""
  root = tmp_path_factory.mktemp('interrupted')
  own_vocab = shutil.copytree(vocab, str(root / 'vocab'))
  workdir = str(root / 'run')
  run = _trainer(workdir, own_vocab, **{'checkpoint.every_steps': 1000})
  run.wait_for(lambda line: line.startswith('step '))
  run.signal(signal.SIGSTOP)  # Then everything it printed so far is read.
  run.drain()
  printed = max(int(m[1]) for m in map(re.compile(r'^step (\d+)/').match, run.lines) if m)
  run.signal(signal.SIGINT)
  run.signal(signal.SIGCONT)
  return {'workdir': workdir, 'vocab': own_vocab, 'printed': printed, 'result': run.finish()}


def test_ctrl_c_saves_at_the_next_step_and_exits_130(interrupted, reference):
  result, workdir = interrupted['result'], interrupted['workdir']
  ft.assert_no_traceback(result)
  assert result.returncode == 130, result.describe()
  assert result.stderr_lines() == [
    'interrupted: saving a checkpoint after this step (Ctrl-C again to exit at once)'
  ], result.describe()
  step = int(
    ft.search(
      r'^interrupted at step (\d+): checkpoint saved; rerun the same command to resume$', result
    )[1]
  )
  assert interrupted['printed'] <= step <= interrupted['printed'] + 2
  assert ft.steps(workdir) == [step]
  losses = train_testing.train_losses(workdir)
  assert losses == {s: v for s, v in train_testing.train_losses(reference).items() if s <= step}


def test_a_vocabulary_changed_at_the_same_path_is_refused_then_the_run_resumes(interrupted):
  workdir, own_vocab = interrupted['workdir'], interrupted['vocab']
  before = train_testing.snapshot(workdir)
  model_file = os.path.join(own_vocab, 'spiece.model')
  original = open(model_file, 'rb').read()
  with open(model_file, 'ab') as f:
    f.write(b'\0')  # Another file at the same path.
  try:
    result = _trainer(workdir, own_vocab, **{'checkpoint.every_steps': 1000}).finish()
  finally:
    with open(model_file, 'wb') as f:
      f.write(original)
  ft.assert_refused(
    result,
    r'^error: .* holds a run of other inputs: data\.vocab \S+ changed since the run started '
    r'\(another file at the same path\); restore it or use a new --workdir$',
  )
  assert train_testing.snapshot(workdir) == before
  result = _trainer(workdir, own_vocab, **{'checkpoint.every_steps': 1000}).finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 0, result.describe()
  assert f'finished at step {NUM_STEPS}' in result.stdout
  ft.assert_kept(before, workdir)


def test_a_second_ctrl_c_exits_at_once(vocab, tmp_path):
  workdir = str(tmp_path / 'run')
  run = _trainer(workdir, vocab, **{'checkpoint.every_steps': 1000})
  run.wait_for(lambda line: line.startswith('step '))
  run.signal(signal.SIGSTOP)
  run.signal(signal.SIGINT)
  run.signal(signal.SIGCONT)
  run.wait_for_stderr('interrupted: saving a checkpoint')
  run.signal(signal.SIGINT)
  result = run.finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 130, result.describe()
  assert result.stderr_lines()[-1] == 'interrupted again: exiting now, without saving'
  assert 'finished at step' not in result.stdout


# ---------------------------------------------------------------- 15. prepared data


@pytest.fixture(scope='module')
def prepared_data(vocab, tmp_path_factory) -> str:
  """The built-in corpus prepared, 20 documents a shard."""
  directory = str(tmp_path_factory.mktemp('prepared') / 'data')
  prepared_lib.prepare('builtin', vocab, directory, num_workers=1, documents_per_shard=20)
  return directory


def _flip_bytes_in_a_shard(directory: str) -> str:
  """Bytes inside the second shard's records changed, its size kept."""
  name = prepared_lib.verify(directory, checksums=False)['shards'][1]
  with open(os.path.join(directory, name), 'r+b') as f:
    f.seek(300)  # Past the file header, inside the first chunk of records.
    f.write(b'\xff' * 64)
  return rf'shard {name} does not match its sha256'


def _truncate_a_shard(directory: str) -> str:
  name = prepared_lib.verify(directory, checksums=False)['shards'][2]
  path = os.path.join(directory, name)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return rf'shard {name} is \d+ bytes, \d+ expected \(truncated or changed\)'


def _truncate_the_index(directory: str) -> str:
  path = os.path.join(directory, prepared_lib.INDEX_FILE)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  return r'index\.npz is unreadable'


def _garble_the_metadata(directory: str) -> str:
  with open(os.path.join(directory, prepared_lib.METADATA_FILE), 'wb') as f:
    f.write(os.urandom(64))
  return r'metadata\.json is corrupt \(not JSON'


@pytest.mark.parametrize(
  'corrupt',
  [_flip_bytes_in_a_shard, _truncate_a_shard, _truncate_the_index, _garble_the_metadata],
)
def test_corrupt_prepared_data_is_refused_before_training_in_one_line(
  corrupt, vocab, prepared_data, tmp_path
):
  data = shutil.copytree(prepared_data, str(tmp_path / 'data'))
  pattern = corrupt(data)
  workdir = tmp_path / 'run'
  result = _trainer(
    workdir, vocab, **{'data.source': f'prepared:{data}', 'data.vocab': ''}
  ).finish()
  match = ft.assert_refused(result, rf'^error: .*{pattern}.*: prepare it again: (?P<command>.*)$')
  assert f'--vocab={data}/vocab' in match['command']
  assert not os.path.exists(workdir)
  if corrupt is not _truncate_the_index:  # --verify reads the shards and metadata only.
    ft.assert_refused(ft.launch('launch.prepare_data', f'--verify={data}'), pattern)


def test_prepare_data_verify_checks_every_shard(prepared_data):
  result = ft.launch('launch.prepare_data', f'--verify={prepared_data}')
  assert result.returncode == 0, result.describe()
  count = len(prepared_lib.verify(prepared_data)['shards'])
  assert result.stdout.strip() == f'{prepared_data}: all {count} shards match metadata.json'


def test_a_bad_record_met_mid_run_names_its_shard(vocab, prepared_data, tmp_path):
  """A shard changed after the checks at the start: the data pipeline stops
  with the shard's name (the trainer then stops as on any error, its
  checkpoints untouched)."""
  data = shutil.copytree(prepared_data, str(tmp_path / 'data'))
  tokenizer = vocabulary.load(vocab)
  corpus = prepared_lib.PreparedCorpus(data, tokenizer)
  pattern = _flip_bytes_in_a_shard(data)
  del pattern  # Checked at the start; here a record is met.
  with pytest.raises(
    DataError, match=r'shard documents-00000-00001\.array_record has a bad record'
  ):
    for document in range(corpus.num_documents):
      corpus.tokens(document)


# ---------------------------------------------------------------- 16. OS errors at the edges


@pytest.mark.parametrize(
  'module, flags',
  [
    ('launch.export', ['--model={reference}', '--output={file}/model']),
    ('launch.prepare_data', ['--vocab={vocab}', '--output={file}/data']),
    ('launch.train_tokenizer', ['--vocab_size=256', '--output={file}/vocab']),
  ],
)
def test_an_output_under_a_file_is_one_line(module, flags, vocab, reference, tmp_path):
  file = tmp_path / 'file'
  file.write_text('not a directory\n')
  values = {'reference': reference, 'vocab': vocab, 'file': file}
  result = ft.launch(module, *(flag.format(**values) for flag in flags))
  ft.assert_refused(
    result,
    rf'^error: {re.escape(str(file))}\S*: (not a directory|file exists: a file is in the way)',
  )
  assert sorted(os.listdir(tmp_path)) == ['file']


def test_full_and_read_only_disks_are_one_line_for_prepare_data_and_export(
  vocab, reference, tmp_path, can_mount
):
  disk = str(tmp_path / 'disk')
  with ft.tmpfs(disk, '256k'):  # The prepared corpus takes over 1 MB.
    result = ft.launch(
      'launch.prepare_data', f'--vocab={vocab}', f'--output={disk}/data', '--num_workers=1'
    )
    ft.assert_last_error(result, r'^error: no space left on device')
    assert not os.path.exists(f'{disk}/data')
    result = ft.launch('launch.export', f'--model={reference}', f'--output={disk}/model')
    ft.assert_refused(result, r'^error: no space left on device')
    assert not os.path.exists(f'{disk}/model')
  read_only = str(tmp_path / 'read_only')
  with ft.tmpfs(read_only, '1m'):
    ft.remount_read_only(read_only)
    result = ft.launch('launch.export', f'--model={reference}', f'--output={read_only}/model')
    ft.assert_refused(result, r'^error: \S*read_only\S*: read-only file system')


# ---------------------------------------------------------------- 17. stray workers


@pytest.fixture(scope='module')
def big_corpus(tmp_path_factory) -> str:
  """Two text files of over 64 MiB each: two parts, minutes of tokenizing."""
  directory = tmp_path_factory.mktemp('big_corpus')
  words = np.array('the quick brown fox jumps over a lazy dog while it rains'.split())
  rng = np.random.default_rng(0)
  for k in range(2):
    line = ' '.join(rng.choice(words, 20)) + '.\n'
    paragraph = (line * 40 + '\n').encode()
    with open(directory / f'part{k}.txt', 'wb') as f:
      f.write(paragraph * ((65 << 20) // len(paragraph) + 1))
  return f'text:{directory}/*.txt'


def _preparing(source: str, vocab: str, output: str) -> ft.Trainer:
  """prepare_data on two workers, once both are writing shards."""
  run = ft.Trainer(
    None,
    [f'--source={source}', f'--vocab={vocab}', f'--output={output}', '--num_workers=2'],
    module='launch.prepare_data',
  )
  deadline = time.monotonic() + 240
  partial = f'{output}.partial'
  while time.monotonic() < deadline and run.process.poll() is None:
    shards = (
      [n for n in os.listdir(partial) if n.endswith('.array_record')]
      if os.path.isdir(partial)
      else []
    )
    if len(shards) >= 2 and len(run.children()) >= 2:
      return run
    time.sleep(0.1)
  raise AssertionError(f'prepare_data did not start writing\n{run.finish().describe()}')


def _workers(run: ft.Trainer) -> list[int]:
  """The pool's worker processes (the spawn context's resource tracker aside)."""
  return [
    pid for pid in run.children() if 'resource_tracker' not in open(f'/proc/{pid}/cmdline').read()
  ]


def test_sigterm_stops_prepare_data_and_its_workers_with_one_line(big_corpus, vocab, tmp_path):
  output = str(tmp_path / 'data')
  run = _preparing(big_corpus, vocab, output)
  workers = _workers(run)
  run.signal(signal.SIGTERM)
  result = run.finish()
  ft.assert_no_traceback(result)
  assert result.returncode == 143, result.describe()
  lines = [line for line in result.stderr_lines() if ' parts/s]' not in line]  # Progress bars.
  assert len(lines) == 1 and re.fullmatch(
    rf'stopped by SIGTERM: the workers were stopped; 0 of 2 parts are done and kept in '
    rf'{re.escape(output)}\.partial; rerun the same command to resume',
    lines[0],
  ), result.describe()
  assert workers and not any(ft.alive(pid) for pid in workers)
  written = train_testing.snapshot(f'{output}.partial')
  time.sleep(1)  # Any worker left would write on.
  assert train_testing.snapshot(f'{output}.partial') == written


def test_workers_die_with_a_killed_prepare_data(big_corpus, vocab, tmp_path):
  run = _preparing(big_corpus, vocab, str(tmp_path / 'data'))
  workers = _workers(run)
  run.kill()
  run.finish()
  deadline = time.monotonic() + 30
  while any(ft.alive(pid) for pid in workers) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert workers and not any(ft.alive(pid) for pid in workers)


# ---------------------------------------------------------------- 18. values checked first


@pytest.mark.parametrize(
  'module, flag, pattern',
  [
    ('launch.evaluate', '--num_batches=-1', r'^error: flag --num_batches=-1: .*non-negative'),
    ('launch.evaluate', '--batch_size=0', r'^error: flag --batch_size=0: .*positive'),
    ('launch.predict', '--batch_size=0', r'^error: flag --batch_size=0: .*positive'),
    (
      'launch.pretrain',
      '--config=experiments/configs/missing.py:tiny',
      r'^error: --config=experiments/configs/missing\.py:tiny: no config file',
    ),
  ],
)
def test_impossible_values_are_refused_before_anything_runs(module, flag, pattern, tmp_path):
  workdir = [f'--workdir={tmp_path}/run'] if module == 'launch.pretrain' else []
  result = ft.launch(module, flag, *workdir)
  ft.assert_refused(result, pattern)
  assert os.listdir(tmp_path) == []


def test_a_one_megabyte_tsv_cell_is_read(tmp_path):
  path = str(tmp_path / 'train.tsv')
  cell = 'x' * (1 << 20)
  with open(path, 'w') as f:
    f.write(f'text\tlabel\n{cell}\t1\nshort\t0\n')
  examples = classification.read_examples(path)
  assert [len(e.text) for e in examples] == [len(cell), len('short')]


# ---------------------------------------------------------------- 19. memory pressure


def test_an_address_space_limit_is_refused_before_anything_runs(vocab, tmp_path):
  """Under `ulimit -v` near what XLA's CPU runtime uses, a tiny run logged
  grad_norm 1629 for 1.03 (same loss) and crashed later: refused first."""
  workdir = tmp_path / 'run'
  command = [sys.executable, '-m', 'launch.pretrain', f'--workdir={workdir}', *_flags(vocab)]
  process = subprocess.run(
    ['bash', '-c', 'ulimit -v 2100000 && exec "$@"', 'bash', *command],
    cwd=ft.REPO,
    env=ft.subprocess_env(),
    text=True,
    capture_output=True,
    timeout=300,
  )
  result = ft.Result(process.returncode, process.stdout, process.stderr)
  ft.assert_refused(
    result, r'^error: the address space is limited to 2050 MiB \(ulimit -v\): .*ulimit -v unlimited'
  )
  assert not os.path.exists(workdir)
