"""launch.sweep: the three ablation sweeps end to end on a tiny model, a
killed sweep resumed, a failing run, --emit, --report, bad input."""

import csv
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from albert_jax import flops, pretraining
from albert_jax.config import ModelConfig
from albert_jax.errors import SweepError
from albert_jax.finetune import classification
from albert_jax.param_count import count_params
from albert_jax.sweep import downstream, emit, report, results, runner, stats, variants
from albert_jax.sweep import plan as plan_lib
from experiments.results import reissue

import export_testing
import train_testing

REPO = export_testing.REPO
SWEEPS = ('embedding_size', 'sharing', 'sentence_objective')
# The variants the fixture trains (--only): every sharing mode with a
# projection (E < H) and both sharing modes at a small E and at E = H, a pair
# of each comparison kind among them, and all of Table 5. Training all of
# them would double the fixture's time, not its reach: test_model covers
# every sharing mode and embedding size.
TRAINED = {
  'embedding_size': ('none-E8', 'none-E16', 'all-E16', 'all-E64'),
  'sharing': ('E32-all', 'E32-attention', 'E32-ffn', 'E32-none'),
  'sentence_objective': ('none', 'nsp', 'sop'),
}
PARALLEL_SWEEP = 'embedding_size'  # Run by the fixture two runs at a time.
REPORT_FILES = (
  'results.csv',
  'results.md',
  'mlm_accuracy.png',
  'params.png',
  'sentence_accuracy.png',
)


def _spec(name: str) -> str:
  return f'experiments/ablations/{name}.py:tiny'


def _sweep(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'launch.sweep', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
    env=_env(),
  )


def _env() -> dict[str, str]:
  # Compiling dominates a run of a few steps: one device rather than
  # conftest's eight, and XLA's cheap CPU code generation.
  return train_testing.subprocess_env(
    XLA_FLAGS=(
      '--xla_force_host_platform_device_count=1 '
      '--xla_backend_optimization_level=0 '
      '--xla_llvm_disable_expensive_passes=true'
    )
  )


@pytest.fixture(scope='module')
def vocab(tmp_path_factory):
  return train_testing.train_vocab(str(tmp_path_factory.mktemp('vocab')))


def _flags(vocab: str, name: str, **overrides) -> list[str]:
  """The tests' tiny model as base overrides of sweep `name`, less the keys
  the sweep sets."""
  swept = {key for variant in _sweep_of(name).variants for key in variant.overrides}
  return [
    f
    for f in train_testing.tiny_flags(vocab, **overrides)
    if f.split('=')[0].removeprefix('--config.') not in swept
  ]


def _sweep_of(name: str) -> variants.Sweep:
  return variants.load_sweep(os.path.join(REPO, _spec(name)))


@pytest.fixture(scope='module')
def swept(tmp_path_factory, vocab):
  """{sweep: (workdir, stdout)}: each sweep's TRAINED variants run for 2
  steps, evaluated on the trainer's one batch (the default);
  sentence_objective evaluates during training too (for the curves);
  PARALLEL_SWEEP trains two runs at a time."""
  root = tmp_path_factory.mktemp('sweeps')
  processes = {}
  for name in SWEEPS:  # At once: compiling is single-threaded.
    eval_every = 1 if name == 'sentence_objective' else 1000
    processes[name] = subprocess.Popen(
      [
        sys.executable,
        '-m',
        'launch.sweep',
        f'--sweep={_spec(name)}',
        f'--workdir={root / name}',
        f'--parallel={2 if name == PARALLEL_SWEEP else 1}',
        f'--only={",".join(TRAINED[name])}',
        *_flags(vocab, name, **{'train.num_steps': 2, 'train.eval_every': eval_every}),
      ],
      cwd=REPO,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
  out = {}
  for name, process in processes.items():
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    out[name] = str(root / name), stdout
  return out


def _rows(workdir: str) -> list[dict[str, str]]:
  with open(os.path.join(workdir, 'results.csv')) as f:
    return list(csv.DictReader(f))


@pytest.mark.parametrize('name', SWEEPS)
def test_the_variants_run_are_trained_evaluated_and_reported(swept, vocab, name):
  workdir, stdout = swept[name]
  sweep = _sweep_of(name)
  trained = [v for v in sweep.variants if v.name in TRAINED[name]]
  rows = _rows(workdir)
  assert [row['run'] for row in rows] == [v.name for v in trained]
  for row, variant in zip(rows, trained):
    config = train_testing.tiny_config(vocab, **variant.overrides)
    # The params column: the backbone counts of albert_jax.param_count.
    expected = count_params(ModelConfig.from_config(config.model))['backbone']
    assert int(row['params']) == expected, row
    assert row['objective'] == config.data.sentence_objective
    assert int(row['steps']) == 2 and int(row['eval_examples']) == 16
    for key in ('nsp_accuracy', 'sop_accuracy', 'mlm_accuracy'):
      assert 0 <= float(row[key]) <= 1
    assert float(row['mlm_loss']) > 0 and float(row['step_time']) > 0
    assert float(row['tokens_per_sec']) > 0
    assert f'[{variant.name}] trained' in stdout
    # The per-example outcomes add up to the table's accuracies.
    run_dir = os.path.join(workdir, row['run'])
    outcomes = results.read_outcomes(run_dir)
    assert outcomes['sop_mlm_weight'].shape == (16,)
    mlm = outcomes['sop_mlm_correct'].sum() / outcomes['sop_mlm_weight'].sum()
    assert mlm == pytest.approx(float(row['mlm_accuracy']), rel=1e-5)
    for objective in ('sop', 'nsp'):
      accuracy = outcomes[f'{objective}_sentence_correct'].mean()
      assert accuracy == pytest.approx(float(row[f'{objective}_accuracy']))
    if name == 'sentence_objective':
      # The sentence head's curve: the trained objective's, none for 'none'.
      curve = results.sentence_curve(run_dir, results.read_result(run_dir))
      objective = row['objective']
      assert [step for step, _ in curve] == ([] if objective == 'none' else [1, 2])
      if curve:
        assert curve[-1][1] == pytest.approx(float(row[f'{objective}_accuracy']))
      if objective == 'sop':
        # The trainer's last evaluation measured the same examples: the
        # curve's points before the last are the same measurement.
        evaluations = [r for r in train_testing.read_metrics(run_dir) if 'eval_mlm_accuracy' in r]
        assert [r['step'] for r in evaluations] == [1, 2]
        assert evaluations[-1]['eval_mlm_accuracy'] == pytest.approx(
          float(row['mlm_accuracy']), rel=1e-5
        )
  assert len({row['params'] for row in rows}) == (1 if name == 'sentence_objective' else len(rows))
  with open(os.path.join(workdir, 'results.md')) as f:
    table, comparisons = f.read().split('\n#### ')
  table = table.splitlines()
  body = [line for line in table if line.startswith('| ')][1:]
  assert [line.split(' | ')[1] for line in body] == [v.label for v in trained]
  groups = [line.split(' | ')[0].removeprefix('| ') for line in body]
  assert [g for g in groups if g] == list(dict.fromkeys(v.group for v in trained))
  untrained = [v.name for v in sweep.variants if v not in trained]
  # The variants --only left out are marked so, not as unfinished.
  assert (f'Not run (no --only chose them): {", ".join(untrained)}.' in table) == bool(untrained)
  assert not any(line.startswith('Not finished') for line in table)
  # One seed: each of the paper's findings between trained variants gets its
  # difference, no verdict; with no downstream task, none on it.
  verdicts = [line for line in comparisons.splitlines() if ' − ' in line]
  measured = [c for c in sweep.comparisons if c.metric != 'downstream']
  assert len(verdicts) == len(measured) < len(sweep.comparisons)
  for line, comparison in zip(verdicts, measured):
    if {comparison.ahead, comparison.behind} <= set(TRAINED[name]):
      assert line.endswith('| 1 × 16 | inconclusive (1 seed; 3 needed) |'), line
    else:
      assert ' | not run: no --only chose ' in line, line
  assert sum('| 1 × 16 |' in line for line in verdicts) >= 1
  for png in REPORT_FILES[2:]:
    with open(os.path.join(workdir, png), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # Run by run: the second starts once the first is reported. (Two at a time
  # may start in either order, or one after the other on a loaded machine:
  # what holds then is that each has its own share of the cores, below.)
  lines = stdout.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('$ ')]
  first_reported = lines.index(f'[{trained[0].name}] trained')
  if name != PARALLEL_SWEEP:
    assert starts[1] > first_reported
  if name == PARALLEL_SWEEP and len(os.sched_getaffinity(0)) >= 2:
    # Each of the two at a time on its own share of the cores.
    first, second = (set(lines[i].rsplit('# cores ', 1)[1].split(',')) for i in starts[:2])
    assert first and second and not first & second


def test_parallel_runs_take_equal_disjoint_shares_of_the_cores():
  assert [runner.cores(slot, 2, [0, 1, 2, 3]) for slot in range(2)] == [[0, 1], [2, 3]]
  assert [runner.cores(slot, 3, [4, 5, 6, 7]) for slot in range(3)] == [[4], [5], [6]]
  assert [runner.cores(slot, 3, [0, 1]) for slot in range(3)] == [[0], [1], [0]]


def test_emit_shell_writes_the_commands_the_sweep_ran(swept, vocab):
  workdir, stdout = swept['sentence_objective']
  ran = [line[2:] for line in stdout.splitlines() if line.startswith('$ ')]
  result = _sweep(
    f'--sweep={_spec("sentence_objective")}',
    f'--workdir={workdir}',
    '--emit=shell',
    '--eval_batches=1',
    *_flags(vocab, 'sentence_objective', **{'train.num_steps': 2, 'train.eval_every': 1}),
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert 'set -euo pipefail' in lines
  commands = [line for line in lines if not line.startswith('#') and line != 'set -euo pipefail']
  # The sweep ran launch.pretrain with its own interpreter.
  assert (
    len(commands) == 3
    and [shlex.join([sys.executable, *shlex.split(c)[1:]]) for c in commands] == ran
  )


def test_the_runner_runs_the_flags_of_the_emitted_command():
  plan = plan_lib.make_plan(
    _sweep_of('sharing'),
    _spec('sharing'),
    ['--config.train.num_steps=2'],
    [0],
    config_file='configs/presets.py',
  )
  assert plan.config == 'configs/presets.py:tiny'
  for run in plan.runs:
    assert plan.command(run, '/sweep') == [
      'python',
      '-m',
      'launch.pretrain',
      *plan.arguments(run, '/sweep'),
    ]
  assert plan.arguments(plan.runs[0], '/sweep') == [
    '--config=configs/presets.py:tiny',
    '--workdir=/sweep/E64-all-seed0',
    '--config.train.num_steps=2',
    '--config.model.embedding_size=64',
    '--config.model.sharing=all',
    '--config.train.seed=0',
    '--config.data.seed=0',
  ]


def _plan(name: str, seeds=(0, 1)) -> plan_lib.Plan:
  return plan_lib.make_plan(
    _sweep_of(name), _spec(name), [], list(seeds), config_file='experiments/configs/pretrain.py'
  )


def _fake_commands(tmp_path, **bodies: str) -> dict[str, str]:
  """An environment whose PATH starts with scripts named as `bodies`' keys
  (bash bodies), each first appending its arguments to tmp_path/NAME.log."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(parents=True)
  for name, body in bodies.items():
    script = bin_dir / name
    script.write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/{name}.log\n{body}\n')
    script.chmod(0o755)
  return {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}'}


def test_emit_slurm_is_one_job_array_and_a_dependent_report_job(tmp_path):
  plan = _plan('sentence_objective')
  script = emit.emit(
    plan, '/sweep', 'slurm', emit.Cluster(nodes=2, partition='gpu'), eval_batches=4
  )
  # A fake sbatch keeps each submitted script and answers --parsable as a
  # federated cluster does (ID;CLUSTER).
  env = _fake_commands(
    tmp_path,
    sbatch=f'n=$(wc -l < {tmp_path}/sbatch.log); cat > {tmp_path}/job$n.sh; echo "4242;c1"',
  )
  ran = subprocess.run(['bash', '-c', script], env=env, capture_output=True, text=True)
  assert ran.returncode == 0, ran.stderr
  assert (tmp_path / 'sbatch.log').read_text().splitlines() == [
    '--parsable',
    '--dependency=afterok:4242',
  ]
  array, report_job = ((tmp_path / f'job{n}.sh').read_text() for n in (1, 2))
  assert '#SBATCH --array=0-5' in array and '#SBATCH --nodes=2' in array
  assert '#SBATCH --partition=gpu' in array and '#SBATCH --output=%x-%A_%a.out' in array
  assert report_job.splitlines()[-1] == (
    'srun --kill-on-bad-exit=1 python -m launch.sweep --report=/sweep --eval_batches=4'
  )
  assert '#SBATCH --nodes=1' in report_job and '#SBATCH --gpus-per-node=1' in report_job
  # Array task i runs run i; a task beyond the runs fails.
  env = _fake_commands(tmp_path / 'task', srun='')
  for task in range(len(plan.runs)):
    ran = subprocess.run(
      ['bash', '-c', array],
      env={**env, 'SLURM_ARRAY_TASK_ID': str(task), 'SLURM_SUBMIT_DIR': str(tmp_path)},
      capture_output=True,
      text=True,
    )
    assert ran.returncode == 0, ran.stderr
  srun = (tmp_path / 'task' / 'srun.log').read_text().splitlines()
  assert srun == [
    shlex.join(['--kill-on-bad-exit=1', *plan.command(r, '/sweep', distributed=True)])
    for r in plan.runs
  ]
  beyond = subprocess.run(
    ['bash', '-c', array],
    env={**env, 'SLURM_ARRAY_TASK_ID': '6', 'SLURM_SUBMIT_DIR': str(tmp_path)},
    capture_output=True,
    text=True,
  )
  assert beyond.returncode == 1 and 'no command for array task 6' in beyond.stderr


def test_emitted_scripts_stop_at_the_first_failing_command(tmp_path):
  env = _fake_commands(tmp_path, python='exit 3', gcloud='exit 4', tar='')
  shell = emit.emit(_plan('sentence_objective'), '/sweep', 'shell', emit.Cluster())
  ran = subprocess.run(['bash', '-c', shell], env=env, capture_output=True, text=True)
  assert ran.returncode == 3
  assert len((tmp_path / 'python.log').read_text().splitlines()) == 1
  tpu = emit.emit(
    _plan('sentence_objective'), '/sweep', 'tpu', emit.Cluster(tpu='pod', zone='us-central2-b')
  )
  ran = subprocess.run(['bash', '-c', tpu], env=env, capture_output=True, text=True)
  assert ran.returncode == 4
  assert len((tmp_path / 'gcloud.log').read_text().splitlines()) == 1


def test_emit_tpu_installs_once_then_runs_one_run_after_another():
  plan = _plan('sentence_objective', seeds=())
  script = emit.emit(plan, '/so', 'tpu', emit.Cluster(tpu='pod', zone='us-central2-b'))
  commands = [line for line in script.splitlines() if line.startswith('gcloud')]
  assert [c.split()[4] for c in commands] == ['scp', 'ssh'] + ['ssh'] * 3
  assert all('--zone=us-central2-b' in c for c in commands)
  assert commands[-1].endswith(
    "--workdir=/so/sop --distributed --config.data.sentence_objective=sop'"
  )


def test_only_runs_or_emits_part_of_the_sweep_and_saves_all_of_it(tmp_path):
  result = _sweep(
    f'--sweep={_spec("sharing")}',
    f'--workdir={tmp_path}',
    '--emit=shell',
    '--seeds=0,1',
    '--only=E64-all,E64-none',
  )
  assert result.returncode == 0, result.stderr
  commands = [line for line in result.stdout.splitlines() if line.startswith('python ')]
  assert [shlex.split(c)[4] for c in commands] == [
    f'--workdir={tmp_path}/{name}'
    for name in ('E64-all-seed0', 'E64-none-seed0', 'E64-all-seed1', 'E64-none-seed1')
  ]
  # The report knows every run of the sweep (and has nothing to report yet).
  assert len(plan_lib.load_plan(str(tmp_path)).runs) == 16
  export_testing.assert_one_line_error(_sweep(f'--report={tmp_path}'), 'has no finished runs')
  plan = _plan('sharing')
  assert plan.only([]) is plan
  with pytest.raises(SweepError) as error:
    plan.only(['E64-all', 'E64-nope'])
  assert str(error.value) == (
    "--only: no variant 'E64-nope' in the sharing sweep: choose from "
    + ', '.join(v.name for v in _sweep_of('sharing').variants)
  )


def test_report_rebuilds_from_the_sub_workdirs(swept):
  workdir, _ = swept['sharing']
  with open(os.path.join(workdir, 'results.csv')) as f:
    before = f.read()
  for name in REPORT_FILES:
    os.remove(os.path.join(workdir, name))
  # A run without its result (e.g. launched by --emit) is evaluated.
  os.remove(os.path.join(workdir, 'E32-ffn', 'sweep_result.json'))
  result = _sweep(f'--report={os.path.relpath(workdir, REPO)}', '--eval_batches=1')
  assert result.returncode == 0, result.stderr
  with open(os.path.join(workdir, 'results.csv')) as f:
    assert f.read() == before
  assert all(os.path.exists(os.path.join(workdir, n)) for n in REPORT_FILES)


def _wait_for_step(path: str, step: int, process: subprocess.Popen) -> None:
  """Waits until the run of metrics.jsonl `path` has logged `step`."""
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(path):
      with open(path) as f:
        lines = f.read().splitlines()
      # The last line may be half written.
      if any(f'"step": {step},' in line for line in lines):
        return
    time.sleep(0.05)
  raise AssertionError(f'{path} never reached step {step}')


def test_stopped_and_killed_sweeps_resume_without_redoing_finished_runs(tmp_path, vocab):
  root = str(tmp_path / 'sweep')
  args = [
    f'--sweep={_spec("sentence_objective")}',
    f'--workdir={root}',
    '--eval_batches=1',
    *_flags(vocab, 'sentence_objective', **{'train.num_steps': 300, 'checkpoint.every_steps': 20}),
  ]

  def start() -> subprocess.Popen:
    return subprocess.Popen(
      [sys.executable, '-m', 'launch.sweep', *args],
      cwd=REPO,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      start_new_session=True,
    )

  # SIGTERM while the second run trains: passed on, it checkpoints and exits.
  sweep = start()
  _wait_for_step(os.path.join(root, 'nsp', 'metrics.jsonl'), 25, sweep)
  sweep.send_signal(signal.SIGTERM)
  stdout = sweep.communicate(timeout=300)[0]
  assert sweep.returncode == 1, stdout
  assert '[nsp] stopped: rerun the sweep to resume' in stdout
  assert not os.path.exists(os.path.join(root, 'sop'))
  finished = [
    os.path.join(root, 'none', name)
    for name in ('sweep_result.json', 'metrics.jsonl', 'config.json')
  ]
  mtimes = [os.stat(path).st_mtime_ns for path in finished]
  stopped_at = max(train_testing.train_losses(os.path.join(root, 'nsp')))

  # Killed outright (with its trainer) while the third run trains.
  sweep = start()
  _wait_for_step(os.path.join(root, 'sop', 'metrics.jsonl'), 45, sweep)
  os.killpg(sweep.pid, signal.SIGKILL)
  stdout += sweep.communicate(timeout=60)[0]
  assert f'[nsp] resumed from {root}/nsp/checkpoints at step {stopped_at}' in stdout

  sweep = start()
  stdout = sweep.communicate(timeout=600)[0]
  assert sweep.returncode == 0, stdout
  for name in ('none', 'nsp'):
    assert f'[{name}] finished before' in stdout
  assert '[sop] resumed from' in stdout and '[sop] trained' in stdout
  assert [os.stat(path).st_mtime_ns for path in finished] == mtimes
  assert [row['run'] for row in _rows(root)] == ['none', 'nsp', 'sop']


def test_a_failing_run_is_reported_and_the_others_run(tmp_path, vocab):
  root = tmp_path / 'sweep'
  root.mkdir()
  (root / 'nsp').write_text('a file where the run directory should be')
  result = _sweep(
    f'--sweep={_spec("sentence_objective")}',
    f'--workdir={root}',
    '--eval_batches=1',
    *_flags(vocab, 'sentence_objective'),
  )
  assert result.returncode == 1
  assert '[nsp] failed: exit status 1' in result.stdout
  summary = result.stdout.splitlines()[-2:]
  assert summary[0] == '2 of 3 runs finished'
  assert summary[1].startswith('  nsp failed: exit status 1: ')
  assert [row['run'] for row in _rows(str(root))] == ['none', 'sop']
  assert 'Not finished: nsp.' in (root / 'results.md').read_text()


@pytest.mark.parametrize(
  'args, error',
  [
    ([], 'pass --sweep=FILE:SCALE and --workdir=DIR'),
    (['--sweep=experiments/ablations/nope.py:tiny', '--workdir=W'], 'no sweep file'),
    (
      ['--sweep=experiments/ablations/sharing.py:huge', '--workdir=W'],
      "unknown scale 'huge': choose one of tiny, mini, base",
    ),
    (
      ['--sweep=experiments/ablations/sharing.py:tiny', '--workdir=W', '--config.train.nope=1'],
      'unknown config key',
    ),
    (
      [
        '--sweep=experiments/ablations/sharing.py:tiny',
        '--workdir=W',
        '--config.model.sharing=none',
      ],
      '--config.model.sharing is set per variant by the sharing sweep',
    ),
    (
      [
        '--sweep=experiments/ablations/sharing.py:tiny',
        '--workdir=W',
        '--seeds=0,1',
        '--config.train.seed=3',
      ],
      '--seeds sets train.seed',
    ),
    (
      ['--sweep=experiments/ablations/sharing.py:tiny', '--workdir=W', '--seeds=a'],
      'give integers',
    ),
    (
      [
        '--sweep=experiments/ablations/sharing.py:tiny',
        '--workdir=W',
        '--config=experiments/configs/pretrain.py:base',
      ],
      'drop --config=',
    ),
    (
      ['--sweep=experiments/ablations/sharing.py:tiny', '--workdir=W', '--emit=tpu'],
      '--emit=tpu needs --tpu=NAME and --zone=ZONE',
    ),
    (['--report=.'], 'holds no sweep'),
    (
      ['--sweep=experiments/ablations/sharing.py:tiny', '--workdir=W', '--only=E64-all,nope'],
      "--only: no variant 'nope' in the sharing sweep: choose from E64-all, ",
    ),
    (
      ['--sweep=experiments/ablations/sharing.py:tiny', '--workdir=W', '--downstream=a.tsv'],
      '--downstream=a.tsv: give TRAIN,DEV',
    ),
    (
      [
        '--sweep=experiments/ablations/sharing.py:tiny',
        '--workdir=W',
        '--downstream=README.md,README.md',
        '--downstream_config=data.eval=x.tsv',
      ],
      '--downstream_config=data.eval=x.tsv: the sweep sets data.eval per run',
    ),
  ],
)
def test_bad_input_is_one_line(args, error):
  export_testing.assert_one_line_error(_sweep(*args), error)


def test_a_directory_of_another_sweep_is_refused(tmp_path):
  emitted = _sweep(f'--sweep={_spec("sharing")}', f'--workdir={tmp_path}', '--emit=shell')
  assert emitted.returncode == 0, emitted.stderr
  export_testing.assert_one_line_error(
    _sweep(f'--sweep={_spec("sentence_objective")}', f'--workdir={tmp_path}', '--emit=shell'),
    "holds the 'sharing' sweep",
  )


# -- Statistics, on synthetic outcomes --------------------------------------


def test_paired_difference_against_hand_computed_cases():
  # Three seeds, examples averaged within each: MLM hits out of 5 masked
  # tokens per example, differences 0.2, 0.6 and 0.4. Mean 0.4, sd 0.2, so
  # the interval is 0.4 ± t(2, 0.975) · 0.2 / sqrt(3) = 0.4 ± 0.4968.
  paired = stats.paired_difference(
    [np.array([3, 2]), np.array([4, 4, 3]), np.array([3, 3])],
    [np.array([2, 1]), np.array([1, 1, 0]), np.array([1, 1])],
    [np.array([5, 5]), np.array([5, 5, 5]), np.array([5, 5])],
  )
  half = 4.302652729911275 * 0.2 / np.sqrt(3)
  assert paired.difference == pytest.approx(0.4)
  assert (paired.low, paired.high) == pytest.approx((0.4 - half, 0.4 + half))
  assert (paired.seeds, paired.examples) == (3, 2)
  assert paired.standard_error == pytest.approx(0.2 / np.sqrt(3))
  # p of a difference of 0: the t statistic 0.4 / (0.2 / sqrt 3) = 3.46 on 2
  # degrees of freedom.
  assert stats.p_value(paired) == pytest.approx(0.0742, abs=1e-4)
  # Against a margin of 0.1 (is it above -0.1?): t = 4.33.
  assert stats.p_value(paired, margin=0.1) == pytest.approx(0.0494, abs=1e-4)
  # One seed: a difference, no interval.
  one = stats.paired_difference([np.array([1, 0])], [np.array([0, 0])], [np.ones(2)])
  assert one.difference == 0.5 and np.isnan(one.low) and np.isnan(stats.p_value(one))


def test_paired_difference_refuses_unpaired_outcomes():
  with pytest.raises(ValueError, match='one outcome per held-out example'):
    stats.paired_difference([np.ones(3)], [np.ones(4)], [np.ones(3)])
  with pytest.raises(ValueError, match='same seeds'):
    stats.paired_difference([np.ones(3)], [], [np.ones(3)])


@pytest.mark.parametrize('seeds', [3, 5])
def test_the_interval_holds_its_coverage_at_the_seeds_used(seeds):
  """Sweeps simulated at the committed tables' noise: each seed's training
  noise (sd 0.2 or 1.0 point between seeds) and each example's (sd 0.07 or
  0.14 point once averaged over a seed's examples), through the report's own
  functions: examples averaged within a seed, the t interval over seeds."""
  rng = np.random.default_rng(seeds)
  trials, examples, margin = 4000, 64, 0.01
  for seed_sd in (0.002, 0.01):
    for example_sd in (0.0007, 0.0014):
      for truth in (0.0, 0.004, -margin):
        shape = (trials, seeds, examples)
        # Each example's paired difference, correct_a - correct_b.
        per_example = (
          truth
          + rng.normal(0, seed_sd, (trials, seeds, 1))
          + rng.normal(0, example_sd * np.sqrt(examples), shape)
        )
        d = stats.seed_difference(per_example, np.zeros(shape), np.ones(shape))
        _, low, high = stats.t_interval(d)
        covered = np.mean((low <= truth) & (truth <= high))
        assert covered >= 0.93, (seed_sd, example_sd, truth, covered)
        if truth == 0:
          # 'reproduced' (a ahead) when the whole interval is above 0.
          assert np.mean(low > 0) <= 0.05, (seed_sd, example_sd)
        if truth == -margin:
          # 'reproduced' (no worse by more than the margin) when the whole
          # interval is above -margin, at a true difference of -margin.
          assert np.mean(low > -margin) <= 0.05, (seed_sd, example_sd)


def test_holm_adjusts_a_family_of_p_values():
  # Sorted 0.01, 0.03, 0.04, 0.2: times 4, 3, 2, 1, never below the one before.
  assert stats.holm([0.04, 0.01, 0.2, 0.03]) == pytest.approx([0.09, 0.04, 0.2, 0.09])
  assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
  assert stats.holm([]) == []


def _paired_of(low, high, seeds):
  """A Paired whose t interval over `seeds` is [low, high]."""
  half = (high - low) / 2
  t = float(scipy_stats.t.ppf(0.975, max(seeds - 1, 1)))
  return stats.Paired((low + high) / 2, low, high, seeds, 9, half / t)


@pytest.mark.parametrize(
  'low, high, seeds, verdict',
  [
    (0.01, 0.03, 3, 'reproduced'),
    (-0.03, -0.01, 3, 'not reproduced (the opposite direction)'),
    (-0.01, 0.03, 5, 'inconclusive (CI spans 0)'),
    (0.01, 0.03, 2, 'inconclusive (2 seeds; 3 needed)'),
  ],
)
def test_verdicts(low, high, seeds, verdict):
  paired = _paired_of(low, high, seeds)
  assert stats.verdict(paired) == verdict
  # The interval excludes 0 exactly when the test of 0 rejects.
  if seeds >= 3:
    assert (stats.p_value(paired) < 0.05) == (verdict != 'inconclusive (CI spans 0)')


def test_a_corrected_verdict_needs_the_adjusted_p_value():
  paired = _paired_of(0.01, 0.03, 3)
  assert stats.verdict(paired, adjusted_p=0.04) == 'reproduced'
  assert stats.verdict(paired, adjusted_p=0.08) == 'inconclusive (Holm-adjusted p = 0.08)'


@pytest.mark.parametrize(
  'low, high, verdict',
  [
    (-0.009, 0.02, 'reproduced'),
    (-0.03, -0.011, 'not reproduced (more than 1 point behind)'),
    (-0.02, 0.01, 'inconclusive (CI spans −1 point)'),
  ],
)
def test_verdicts_of_no_worse_by_more_than_a_margin(low, high, verdict):
  assert stats.verdict(_paired_of(low, high, 3), margin=0.01) == verdict


def _batch(keys, size=6, predictions=5):
  return {
    'input_ids': jax.random.randint(keys[0], (size, 8), 0, 4),
    'segment_ids': jnp.zeros((size, 8), jnp.int32),
    'masked_lm_positions': jnp.tile(jnp.arange(predictions), (size, 1)),
    'masked_lm_ids': jax.random.randint(keys[1], (size, predictions), 0, 4),
    'masked_lm_weights': (jax.random.uniform(keys[2], (size, predictions)) < 0.7).astype(
      jnp.float32
    ),
    'sentence_order_label': jax.random.randint(keys[3], (size,), 0, 2),
  }


def test_example_outcomes_add_up_to_the_evaluation_sums():
  keys = jax.random.split(jax.random.key(0), 6)
  batch = _batch(keys)
  outputs = {
    'mlm_logits': jax.random.normal(keys[4], (6, 5, 4)),
    'sentence_logits': jax.random.normal(keys[5], (6, 2)),
  }
  sums = pretraining.loss_sums(outputs, batch)
  per_example = pretraining.example_outcomes(outputs, batch)
  for key in ('mlm_correct', 'mlm_weight', 'sentence_correct'):
    assert per_example[key].shape == (6,)
    assert float(per_example[key].sum()) == pytest.approx(float(sums[key])), key
  assert 0 < float(sums['mlm_correct']) < float(sums['mlm_weight'])
  # The predictions and targets behind the hits, -1 where no real prediction.
  predicted, target = np.asarray(per_example['mlm_predicted']), per_example['mlm_target']
  real = np.asarray(batch['masked_lm_weights']) > 0
  assert ((predicted >= 0) == real).all() and ((np.asarray(target) >= 0) == real).all()
  hits = ((predicted == np.asarray(target)) & real).sum(1)
  np.testing.assert_array_equal(hits, per_example['mlm_correct'])
  np.testing.assert_array_equal(per_example['sentence_label'], batch['sentence_order_label'])


def test_example_ids_tell_examples_apart():
  batch = _batch(jax.random.split(jax.random.key(1), 4), size=64)
  batch['input_ids'] = batch['input_ids'].at[3, :2].set(jnp.array([1, 2]))
  ids = np.asarray(pretraining.example_id(batch))
  assert ids.dtype == np.uint32 and ids.shape == (64,)
  np.testing.assert_array_equal(ids, pretraining.example_id(dict(batch)))
  # Any one changed field of an example, or its order, changes its id alone.
  for key, change in (
    ('input_ids', lambda x: x.at[3, 2].add(1)),
    ('input_ids', lambda x: x.at[3, :2].set(jnp.array([2, 1]))),
    ('segment_ids', lambda x: x.at[3, 5].set(1)),
    ('masked_lm_positions', lambda x: x.at[3, 0].set(7)),
    ('masked_lm_ids', lambda x: x.at[3, 4].add(1)),
    ('sentence_order_label', lambda x: x.at[3].set(1 - x[3])),
  ):
    changed = np.asarray(pretraining.example_id({**batch, key: change(batch[key])}))
    assert (changed != ids).tolist() == [i == 3 for i in range(64)], key


VOCAB = 50  # Of the fake runs' masked tokens.


def _fake_outcomes(mlm_correct, weight, sentence, *, seed, ids=None, predicted=None):
  """One objective's per-example outcomes (train_step.example_outcomes) of
  the examples of `seed` (their targets, labels and ids): the first
  `mlm_correct` real predictions of an example hit, the others miss;
  `predicted` (a token), every prediction that token instead."""
  rng = np.random.default_rng(1000 + seed)
  size, width = len(weight), int(np.max(weight))
  real = np.arange(width) < np.asarray(weight)[:, None]
  target = np.where(real, rng.integers(0, VOCAB, (size, width)), -1)
  hit = np.arange(width) < np.asarray(mlm_correct)[:, None]
  guess = np.where(hit, target, (target + 1) % VOCAB) if predicted is None else predicted
  label = rng.integers(0, 2, size)
  return dict(
    mlm_correct=np.asarray(mlm_correct, np.float32),
    mlm_weight=np.asarray(weight, np.float32),
    sentence_correct=np.asarray(sentence, np.float32),
    mlm_predicted=np.where(real, guess, -1).astype(np.int32),
    mlm_target=target.astype(np.int32),
    sentence_label=label.astype(np.int32),
    example_id=(np.arange(size) + 1000 * seed if ids is None else ids).astype(np.uint32),
  )


def _fake_run(
  root,
  run: plan_lib.Run,
  mlm_correct,
  weight,
  sentence,
  *,
  steps=(200, 400),
  outcomes=True,
  objective='sop',
  **fake,
):
  """A finished, evaluated run: its result, the trainer's eval records at
  `steps` and the final step 600, and its per-example outcomes
  (`_fake_outcomes` with `fake`)."""
  workdir = os.path.join(root, run.name)
  os.makedirs(workdir)
  per_example = _fake_outcomes(mlm_correct, weight, sentence, seed=run.seed or 0, **fake)
  if outcomes:
    np.savez_compressed(
      os.path.join(workdir, 'sweep_outcomes.npz'),
      **{f'{o}_{k}': v for o in ('sop', 'nsp') for k, v in per_example.items()},
    )
  hits = per_example['mlm_predicted'] == per_example['mlm_target']
  accuracy = float((hits & (per_example['mlm_target'] >= 0)).sum() / np.sum(weight))
  metrics = {'mlm_loss': 5.0, 'mlm_accuracy': accuracy}
  sentence_accuracy = float(np.mean(sentence))
  result = {
    'step': 600,
    'objective': objective,
    'params': 1000,
    'eval': {
      'sop': {**metrics, 'sop_accuracy': sentence_accuracy, 'examples': len(weight)},
      'nsp': {**metrics, 'nsp_accuracy': sentence_accuracy, 'examples': len(weight)},
    },
    'step_time': 0.1,
    'tokens_per_sec': 100.0,
  }
  with open(os.path.join(workdir, 'sweep_result.json'), 'w') as f:
    json.dump(result, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    # The trainer's own final evaluation (other examples) is not what the
    # table reports: the report's curve ends at the table's number.
    for step in (*steps, 600):
      record = {'step': step, 'eval_mlm_accuracy': step / 10000, 'eval_sop_accuracy': step / 1000}
      f.write(json.dumps(record) + '\n')


def test_report_compares_the_paper_findings_with_intervals(tmp_path):
  plan = _plan('sharing', seeds=(0, 1, 2))
  rng = np.random.default_rng(0)
  for run in plan.runs:
    seed_rng = np.random.default_rng(run.seed)  # The examples of a seed.
    weight = seed_rng.integers(1, 20, 300).astype(np.float32)
    p = 0.3 if run.variant.endswith('-none') else 0.1  # Not-shared far ahead.
    if run.variant == 'E32-all' and run.seed == 2:
      continue  # Unfinished: that seed is not paired.
    _fake_run(
      tmp_path,
      run,
      rng.binomial(weight.astype(int), p).astype(np.float32),
      weight,
      rng.integers(0, 2, 300).astype(np.float32),
      steps=() if run.variant.startswith('E32') else (200, 400),
      outcomes=run.variant != 'E32-ffn',
    )
  report.write_report(plan, str(tmp_path))
  rows = {
    line.split(' | ')[0].removeprefix('| '): line.split(' | ')
    for line in (tmp_path / 'results.md').read_text().splitlines()
    if ' − ' in line
  }
  none_all = rows['not-shared − all-shared (ALBERT tiny E=64)']
  assert none_all[1] == 'MLM acc. (SOP examples)'
  assert float(none_all[3]) == pytest.approx(20, abs=2) and none_all[6] == '3 × 300'
  low, high = (float(x) for x in none_all[4].strip('[]').split(', '))
  assert 15 < low < float(none_all[3]) < high < 25
  assert none_all[7] == 'reproduced |'
  # The interval: Student-t over the seeds' differences of the table's runs.
  seeds = {}
  for row in _rows(str(tmp_path)):
    seeds.setdefault(row['seed'], {})[row['variant']] = float(row['mlm_accuracy'])
  d = [100 * (v['E64-none'] - v['E64-all']) for v in seeds.values()]
  assert (low, high) == pytest.approx(tuple(stats.t_interval(np.array(d))[1:]), abs=0.006)
  # Corrected together: the two comparisons with a verdict, Holm-adjusted.
  p = stats.p_value(stats.paired(np.array(d) / 100, 300))
  attention_ffn = rows['shared-attention − shared-FFN (ALBERT tiny E=64)']
  assert attention_ffn[7] == 'inconclusive (CI spans 0) |'
  assert float(none_all[5]) == pytest.approx(2 * p, rel=0.01)
  # Two seeds paired: however clear, no verdict, and out of the family.
  assert rows['not-shared − all-shared (ALBERT tiny E=32)'][5:] == [
    '',
    '2 × 300',
    'inconclusive (2 seeds; 3 needed) |',
  ]
  # A variant without outcomes (evaluated before they were kept).
  assert rows['shared-attention − shared-FFN (ALBERT tiny E=32)'][3:] == [
    'n/a',
    '',
    '',
    '',
    'no seed with both runs evaluated |',
  ]
  # The table and the curves read one accuracy: the final evaluation's.
  row = _rows(str(tmp_path))[0]
  workdir = os.path.join(tmp_path, row['run'])
  curve = results.mlm_curve(workdir, results.read_result(workdir))
  assert curve == [(200, 0.02), (400, 0.04), (600, pytest.approx(float(row['mlm_accuracy'])))]
  # So do the sentence head's curve and the table.
  curve = results.sentence_curve(workdir, results.read_result(workdir))
  assert curve == [(200, 0.2), (400, 0.4), (600, pytest.approx(float(row['sop_accuracy'])))]
  # A run with only its final evaluation still has a point to plot.
  workdir = os.path.join(tmp_path, 'E32-all-seed0')
  result = results.read_result(workdir)
  for curve in (results.mlm_curve, results.sentence_curve):
    assert [step for step, _ in curve(workdir, result)] == [600]
  for png in REPORT_FILES[2:]:
    assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_sentence_plot_only_when_a_run_trains_a_sentence_objective(tmp_path):
  plan = _plan('sentence_objective', seeds=(0,))
  runs = {run.variant: run for run in plan.runs}
  ones = np.ones(10)
  _fake_run(tmp_path, runs['none'], ones, ones, ones, objective='none')
  paths = report.write_report(plan, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == list(REPORT_FILES[:4])
  assert not (tmp_path / 'sentence_accuracy.png').exists()
  _fake_run(tmp_path, runs['nsp'], ones, ones, ones, objective='nsp')
  paths = report.write_report(plan, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == list(REPORT_FILES)
  assert (tmp_path / 'sentence_accuracy.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_report_refuses_to_pair_runs_evaluated_on_other_examples(tmp_path):
  # 10, 11 and 12 examples.
  plan = _plan('sentence_objective', seeds=(0,))
  for i, run in enumerate(plan.runs):
    ones = np.ones(10 + i)
    _fake_run(tmp_path / 'so', run, ones, ones, ones)
  table = report.comparison_table(plan, str(tmp_path / 'so'))
  # Every comparison, on the MLM of the same runs too.
  assert table.count('were evaluated on different examples |') == 5
  # MLM: as many examples, other ones (other example ids) in one run.
  plan = _plan('sharing', seeds=(0,))
  for run in plan.runs:
    ids = np.arange(10) + (500 if run.variant == 'E64-none' else 0)
    _fake_run(tmp_path / 'sharing', run, np.ones(10), np.full(10, 3.0), np.ones(10), ids=ids)
  table = report.comparison_table(plan, str(tmp_path / 'sharing'))
  assert (
    '| not paired: E64-none-seed0 and E64-all-seed0 were evaluated on different examples |' in table
  )
  assert table.count('| not paired') == 1


def test_runs_stuck_at_constant_predictions_carry_no_verdict(tmp_path):
  plan = _plan('sharing', seeds=(0, 1, 2))
  rng = np.random.default_rng(3)
  weight = np.full(200, 10.0)
  for run in plan.runs:
    if not run.variant.startswith('E64'):
      continue
    p = {'E64-none': 0.4, 'E64-attention': 0.3}.get(run.variant, 0.2)
    correct = rng.binomial(10, p, 200)
    fake = {}
    if run.variant == 'E64-all' and run.seed == 0:
      fake = {'predicted': 7}  # Every masked prediction one token.
    _fake_run(tmp_path, run, correct, weight, rng.integers(0, 2, 200), **fake)
  # Seed 1's shared-FFN run answers every example as its shared-attention run.
  twin = results.read_outcomes(os.path.join(tmp_path, 'E64-attention-seed1'))
  np.savez_compressed(os.path.join(tmp_path, 'E64-ffn-seed1', 'sweep_outcomes.npz'), **twin)
  text = report.markdown_table(plan, report.collect(plan, str(tmp_path)), str(tmp_path))
  assert (
    'Not trained (stuck at constant predictions; their comparisons carry no verdict): '
    'E64-all-seed0 (100% of its masked predictions are one token); '
    'E64-attention-seed1 (the same outcome on every example as E64-ffn-seed1); '
    'E64-ffn-seed1 (the same outcome on every example as E64-attention-seed1).'
  ) in text
  rows = {
    line.split(' | ')[0].removeprefix('| '): line.split(' | ')
    for line in report.comparison_table(plan, str(tmp_path)).splitlines()
    if 'E=64' in line
  }
  # A clear difference, but no verdict, and no place in the family.
  none_all = rows['not-shared − all-shared (ALBERT tiny E=64)']
  assert float(none_all[3]) > 10 and none_all[5] == ''
  assert none_all[7] == 'no verdict: E64-all-seed0 not trained |'
  assert rows['shared-attention − shared-FFN (ALBERT tiny E=64)'][7] == (
    'no verdict: E64-attention-seed1, E64-ffn-seed1 not trained |'
  )
  # No better than always answering the commonest masked token: stuck too.
  target = np.tile(np.arange(4, 8), (50, 1)) + np.arange(50)[:, None] * 4
  target[:, 0] = 3  # A quarter of the masked tokens; the others all distinct.
  outcomes = {'sop_mlm_target': target, 'sop_mlm_predicted': np.where(target == 3, 3, 0)}
  assert results.untrained(outcomes) == (
    'MLM accuracy 25.00%, no better than always the commonest token (25.00%)'
  )
  outcomes['sop_mlm_predicted'][:, 1] = outcomes['sop_mlm_target'][:, 1]
  assert results.untrained(outcomes) is None


def test_a_constant_sentence_head_ahead_carries_no_verdict(tmp_path):
  plan = _plan('sentence_objective', seeds=(0, 1, 2))
  rng = np.random.default_rng(4)
  ones = np.full(300, 10.0)
  for run in plan.runs:
    label = _fake_outcomes(ones, ones, ones, seed=run.seed)['sentence_label']
    # NSP's head says 1 to every example: right where the label is 1.
    sentence = label if run.variant == 'nsp' else rng.integers(0, 2, 300)
    _fake_run(tmp_path, run, rng.binomial(10, 0.3, 300), ones, sentence)
  table = report.comparison_table(plan, str(tmp_path))
  nsp_none = [line for line in table.splitlines() if line.startswith('| NSP − None')]
  assert nsp_none[0].endswith(
    '| no verdict: the head of nsp-seed0, nsp-seed1, nsp-seed2 gives one answer to every example |'
  )
  # The behind run's constant head is the chance a head is compared with.
  sop_nsp = [line for line in table.splitlines() if 'SOP − NSP' in line and 'sentence' in line]
  assert 'no verdict' not in sop_nsp[0]


def test_the_report_draws_chance_at_the_majority_class(tmp_path):
  plan = _plan('sentence_objective', seeds=(0,))
  for run in plan.runs:
    weight = np.full(64, 5.0)
    _fake_run(tmp_path / 'small', run, np.full(64, 2.0), weight, np.ones(64))
  outcomes = _fake_outcomes(weight, weight, weight, seed=0)
  rates = [results.majority_rate({'sop_sentence_label': outcomes['sentence_label']}, 'sop')]
  finished = {run.name for run in plan.runs}
  assert report.chance(plan, str(tmp_path / 'small'), finished) == {
    'nsp': pytest.approx(rates[0]),
    'sop': pytest.approx(rates[0]),
  }
  rows = report.collect(plan, str(tmp_path / 'small'))
  text = report.markdown_table(plan, rows, str(tmp_path / 'small'))
  half = 100 * 1.96 * np.sqrt(rates[0] * (1 - rates[0]) / 64)
  assert (
    f"Sentence heads: chance is the eval set's majority class, NSP {100 * rates[0]:.1f} %, "
    f'SOP {100 * rates[0]:.1f} %; over 64 examples a head is within ±{half:.1f} points of it '
    'by luck (95 %). Too few examples to tell a head from chance: evaluate more than 384 '
    '(--eval_batches).'
  ) in text
  assert rates[0] > 0.5  # 64 random labels: rarely exactly balanced.
  for run in plan.runs:
    weight = np.full(1024, 5.0)
    _fake_run(tmp_path / 'large', run, np.full(1024, 2.0), weight, np.ones(1024))
  rows = report.collect(plan, str(tmp_path / 'large'))
  assert 'Too few' not in report.markdown_table(plan, rows, str(tmp_path / 'large'))


def test_only_marks_the_variants_no_run_chose(tmp_path):
  whole = _plan('sentence_objective', seeds=(0,))
  whole.save(str(tmp_path), only=['none'])
  plan = whole.save(str(tmp_path), only=['nsp'])  # What launch.sweep reports with.
  assert plan.selected == ('none', 'nsp') and plan == plan_lib.load_plan(str(tmp_path))
  ones = np.ones(400)
  _fake_run(tmp_path, plan.runs[0], ones, ones, ones, objective='none')
  text = report.markdown_table(plan, report.collect(plan, str(tmp_path)), str(tmp_path))
  assert 'Not run (no --only chose them): sop-seed0.\nNot finished: nsp-seed0.' in text
  table = report.comparison_table(plan, str(tmp_path))
  assert table.count('| not run: no --only chose sop |') == 4
  assert table.count('| no seed with both runs evaluated |') == 1
  # A run of every variant: none is left out any more.
  whole.save(str(tmp_path))
  assert plan_lib.load_plan(str(tmp_path)).selected == ()


def test_report_rebuilds_results_md_byte_for_byte_from_the_committed_files(tmp_path):
  """The files a sweep commits (sweep.json, and per run sweep_result.json and
  the compressed sweep_outcomes.npz) are all `--report` needs."""
  plan = _plan('sentence_objective', seeds=(0, 1, 2))
  swept = tmp_path / 'sweep'
  plan.save(str(swept))
  rng = np.random.default_rng(5)
  weight = np.full(400, 8.0)
  for run in plan.runs:
    p = {'none': 0.25, 'nsp': 0.24, 'sop': 0.26}[run.variant]
    sentence = rng.binomial(1, 0.5 if run.variant == 'none' else 0.7, 400)
    _fake_run(swept, run, rng.binomial(8, p, 400), weight, sentence)
  report.write_report(plan, str(swept))
  committed = tmp_path / 'committed'
  committed.mkdir()
  (committed / 'sweep.json').write_bytes((swept / 'sweep.json').read_bytes())
  for run in plan.runs:
    (committed / run.name).mkdir()
    for name in ('sweep_result.json', 'sweep_outcomes.npz'):
      (committed / run.name / name).write_bytes((swept / run.name / name).read_bytes())
  result = _sweep(f'--report={committed}')
  assert result.returncode == 0, result.stderr
  expected = (swept / 'results.md').read_bytes()
  assert (committed / 'results.md').read_bytes() == expected
  assert b'| reproduced |' in expected and b'[+' in expected


COMMITTED = os.path.join(REPO, 'experiments', 'results')
REBUILT = 'sentence_debian_tiny'  # Table 5, with its downstream column.


def test_report_rebuilds_a_committed_results_md_byte_for_byte(tmp_path):
  """A committed sweep directory, less its report, is all `--report` needs."""
  source = os.path.join(COMMITTED, REBUILT)
  shutil.copytree(source, tmp_path / REBUILT, ignore=shutil.ignore_patterns('results.*', '*.png'))
  result = _sweep(f'--report={tmp_path / REBUILT}')
  assert result.returncode == 0, result.stderr
  for name in ('results.md', 'results.csv'):
    with open(os.path.join(source, name), 'rb') as f:
      assert (tmp_path / REBUILT / name).read_bytes() == f.read(), name


def test_the_reissued_tables_are_what_reissue_writes():
  """The findings of the tables made before outcomes were kept are
  experiments/results/reissue.py's, from their results.csv."""
  rewritten = 0
  for name, spec in reissue.TABLES.items():
    with open(os.path.join(COMMITTED, name, 'results.md')) as f:
      text = f.read()
    start = text.find(reissue.FINDINGS)
    if start >= 0:
      assert text[start:] == '\n'.join(reissue.findings(reissue.measure(name, spec))) + '\n', name
      assert 'bootstrap over seeds' not in text, name
      rewritten += 1
  assert rewritten == 4


def _t_interval_from_csv(rows, comparison) -> tuple[float, float]:
  """Student-t 95 % interval of the seeds' paired differences in results.csv,
  computed here without albert_jax.sweep.stats."""
  column = report.METRIC_COLUMNS[comparison.metric]
  value = {(r['variant'], r['seed']): float(r[column]) for r in rows if r.get(column)}
  seeds = [s for (v, s) in value if v == comparison.ahead and (comparison.behind, s) in value]
  d = np.array([value[comparison.ahead, s] - value[comparison.behind, s] for s in seeds])
  half = scipy_stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
  return d.mean() - half, d.mean() + half


def test_every_committed_verdict_holds_by_a_t_interval_over_its_results_csv():
  """Each committed 'reproduced' (and 'not reproduced') agrees in sign with a
  Student-t interval over the seeds of its results.csv."""
  verdicts_seen = {'reproduced': 0, 'not reproduced': 0}
  for name in sorted(os.listdir(COMMITTED)):
    directory = os.path.join(COMMITTED, name)
    if not os.path.exists(os.path.join(directory, 'results.md')):
      continue
    with open(os.path.join(directory, 'results.md')) as f:
      cells = [[c.strip() for c in line.strip().strip('|').split('|')] for line in f]
    verdicts = [row for row in cells if row[-1].split(' (')[0] in verdicts_seen]
    if not verdicts:
      continue
    if name in reissue.TABLES:
      spec = os.path.join('experiments', 'ablations', reissue.TABLES[name])
    else:
      with open(os.path.join(directory, 'sweep.json')) as f:
        spec = json.load(f)['spec']
    sweep = variants.load_sweep(os.path.join(REPO, spec))
    by_variant = {v.name: v for v in sweep.variants}
    by_row = {}
    for c in sweep.comparisons:
      name = report.comparison_name(by_variant[c.ahead], by_variant[c.behind])
      by_row[name, report.METRIC_NAMES[c.metric]] = c
    with open(os.path.join(directory, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    for row in verdicts:
      comparison = by_row[row[0], row[1]]
      low, high = _t_interval_from_csv(rows, comparison)
      verdict = row[-1].split(' (')[0]
      if verdict == 'reproduced':
        assert low > -comparison.margin, (name, row[:2])
      else:
        assert high < -comparison.margin, (name, row[:2])
      verdicts_seen[verdict] += 1
  # Table 5's five at mini scale and its MLM one at tiny, Table 4 tiny's
  # downstream one, Table 3 tiny's not-shared E = 16 - E = 8; and Table 3
  # tiny's all-shared E = 16 - E = 32, the opposite direction.
  assert verdicts_seen == {'reproduced': 8, 'not reproduced': 1}


# -- The mini scale ---------------------------------------------------------


def test_mini_scale_fits_fifteen_minutes_of_this_cpu():
  from experiments.configs import pretrain

  assert [v.overrides['model.embedding_size'] for v in _mini('embedding_size').variants] == [
    64,
    128,
    256,
  ] * 2
  assert {v.overrides['model.embedding_size'] for v in _mini('sharing').variants} == {128, 256}
  assert _mini('sentence_objective').preset == 'mini'
  config = pretrain.get_config('mini')
  assert (config.model.hidden_size, config.data.max_seq_length) == (256, 128)
  assert 4 <= config.model.num_layers <= 6
  train = config.train
  # The FLOP/s mini's own step reaches on this 2-core CPU at the backend's
  # defaults: 0.65-0.75 s per step of 32 x 128 tokens at E = 128.
  budget = 15 * 60 * 1.2e11
  for variant in _mini('embedding_size').variants:
    run = pretrain.get_config('mini')
    run.update_from_flattened_dict({**variant.overrides, 'model.vocab_size': run.data.vocab_size})
    model = ModelConfig.from_config(run.model)
    per_example = flops.train_flops_per_example(model, 128, run.data.max_predictions_per_seq)
    # Training, the trainer's evaluations and the final one on SOP and NSP
    # examples (forward only: a third of a training step).
    evaluations = train.num_steps // train.eval_every + 2
    examples = train.batch_size * (train.num_steps + evaluations * train.eval_steps / 3)
    assert per_example * examples < 0.95 * budget, variant.name


def _mini(name: str) -> variants.Sweep:
  return variants.load_sweep(os.path.join(REPO, f'experiments/ablations/{name}.py:mini'))


# -- Downstream accuracy ----------------------------------------------------

# The tiny runs' fine-tuning: one shape (32 tokens), 4 steps of 16 rows.
_DOWNSTREAM_CONFIG = [
  '--downstream_config=data.max_seq_length=32',
  '--downstream_config=train.batch_size=16',
  '--downstream_config=train.num_epochs=1',
]
_DOWNSTREAM_FILES = ('downstream_result.json', 'downstream_outcomes.npz')


def _write_labelled(path: str, rows: int, seed: int) -> str:
  """A TSV with a header (text, label) whose label is told by one word."""
  rng = np.random.default_rng(seed)
  words = ('the', 'module', 'function', 'returns', 'a', 'list', 'of', 'values')
  lines = ['text\tlabel']
  for _ in range(rows):
    positive = bool(rng.integers(2))
    text = [*rng.choice(words, 5), 'yes' if positive else 'no', *rng.choice(words, 3)]
    lines.append(' '.join(text) + '\t' + ('pos' if positive else 'neg'))
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return path


_DOWNSTREAM_RUNS = ('nsp-seed0', 'sop-seed0')


def test_every_run_is_fine_tuned_scored_by_example_and_reported(tmp_path, vocab):
  """A tiny Table 5 sweep (NSP and SOP, one seed: the intervals are
  test_downstream_comparisons_pair_by_example_id_with_holm_verdicts) with a
  downstream task: a column of dev accuracies, per-example outcomes paired
  by id, a rerun that skips what was fine-tuned, a failed fine-tuning
  reported, and the report rebuilt from the files alone."""
  train = _write_labelled(str(tmp_path / 'train.tsv'), 64, seed=0)
  dev = _write_labelled(str(tmp_path / 'dev.tsv'), 40, seed=1)
  root = tmp_path / 'sweep'
  args = [
    f'--sweep={_spec("sentence_objective")}',
    f'--workdir={root}',
    '--only=nsp,sop',
    '--seeds=0',
    '--parallel=2',
    '--eval_batches=1',
    f'--downstream={train},{dev}',
    *_DOWNSTREAM_CONFIG,
    *_flags(vocab, 'sentence_objective', **{'train.num_steps': 2}),
  ]
  result = _sweep(*args)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  _check_downstream_column(root, train, dev)
  _check_downstream_rerun(root, args)
  # The committed files alone rebuild results.md byte for byte.
  committed = tmp_path / 'committed'
  committed.mkdir()
  shutil.copy(root / 'sweep.json', committed)
  for name in _DOWNSTREAM_RUNS:
    (committed / name).mkdir()
    for file in ('sweep_result.json', 'sweep_outcomes.npz', *_DOWNSTREAM_FILES):
      if (root / name / file).exists():
        shutil.copy(root / name / file, committed / name)
  result = _sweep(f'--report={committed}')
  assert result.returncode == 0, result.stderr
  assert (committed / 'results.md').read_bytes() == (root / 'results.md').read_bytes()


def _check_downstream_column(root, train: str, dev: str) -> None:
  """Each run's dev accuracy, in results.csv, is its fine-tuning run's own
  final one, from outcomes on the dev set's examples (by id); results.md has
  the column and the paper's downstream comparisons."""
  expected_ids = downstream.example_ids(classification.read_examples(dev))
  rows = _rows(str(root))
  assert sorted(row['run'] for row in rows) == sorted(_DOWNSTREAM_RUNS)
  for row in rows:
    workdir = os.path.join(root, row['run'])
    records = train_testing.read_metrics(os.path.join(workdir, 'downstream'))
    final = [r for r in records if 'eval_accuracy' in r][-1]
    assert float(row['downstream_accuracy']) == pytest.approx(final['eval_accuracy'])
    assert row['downstream_examples'] == '40'
    outcomes = downstream.read_outcomes(workdir)
    np.testing.assert_array_equal(outcomes['example_id'], expected_ids)
    assert outcomes['correct'].mean() == pytest.approx(final['eval_accuracy'])
  markdown = (root / 'results.md').read_text()
  assert '| Downstream acc. % |' in markdown
  assert f'Downstream: dev accuracy on `{dev}` of each run fine-tuned on `{train}`' in markdown
  compared = [line for line in markdown.splitlines() if '| downstream dev acc. |' in line]
  assert [line.split(' | ')[0] for line in compared] == [
    '| SOP − NSP (ALBERT tiny)',
    '| SOP − None (ALBERT tiny)',
  ]
  assert compared[0].endswith('| n/a |  | 1 × 40 | inconclusive (1 seed; 3 needed) |')
  assert compared[1].endswith('| not run: no --only chose none |')


def _check_downstream_rerun(root, args: list[str]) -> None:
  """Rerun: a run fine-tuned before is not fine-tuned again; one whose
  fine-tuning cannot start (its result gone, a file where its workdir
  should be) fails, reported, and the other is unaffected."""
  mtime = os.stat(root / 'sop-seed0' / 'downstream_outcomes.npz').st_mtime_ns
  (root / 'nsp-seed0' / 'downstream_result.json').unlink()
  shutil.rmtree(root / 'nsp-seed0' / 'downstream')
  (root / 'nsp-seed0' / 'downstream').write_text('a file where the fine-tuning should be')
  result = _sweep(*args)
  assert result.returncode == 1, result.stdout[-3000:]
  assert '[sop-seed0] finished before; fine-tuned before' in result.stdout
  assert 'launch.finetune --model=' + str(root / 'sop-seed0') not in result.stdout
  assert os.stat(root / 'sop-seed0' / 'downstream_outcomes.npz').st_mtime_ns == mtime
  assert '[nsp-seed0] finished before; fine-tuning failed: exit status 1' in result.stdout
  assert '1 run not fine-tuned\n  nsp-seed0 fine-tuning failed: exit status 1' in result.stdout
  assert 'Not fine-tuned: nsp-seed0.' in (root / 'results.md').read_text()
  rows = _rows(str(root))
  assert [r['run'] for r in rows if not r['downstream_accuracy']] == ['nsp-seed0']


def _fake_downstream(root, run: plan_lib.Run, correct, *, ids=None, predicted=None) -> None:
  """A run's downstream result and dev outcomes: hits `correct` on examples
  labelled alternately, with ids `ids` (default 0, 1, ...); `predicted`, the
  classes (default: the label where hit, the other where not)."""
  workdir = os.path.join(root, run.name)
  correct = np.asarray(correct, np.int8)
  label = np.arange(correct.size, dtype=np.int32) % 2
  if predicted is None:
    predicted = np.where(correct > 0, label, 1 - label)
  np.savez_compressed(
    os.path.join(workdir, 'downstream_outcomes.npz'),
    example_id=np.arange(correct.size, dtype=np.int64) if ids is None else ids,
    correct=correct,
    label=label,
    predicted=np.asarray(predicted, np.int32),
    classes=np.asarray(['neg', 'pos']),
  )
  result = {'accuracy': float(correct.mean()), 'examples': int(correct.size), 'step': 4}
  with open(os.path.join(workdir, 'downstream_result.json'), 'w') as f:
    json.dump(result, f)


def _downstream_rows(root) -> dict[str, list[str]]:
  """The downstream comparisons of results.md, by comparison name."""
  return {
    line.split(' | ')[0].removeprefix('| '): line.split(' | ')
    for line in (root / 'results.md').read_text().splitlines()
    if '| downstream dev acc. |' in line
  }


def test_downstream_comparisons_pair_by_example_id_with_holm_verdicts(tmp_path):
  task = plan_lib.Downstream('train.tsv', 'dev.tsv', ('train.num_epochs=1',))
  plan = dataclasses.replace(_plan('sentence_objective', seeds=(0, 1, 2)), downstream=task)
  plan.save(str(tmp_path))
  rng = np.random.default_rng(3)
  for run in plan.runs:
    _fake_run(
      tmp_path, run, rng.binomial(8, 0.25, 300), np.full(300, 8.0), rng.binomial(1, 0.7, 300)
    )
    p = {'none': 0.55, 'nsp': 0.6, 'sop': 0.8}[run.variant]
    _fake_downstream(tmp_path, run, rng.binomial(1, p, 500))
  report.write_report(plan, str(tmp_path))
  rows = _downstream_rows(tmp_path)
  assert list(rows) == ['SOP − NSP (ALBERT tiny)', 'SOP − None (ALBERT tiny)']
  sop_nsp = rows['SOP − NSP (ALBERT tiny)']
  assert sop_nsp[6:] == ['3 × 500', 'reproduced |']
  # Student-t over the seeds' dev accuracy differences (the same examples).
  seeds = {}
  for row in _rows(str(tmp_path)):
    seeds.setdefault(row['seed'], {})[row['variant']] = float(row['downstream_accuracy'])
  d = np.array([v['sop'] - v['nsp'] for v in seeds.values()])
  low, high = (float(x) for x in sop_nsp[4].strip('[]').split(', '))
  assert (low, high) == pytest.approx([100 * x for x in stats.t_interval(d)[1:]], abs=0.006)
  # Corrected with the table's other comparisons: 5 sentence and MLM ones, 2 downstream.
  assert float(sop_nsp[5]) >= stats.p_value(stats.paired(d, 500))
  markdown = (tmp_path / 'results.md').read_text()
  assert '| Downstream acc. % |' in markdown and '`train.num_epochs=1`' in markdown
  assert "Chance is the dev set's majority class, 50.0 %; over 500 examples" in markdown
  # Other examples: not paired. A classifier giving one class: no verdict.
  sop0 = next(run for run in plan.runs if run.name == 'sop-seed1')
  _fake_downstream(tmp_path, sop0, rng.binomial(1, 0.8, 500), ids=np.arange(500) + 1)
  report.write_report(plan, str(tmp_path))
  assert _downstream_rows(tmp_path)['SOP − NSP (ALBERT tiny)'][3:] == [
    'n/a',
    '',
    '',
    '',
    'not paired: sop-seed1 and nsp-seed1 were evaluated on different examples |',
  ]
  _fake_downstream(tmp_path, sop0, np.arange(500) % 2 == 0, predicted=np.zeros(500))
  report.write_report(plan, str(tmp_path))
  assert _downstream_rows(tmp_path)['SOP − None (ALBERT tiny)'][-1] == (
    'no verdict: the classifier of sop-seed1 gives one class to every example |'
  )
  assert 'One class to every dev example (no verdict where one is ahead): sop-seed1.' in (
    (tmp_path / 'results.md').read_text()
  )
  # Without a downstream task, neither the column nor its comparisons.
  report.write_report(dataclasses.replace(plan, downstream=None), str(tmp_path))
  assert 'ownstream' not in (tmp_path / 'results.md').read_text()


def test_a_sweep_keeps_its_downstream_task(tmp_path):
  task = plan_lib.Downstream('train.tsv', 'dev.tsv')
  plan = dataclasses.replace(_plan('sentence_objective'), downstream=task)
  plan.save(str(tmp_path))
  # Left out later, the saved task holds; another is refused.
  assert dataclasses.replace(plan, downstream=None).save(str(tmp_path)).downstream == task
  assert plan_lib.load_plan(str(tmp_path)).downstream == task
  other = dataclasses.replace(plan, downstream=plan_lib.Downstream('train.tsv', 'other.tsv'))
  with pytest.raises(SweepError, match='was fine-tuned on --downstream=train.tsv,dev.tsv'):
    other.save(str(tmp_path))
  run = plan.runs[1]
  assert plan.finetune_arguments(run, '/s') == [
    f'--model=/s/{run.name}',
    '--task=classification',
    f'--workdir=/s/{run.name}/downstream',
    '--config.data.train=train.tsv',
    '--config.data.eval=dev.tsv',
    f'--config.train.seed={run.seed}',
    f'--config.data.seed={run.seed}',
  ]
