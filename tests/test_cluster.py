"""Cluster recipes (albert_jax/cluster.py, launch.cluster) and the accelerator
requirement files (requirements-gpu.txt, requirements-tpu.txt).

The TPU commands run here with bash standing in for a worker (gcloud is not
needed); the SLURM script runs on a real scheduler in test_slurm.py.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import pytest

from albert_jax import cluster, memory_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _remote(command: list[str]) -> str:
  """The shell line a `gcloud ... ssh --command=LINE` runs on every worker."""
  assert command[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh'], command
  (line,) = [arg.removeprefix('--command=') for arg in command if arg.startswith('--command=')]
  return line


def test_tpu_recipe_copies_the_code_installs_and_runs_one_process_per_worker():
  commands = cluster.tpu_commands(
    tpu='pod',
    zone='us-central2-b',
    project='proj',
    repo_dir='~/albert-jax',
    install=True,
    command=cluster.pretrain_command('CFG:base', '/mnt/run', ['--x=1']),
    setup='source ~/venv/bin/activate',
  )
  tar, scp, install, run = commands
  assert tar[:2] == ['tar', '-czf'] and tar[-len(cluster.CODE) :] == list(cluster.CODE)
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert scp[5:7] == ['/tmp/albert-jax-code.tar.gz', 'pod:albert-jax-code.tar.gz']
  for command in (scp, install, run):
    assert {'--zone=us-central2-b', '--project=proj', '--worker=all'} <= set(command)
  assert install[5] == run[5] == 'pod'
  assert _remote(install).endswith(
    '&& cd ~/albert-jax && source ~/venv/bin/activate '
    '&& python -m pip install -q -r requirements-tpu.txt'
  )
  # Without a log name: in the foreground, as `launch.sweep --emit=tpu` chains runs.
  assert _remote(run) == (
    'cd ~/albert-jax && source ~/venv/bin/activate && python -m launch.pretrain '
    '--config=CFG:base --workdir=/mnt/run --distributed --x=1'
  )
  # The code's first-party packages (pyproject.toml's isort list) all travel.
  assert {'albert_jax', 'launch', 'experiments', 'requirements-tpu.txt'} <= set(cluster.CODE)


def test_tpu_worker_gets_only_the_code_and_the_run_detaches_with_its_log(tmp_path):
  """The commands as a worker runs them: bash in a home directory of its own."""
  source, home = tmp_path / 'source', tmp_path / 'home'
  files = [
    'albert_jax/model.py',
    'albert_jax/__pycache__/model.cpython-311.pyc',
    'launch/pretrain.py',
    'experiments/configs/pretrain.py',
    'pyproject.toml',
    'requirements.txt',
    'requirements-tpu.txt',
    'runs/base/checkpoints/4/state',
    '.git/HEAD',
  ]
  for path in files:
    (source / path).parent.mkdir(parents=True, exist_ok=True)
    (source / path).write_text(path)
  home.mkdir()
  release = tmp_path / 'release'
  program = (
    'import os, time\n'
    "print('step 1/2', flush=True)\n"
    f'while not os.path.exists({str(release)!r}): time.sleep(0.05)\n'
    "print('done', flush=True)\n"
  )
  tar, scp, install, run = cluster.tpu_commands(
    tpu='pod',
    zone='z',
    project=None,
    repo_dir='~/albert-jax',
    install=True,
    command=[sys.executable, '-c', program],
    # Stands in for pip: records how it was called, and where.
    setup='python() { echo "$PWD $*" > ~/pip.txt; }',
    source_dir=str(source),
    log_name='base',
  )
  archive = str(tmp_path / 'code.tar.gz')
  subprocess.run([archive if arg == tar[2] else arg for arg in tar], check=True)
  with tarfile.open(archive) as f:
    tops = {name.split('/')[0] for name in f.getnames()}
    assert not any('__pycache__' in name for name in f.getnames())
  assert tops == set(cluster.CODE)  # Not runs/, not .git.
  (destination,) = [arg.removeprefix('pod:') for arg in scp if arg.startswith('pod:')]
  shutil.copy(archive, home / destination)  # The copy gcloud's scp makes.

  def worker(line: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'HOME': str(home)}
    return subprocess.run(
      ['bash', '-c', line], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )

  installed = worker(_remote(install))
  assert installed.returncode == 0, installed.stderr
  assert sorted(os.listdir(home)) == ['albert-jax', 'pip.txt']  # The archive is removed.
  assert set(os.listdir(home / 'albert-jax')) == set(cluster.CODE)
  assert (home / 'pip.txt').read_text() == (
    f'{home}/albert-jax -m pip install -q -r requirements-tpu.txt\n'
  )

  # The ssh returns while the run goes on (it waits for `release`).
  started = worker(_remote(run))
  assert started.returncode == 0, started.stderr
  (log,) = glob.glob(str(home / 'albert-jax' / 'logs' / 'base-*.log'))
  hostname = os.path.basename(log).removeprefix('base-').removesuffix('.log')
  assert started.stdout.startswith(f'{hostname}: started (pid ')
  assert started.stdout.rstrip().endswith(f'log ~/albert-jax/logs/base-{hostname}.log')
  release.touch()
  deadline = time.monotonic() + 60
  while 'done' not in open(log).read() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert open(log).read() == 'step 1/2\ndone\n'

  follow = cluster.tpu_follow_lines(
    tpu='pod', zone='z', project=None, repo_dir='~/albert-jax', log_name='base'
  )
  assert follow[1] == (
    'gcloud compute tpus tpu-vm ssh pod --zone=z --worker=0 '
    "'--command=tail -f ~/albert-jax/logs/base-$(hostname).log'"
  )


def test_slurm_script_runs_one_task_per_gpu_and_checkpoints_before_the_limit():
  script = cluster.sbatch_script(
    nodes=2,
    gpus_per_node=4,
    time='1:00:00',
    partition='gpu',
    account=None,
    job_name='albert',
    repo_dir='"$SLURM_SUBMIT_DIR"',
    command=cluster.pretrain_command('CFG:large', '/shared/run', []),
  )
  lines = script.splitlines()
  assert lines[0] == '#!/bin/bash'
  for option in (
    '--nodes=2',
    '--ntasks-per-node=4',
    '--gpus-per-node=4',
    '--signal=TERM@120',
    '--requeue',
    '--partition=gpu',
  ):
    assert f'#SBATCH {option}' in lines
  assert not any(word in script for word in ('--account', '--cpus-per-task', '--exclusive'))
  assert not any('--gpus-per-task' in line for line in lines if line.startswith('#SBATCH'))
  # The wording of the loop's preemption line, which the job's log will show.
  assert "'preempted at step N: checkpoint saved' and exit 0" in script
  assert lines[-3:] == [
    'set -euo pipefail',
    'cd "$SLURM_SUBMIT_DIR"',
    'srun --kill-on-bad-exit=1 python -m launch.pretrain --config=CFG:large '
    '--workdir=/shared/run --distributed',
  ]


def test_slurm_script_setup_cpus_and_exclusive():
  script = cluster.sbatch_script(
    nodes=1,
    gpus_per_node=2,
    time='10:00',
    partition=None,
    account='lab',
    job_name='albert',
    repo_dir='/code',
    command=['python', '-m', 'launch.pretrain'],
    setup='source venv/bin/activate',
    cpus_per_task=12,
    exclusive=True,
  )
  lines = script.splitlines()
  assert {'#SBATCH --cpus-per-task=12', '#SBATCH --exclusive', '#SBATCH --account=lab'} <= set(
    lines
  )
  # Every #SBATCH line before the first command, or sbatch ignores it.
  first_command = lines.index('set -euo pipefail')
  assert all(not line.startswith('#SBATCH') for line in lines[first_command:])
  assert lines[first_command:] == [
    'set -euo pipefail',
    'cd /code',
    'set +u',
    'source venv/bin/activate',
    'set -u',
    'srun --kill-on-bad-exit=1 python -m launch.pretrain',
  ]


def _cluster(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'launch.cluster', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
    env={**os.environ, 'PATH': ''},
  )  # No gcloud / sbatch reachable.


@pytest.mark.parametrize(
  'target, expected',
  [
    (['--target=slurm', '--nodes=2'], 'srun --kill-on-bad-exit=1 python -m launch.pretrain'),
    (['--target=tpu', '--tpu=pod', '--zone=z'], 'gcloud compute tpus tpu-vm ssh pod'),
  ],
)
def test_cluster_dry_run_prints_and_runs_nothing(target, expected):
  process = _cluster(
    *target,
    '--workdir=/shared/run',
    '--dry_run',
    '--config.train.batch_size=64',
    '--config.train.optimizer',
    'adamw',
  )
  assert process.returncode == 0, process.stderr
  assert expected in process.stdout
  assert (
    '--config=experiments/configs/pretrain.py:base --workdir=/shared/run '
    '--distributed --config.train.batch_size=64 --config.train.optimizer '
    'adamw'
  ) in process.stdout


def test_cluster_tpu_dry_run_detaches_and_says_how_to_follow():
  process = _cluster(
    '--target=tpu', '--tpu=pod', '--zone=z', '--workdir=/shared/runs/base/', '--dry_run'
  )
  assert process.returncode == 0, process.stderr
  lines = process.stdout.splitlines()
  assert lines[0].startswith(
    f'tar -czf /tmp/albert-jax-code.tar.gz --exclude=__pycache__ -C {REPO} albert_jax '
  )
  assert '> logs/base-$(hostname).log 2>&1 < /dev/null & }' in lines[3]
  assert lines[4] == (
    '# Running detached; each worker logs to ~/albert-jax/logs/base-$(hostname).log. '
    'Follow worker 0:'
  )
  assert lines[5].endswith("--worker=0 '--command=tail -f ~/albert-jax/logs/base-$(hostname).log'")


def test_cluster_slurm_flags_reach_the_script():
  process = _cluster(
    '--target=slurm',
    '--workdir=/w',
    '--dry_run',
    '--setup=source venv/bin/activate',
    '--cpus_per_task=8',
    '--exclusive',
  )
  assert process.returncode == 0, process.stderr
  lines = process.stdout.splitlines()
  assert {'#SBATCH --cpus-per-task=8', '#SBATCH --exclusive', 'source venv/bin/activate'} <= set(
    lines
  )
  bad = _cluster('--target=slurm', '--workdir=/w', '--dry_run', '--cpus_per_task=0')
  assert bad.returncode == 1 and bad.stderr == 'error: --cpus_per_task must be >= 1\n'


def test_cluster_checks_the_overrides_here():
  process = _cluster('--target=slurm', '--workdir=/w', '--dry_run', '--config.train.batch_sise=64')
  assert process.returncode == 1 and not process.stdout
  assert process.stderr.startswith(
    'error: unknown config key --config.train.batch_sise (Did you mean'
  )


def test_cluster_overrides_after_double_dash_still_work_with_a_warning():
  process = _cluster(
    '--target=slurm',
    '--workdir=/w',
    '--dry_run',
    '--config=experiments/configs/pretrain.py:tiny',
    '--',
    '--config.train.batch_size=64',
  )
  assert process.returncode == 0, process.stderr
  assert process.stderr == ('warning: arguments after -- are deprecated; pass --config.KEY=VALUE\n')
  assert (
    '--config=experiments/configs/pretrain.py:tiny --workdir=/w '
    '--distributed --config.train.batch_size=64'
  ) in process.stdout


def test_cluster_without_required_flags_is_one_line():
  process = subprocess.run(
    [sys.executable, '-m', 'launch.cluster', '--target=tpu', '--workdir=/w', '--dry_run'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert process.returncode == 1
  assert process.stderr.strip() == 'error: --target=tpu needs --tpu=NAME and --zone=ZONE'


def _pypi_reachable() -> bool:
  try:
    socket.create_connection(('pypi.org', 443), timeout=5).close()
  except OSError:
    return False
  return True


# The accelerator build each file adds to requirements.txt's CPU pins.
_ACCELERATOR = {'requirements-gpu.txt': 'jax-cuda12-plugin', 'requirements-tpu.txt': 'libtpu'}


@pytest.mark.skipif(not _pypi_reachable(), reason='PyPI is not reachable')
@pytest.mark.parametrize('name', sorted(_ACCELERATOR))
def test_accelerator_requirements_resolve_with_the_pinned_jax(name, tmp_path):
  """pip's resolver, nothing installed: the accelerator build and the jax
  pins of requirements.txt agree (one jax, one jaxlib). The rest of
  requirements.txt is what every install (CI's too) resolves already, so
  only the accelerator lines and the jax pins are resolved here."""
  with open(os.path.join(REPO, name)) as f:
    lines = [line for line in f.read().splitlines() if line and not line.startswith('#')]
  assert lines[0] == '-r requirements.txt'
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    pins = dict(line.split('==') for line in f.read().splitlines() if line.startswith('jax'))
  report = tmp_path / 'report.json'
  process = subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'install',
      '--dry-run',
      '--ignore-installed',
      '--quiet',
      '--timeout=60',
      f'--report={report}',
      *lines[1:],
      *(f'{package}=={version}' for package, version in pins.items()),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert process.returncode == 0, process.stderr[-3000:]
  with open(report) as f:
    versions = {
      item['metadata']['name'].lower(): item['metadata']['version']
      for item in json.load(f)['install']
    }
  assert versions['jax'] == pins['jax'] and versions['jaxlib'] == pins['jaxlib']
  assert _ACCELERATOR[name] in versions, versions
  if name == 'requirements-gpu.txt':  # The CUDA plugin is released with jax.
    assert versions['jax-cuda12-plugin'] == pins['jax']


def test_memory_plan_command_compiles_the_run_for_the_slice():
  assert cluster.memory_plan_command(
    'experiments/configs/pretrain.py:base', ['--config.train.batch_size=64'], 'v4:4x4x4'
  ) == [
    'python',
    '-m',
    'launch.memory_plan',
    '--config=experiments/configs/pretrain.py:base',
    '--config.train.batch_size=64',
    '--topology=v4:4x4x4',
    '--json',
  ]


def _check_topology(topology: str, *overrides: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.cluster',
      '--target=tpu',
      '--tpu=pod',
      '--zone=z',
      '--workdir=/shared/tiny',
      '--dry_run',
      '--config=experiments/configs/pretrain.py:tiny',
      f'--check_topology={topology}',
      *overrides,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, 'PATH': ''},
  )


@pytest.mark.skipif(not memory_plan.libtpu_installed(), reason='libtpu is not installed')
def test_cluster_tpu_dry_run_checks_the_step_compiles_for_the_slice():
  process = _check_topology('v5e:4x4', '--config.train.batch_size=32')
  assert process.returncode == 0, process.stderr[-3000:]
  lines = process.stdout.splitlines()
  assert lines[0].startswith('# python -m launch.memory_plan --config=experiments/configs/')
  assert lines[1].startswith(
    '# checked: the train step compiles for v5e:4x4 (16 devices, 4 hosts) and needs '
  )
  assert 'estimates' in lines[1] and 'GiB per device' in lines[1]
  assert lines[2].startswith('tar -czf ')
  # A micro-batch each host cannot take its share of; a step over the HBM.
  hosts = _check_topology('v5e:16x16')
  assert hosts.returncode == 1 and 'tar -czf' not in hosts.stdout
  assert hosts.stderr.strip().splitlines() == [
    'error: --check_topology=v5e:16x16: the train step does not compile: a micro-batch of 16 '
    'examples does not split over the 64 hosts of v5e:16x16: change '
    '--config.train.batch_size or grad_accum_steps'
  ]
  big = _check_topology(
    'v5e:2x2', '--config.train.batch_size=65536', '--config.train.grad_accum_steps=1'
  )
  assert big.returncode == 1 and 'tar -czf' not in big.stdout
  (line,) = big.stderr.strip().splitlines()
  assert line.startswith('error: --check_topology=v5e:2x2: the train step does not fit: ')
  assert 'exceeds available HBM' in line
