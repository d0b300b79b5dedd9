"""launch.sweep: the three ablation sweeps end to end on a tiny model, a
killed sweep resumed, a failing run, --emit, --report, bad input."""

import csv
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from albert_jax.config import ModelConfig
from albert_jax.param_count import count_params
from albert_jax.sweep import plan as plan_lib
from albert_jax.sweep import variants

import export_testing
import train_testing

REPO = export_testing.REPO
SWEEPS = ('embedding_size', 'sharing', 'sentence_objective')
REPORT_FILES = ('results.csv', 'results.md', 'mlm_accuracy.png', 'params.png')


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
  """{sweep: (workdir, stdout)}: each sweep run for 2 steps, evaluated on one
  batch; sentence_objective evaluates during training too (for the curves)."""
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
        '--eval_batches=1',
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
def test_every_variant_is_trained_evaluated_and_reported(swept, vocab, name):
  workdir, stdout = swept[name]
  sweep = _sweep_of(name)
  rows = _rows(workdir)
  assert [row['run'] for row in rows] == [v.name for v in sweep.variants]
  for row, variant in zip(rows, sweep.variants):
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
  assert len({row['params'] for row in rows}) == (1 if name == 'sentence_objective' else len(rows))
  with open(os.path.join(workdir, 'results.md')) as f:
    table = f.read().splitlines()
  body = [line for line in table if line.startswith('| ')][1:]
  assert [line.split(' | ')[1] for line in body] == [v.label for v in sweep.variants]
  groups = [line.split(' | ')[0].removeprefix('| ') for line in body]
  assert [g for g in groups if g] == list(dict.fromkeys(v.group for v in sweep.variants))
  for png in REPORT_FILES[2:]:
    with open(os.path.join(workdir, png), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


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
  commands = [line for line in result.stdout.splitlines() if not line.startswith('#')]
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


def test_emit_cluster_scripts(tmp_path):
  root = str(tmp_path / 'sharing')
  slurm = _sweep(
    f'--sweep={_spec("sharing")}',
    f'--workdir={root}',
    '--emit=slurm',
    '--nodes=2',
    '--partition=gpu',
    '--seeds=0,1',
  )
  assert slurm.returncode == 0, slurm.stderr
  lines = slurm.stdout.splitlines()
  runs = [line for line in lines if line.startswith('srun ')]
  assert lines.count("sbatch <<'EOF'") == lines.count('EOF') == len(runs) == 16
  assert runs[0] == (
    'srun --kill-on-bad-exit=1 python -m launch.pretrain --config=experiments/configs/pretrain.py:'
    f'tiny --workdir={root}/E64-all-seed0 --distributed '
    '--config.model.embedding_size=64 --config.model.sharing=all '
    '--config.train.seed=0 --config.data.seed=0'
  )
  assert '#SBATCH --nodes=2' in lines and '#SBATCH --partition=gpu' in lines

  tpu = _sweep(
    f'--sweep={_spec("sentence_objective")}',
    f'--workdir={tmp_path}/so',
    '--emit=tpu',
    '--tpu=pod',
    '--zone=us-central2-b',
  )
  assert tpu.returncode == 0, tpu.stderr
  commands = [line for line in tpu.stdout.splitlines() if line.startswith('gcloud')]
  assert [c.split()[4] for c in commands] == ['scp', 'ssh'] + ['ssh'] * 3
  assert all('--zone=us-central2-b' in c for c in commands)
  assert commands[-1].endswith(
    f"--workdir={tmp_path}/so/sop --distributed --config.data.sentence_objective=sop'"
  )
  # The plan is saved for --report, which has nothing to report yet.
  export_testing.assert_one_line_error(_sweep(f'--report={tmp_path}/so'), 'has no finished runs')


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
      "unknown scale 'huge': choose one of tiny, base",
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
