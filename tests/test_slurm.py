"""SLURM end to end: the script `launch.cluster --target=slurm` emits, run by a
real scheduler and requeued mid-run, ends on the losses of a one-process run.

The test starts a one-node cluster of its own in a temporary directory: munged
with a key it makes, slurmctld and slurmd on free ports (as children of this
process, in the foreground), the node being this host with two GPUs that only
count (JAX runs on the CPU). It needs root and the OS's `slurm-wlm` and
`munge` (`.ci/install_slurm` installs them), and is skipped without them.

The job's two tasks (one per GPU, as the script asks) join through JAX's SLURM
detection, each with 2 CPU devices. After the first checkpoint the test
requeues the job; the tasks agree on a step, checkpoint there and exit, and
the requeued job resumes from that checkpoint to the end.
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import pytest

from albert_jax import pretraining
from albert_jax.train.config import PretrainConfig

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPUS = 2  # On the node, so tasks: one per GPU.
# A checkpoint every 5 steps: one is on disk when the job is requeued (after
# step 6), and enough steps are left for the preemption notice to take effect
# (JAX notices SIGTERM within a second) however fast the steps are.
SETTINGS = {'train.num_steps': 80, 'checkpoint.every_steps': 5}
COMMANDS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'scontrol', 'sinfo', 'squeue', 'scancel')
ACTIVE = ('PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING')


def _which(name: str) -> str | None:
  return shutil.which(name, path=f'{os.environ.get("PATH", "")}:/usr/sbin:/sbin')


pytestmark = [
  pytest.mark.skipif(
    any(_which(c) is None for c in COMMANDS),
    reason='SLURM (slurmctld, slurmd, sbatch) or munge is not installed: run .ci/install_slurm',
  ),
  pytest.mark.skipif(os.geteuid() != 0, reason='starting slurmd and munged needs root'),
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _read(path: str) -> str:
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    return f.read()


def _wait(
  predicate: Callable[[], bool], what: str, describe: Callable[[], str], timeout: float, every=0.2
) -> None:
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError(f'waited {timeout} s for {what}\n{describe()}')
    time.sleep(every)


class Cluster:
  """munged, slurmctld and slurmd for one node (this host), all their files
  under `root`."""

  def __init__(self, root: str):
    self.root = root
    self.conf = os.path.join(root, 'slurm.conf')
    self.daemons: list[tuple[str, subprocess.Popen]] = []
    # The SLURM commands and the job talk to this cluster, not to one the
    # host may belong to, nor as part of an enclosing job.
    env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'SBATCH_'))}
    self.env = {**env, 'SLURM_CONF': self.conf}

  def start(self) -> None:
    os.makedirs(self.root, mode=0o700)
    for name in ('state', 'spool', 'munge', 'dev'):
      os.makedirs(os.path.join(self.root, name), mode=0o700)
    key = os.path.join(self.root, 'munge', 'munge.key')
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o400), 'wb') as f:
      f.write(secrets.token_bytes(1024))
    munge_socket = os.path.join(self.root, 'munge', 'socket')
    self._start(
      'munged',
      '--foreground',
      '--force',  # Whatever the permissions of the directories above.
      f'--key-file={key}',
      f'--socket={munge_socket}',
      f'--pid-file={self.root}/munge/munged.pid',
      f'--seed-file={self.root}/munge/munged.seed',
      f'--log-file={self.root}/munge/munged.log',
    )
    _wait(lambda: os.path.exists(munge_socket), 'munged', self.logs, 30)
    self._configure(munge_socket)
    self._start('slurmctld', '-D', '-i', '-f', self.conf)
    self._start('slurmd', '-D', '-f', self.conf)
    _wait(self._idle, 'the node to be idle', self.logs, 60)

  def _configure(self, munge_socket: str) -> None:
    # This host as slurmd sees it: NodeName=HOSTNAME CPUs=... RealMemory=...
    node = subprocess.run(
      [_which('slurmd'), '-C'], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()[0]
    host = re.match(r'NodeName=(\S+)', node)[1]
    settings = {
      'ClusterName': 'albert-test',
      'SlurmctldHost': f'{host}(127.0.0.1)',
      'SlurmctldPort': _free_port(),
      'SlurmdPort': _free_port(),
      'SlurmUser': 'root',
      'SlurmdUser': 'root',
      'AuthType': 'auth/munge',
      'CredType': 'cred/munge',
      'AuthInfo': f'socket={munge_socket}',
      'StateSaveLocation': f'{self.root}/state',
      'SlurmdSpoolDir': f'{self.root}/spool',
      'SlurmctldPidFile': f'{self.root}/slurmctld.pid',
      'SlurmdPidFile': f'{self.root}/slurmd.pid',
      'SlurmctldLogFile': f'{self.root}/slurmctld.log',
      'SlurmdLogFile': f'{self.root}/slurmd.log',
      # No cgroups: processes tracked by their parents, tasks not confined.
      'ProctrackType': 'proctrack/linuxproc',
      'TaskPlugin': 'task/none',
      'SelectType': 'select/cons_tres',
      'SelectTypeParameters': 'CR_CPU',
      'GresTypes': 'gpu',
      'JobRequeue': 1,
      'ReturnToService': 2,
      'MpiDefault': 'none',
      'SwitchType': 'switch/none',
      'JobAcctGatherType': 'jobacct_gather/none',
      'AccountingStorageType': 'accounting_storage/none',
      'JobCompType': 'jobcomp/none',
      'SchedulerType': 'sched/builtin',
      'InactiveLimit': 0,
      'KillWait': 60,  # From SIGTERM to SIGKILL: time to agree on a step and save.
    }
    lines = [f'{k}={v}' for k, v in settings.items()]
    lines += [
      f'{node} NodeAddr=127.0.0.1 Gres=gpu:{GPUS} State=UNKNOWN',
      f'PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP',
    ]
    with open(self.conf, 'w') as f:
      f.write('\n'.join(lines) + '\n')
    # SLURM 22.05's gres/gpu drops GPUs declared by Count alone (no File):
    # character devices like /dev/null stand for them (no cgroup uses them).
    null = os.stat('/dev/null').st_rdev
    for i in range(GPUS):
      os.mknod(os.path.join(self.root, 'dev', f'gpu{i}'), 0o666 | stat.S_IFCHR, null)
    with open(os.path.join(self.root, 'gres.conf'), 'w') as f:
      f.write(f'NodeName={host} Name=gpu File={self.root}/dev/gpu[0-{GPUS - 1}]\n')

  def _start(self, name: str, *args: str) -> None:
    with open(os.path.join(self.root, f'{name}.out'), 'w') as out:
      process = subprocess.Popen(
        [_which(name), *args],
        env=self.env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
      )
    self.daemons.append((name, process))

  def _idle(self) -> bool:
    for name, process in self.daemons:
      if process.poll() is not None:
        raise AssertionError(f'{name} exited with status {process.returncode}\n{self.logs()}')
    return self.run('sinfo', '--noheader', '--format=%T', check=False).stdout.strip() == 'idle'

  def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """A SLURM command, for this cluster."""
    process = subprocess.run(
      [_which(command[0]), *command[1:]], env=self.env, capture_output=True, text=True, timeout=60
    )
    if check and process.returncode:
      raise AssertionError(
        f'{command} exited with status {process.returncode}: {process.stderr}\n{self.logs()}'
      )
    return process

  def job(self, job_id: str) -> dict[str, str]:
    """`scontrol show job`'s fields."""
    text = self.run('scontrol', '--oneliner', 'show', 'job', job_id).stdout
    return dict(re.findall(r'(\w+)=(\S*)', text))

  def logs(self) -> str:
    """The end of the daemons' logs, for assertion messages."""
    text = []
    for name in ('slurmctld.log', 'slurmd.log', 'munge/munged.log'):
      lines = _read(os.path.join(self.root, name)).splitlines()[-30:]
      text += [f'--- {name}', *lines] if lines else []
    for name, _ in self.daemons:
      lines = _read(os.path.join(self.root, f'{name}.out')).splitlines()[-10:]
      text += [f'--- {name} output', *lines] if lines else []
    return '\n'.join(text)

  def pids(self) -> list[int]:
    """The processes this cluster started, the job's included: those whose
    environment names its configuration."""
    marker = f'SLURM_CONF={self.conf}'.encode()
    pids = []
    for entry in os.listdir('/proc'):
      if entry.isdigit() and int(entry) != os.getpid():
        with contextlib.suppress(OSError), open(f'/proc/{entry}/environ', 'rb') as f:
          if marker in f.read().split(b'\0'):
            pids.append(int(entry))
    return pids

  def stop(self) -> None:
    """Cancels the jobs, stops the daemons (the newest first), then kills
    whatever of the cluster is left."""
    if any(name == 'slurmctld' and p.poll() is None for name, p in self.daemons):
      with contextlib.suppress(Exception):
        self.run('scancel', '--full', '--user=root', check=False)
        _wait(
          lambda: not self.run('squeue', '--noheader', check=False).stdout.strip(),
          'the jobs to end',
          lambda: '',
          30,
        )
    for _, process in reversed(self.daemons):
      if process.poll() is None:
        process.terminate()
        try:
          process.wait(timeout=10)
        except subprocess.TimeoutExpired:
          process.kill()
          process.wait()
    for pid in self.pids():
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
  cluster = Cluster(str(tmp_path / 'slurm'))
  try:
    cluster.start()
    yield cluster
  finally:
    cluster.stop()


def _tasks(cluster: Cluster, job_id: str) -> list[int]:
  """The pids of the job's training processes (the tasks of its step 0)."""
  pids = []
  for pid in cluster.pids():
    with contextlib.suppress(OSError):
      with open(f'/proc/{pid}/environ', 'rb') as f:
        environ = set(f.read().split(b'\0'))
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        command = f.read().split(b'\0')
      if {f'SLURM_JOB_ID={job_id}'.encode(), b'SLURM_STEP_ID=0'} <= environ and (
        b'launch.pretrain' in command
      ):
        pids.append(pid)
  return pids


def _terminating(pid: int) -> bool:
  """Whether stopped process `pid` has SIGTERM pending, runs again or is gone."""
  try:
    with open(f'/proc/{pid}/status') as f:
      status = dict(line.split(':', 1) for line in f if ':' in line)
  except OSError:
    return True
  pending = int(status['SigPnd'], 16) | int(status['ShdPnd'], 16)
  return bool(pending & 1 << (signal.SIGTERM - 1)) or not status['State'].strip().startswith('T')


def test_slurm_job_requeued_mid_run_ends_on_the_one_process_losses(cluster, vocab, tmp_path):
  # --setup puts this interpreter first on the PATH, as activating a virtual
  # environment would; the rest of the environment goes with the job.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
  (bin_dir / 'python').chmod(0o755)
  (tmp_path / 'activate').write_text(f'export PATH="{bin_dir}:$PATH"\n')
  submit_dir = tmp_path / 'submit'  # The job's output goes there.
  submit_dir.mkdir()
  workdir = str(tmp_path / 'run')
  submitted = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.cluster',
      '--target=slurm',
      '--nodes=1',
      f'--gpus_per_node={GPUS}',
      '--cpus_per_task=1',
      '--exclusive',
      '--time=10:00',
      '--job_name=albert-test',
      f'--setup=source {tmp_path}/activate',
      f'--repo_dir={REPO}',
      f'--workdir={workdir}',
      f'--config={REPO}/experiments/configs/pretrain.py:tiny',
      *train_testing.tiny_flags(vocab, **SETTINGS),
    ],
    cwd=submit_dir,
    env={
      **cluster.env,
      'PYTHONPATH': REPO,
      'PYTHONUNBUFFERED': '1',
      'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    },
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert submitted.returncode == 0, f'{submitted.stdout}{submitted.stderr}\n{cluster.logs()}'
  job_id = re.search(r'^Submitted batch job (\d+)$', submitted.stdout, re.MULTILINE)[1]
  output = cluster.job(job_id)['StdOut']

  def describe() -> str:
    job = ' '.join(f'{k}={v}' for k, v in cluster.job(job_id).items())
    return f'--- job\n{job}\n--- job output\n{_read(output)}\n{cluster.logs()}'

  def job() -> dict[str, str]:
    if 'Traceback' in _read(output):  # The other task would wait for the failed one.
      raise AssertionError(f'a task failed\n{describe()}')
    return cluster.job(job_id)

  def requeued(states: Callable[[str], bool]) -> Callable[[], bool]:
    """Whether the job has been requeued and is in a state `states` accepts."""
    return lambda: (j := job())['Restarts'] != '0' and states(j['JobState'])

  def past_a_checkpoint() -> bool:
    assert job()['JobState'] in ACTIVE, describe()
    steps = re.findall(r'^step (\d+)/', _read(output), re.MULTILINE)
    return bool(steps) and int(steps[-1]) > SETTINGS['checkpoint.every_steps']

  _wait(past_a_checkpoint, 'a step past the first checkpoint', describe, 300, 0.05)
  # Stopped until the requeue's SIGTERM has reached them (slurmd sends
  # SIGCONT, then SIGTERM), the tasks get it mid-run however fast they step.
  tasks = _tasks(cluster, job_id)
  assert len(tasks) == GPUS, describe()
  for pid in tasks:
    os.kill(pid, signal.SIGSTOP)
  cluster.run('scontrol', 'requeue', job_id)
  _wait(lambda: all(map(_terminating, tasks)), 'SIGTERM to reach the tasks', describe, 60, 0.05)
  for pid in tasks:
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signal.SIGCONT)
  _wait(requeued(lambda s: s == 'PENDING'), 'the job to be pending again', describe, 120)
  # SLURM holds a requeued job back for two minutes (BeginTime): start it now.
  cluster.run('scontrol', 'update', f'JobId={job_id}', 'StartTime=now')
  _wait(requeued(lambda s: s not in ACTIVE), 'the requeued job to end', describe, 300, 0.5)

  ended, text = job(), _read(output)
  assert (ended['JobState'], ended['ExitCode'], ended['Restarts']) == ('COMPLETED', '0:0', '1'), (
    describe()
  )
  assert text.count(f'({2 * GPUS} devices, {GPUS} processes)') == 2, describe()
  preempted = re.search(r'^preempted at step (\d+): checkpoint saved', text, re.MULTILINE)
  assert preempted, describe()
  step = int(preempted[1])
  assert SETTINGS['checkpoint.every_steps'] < step < SETTINGS['train.num_steps'], describe()
  assert re.search(rf'^resumed from \S+ at step {step}$', text, re.MULTILINE), describe()

  one = str(tmp_path / 'one')
  pretraining.train(
    PretrainConfig.from_config(train_testing.tiny_config(vocab, **SETTINGS)),
    one,
    devices=jax.devices()[:1],
  )
  got, expected = (train_testing.train_losses(w) for w in (workdir, one))
  assert sorted(got) == sorted(expected) == list(range(1, SETTINGS['train.num_steps'] + 1))
  np.testing.assert_allclose(
    [got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=1e-5
  )
