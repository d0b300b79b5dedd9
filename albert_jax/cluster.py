"""Cluster recipes: the commands that run `launch.pretrain` on every process
of a Cloud TPU VM pod (gcloud over ssh) or a SLURM job (an sbatch script).

Processes: one per TPU VM worker (host), one per GPU under SLURM. The TPU
runtime gives one process all the chips of its host, and JAX never narrows a
TPU process to some of them. Under SLURM, JAX's cluster detection (what
`--distributed` uses) binds each task to the one GPU numbered by its
SLURM_LOCALID, so a task per node would leave all GPUs but the first idle: the
script starts one task per GPU, each seeing all of the node's GPUs (no
--gpus-per-task, which would renumber them). A process per GPU also keeps the
input pipeline parallel, one loader per GPU.

`launch.cluster` runs them for one training run; `launch.sweep --emit`
writes them for every variant of a sweep.
"""

import os
import shlex
from collections.abc import Sequence

# What the hosts need to run (relative to the repository): not runs/, data,
# .git or caches, which can be large and the hosts never read.
CODE = (
  'albert_jax',
  'launch',
  'experiments',
  'pyproject.toml',
  'requirements.txt',
  'requirements-tpu.txt',
)
# The code's archive, on this machine and in each TPU worker's home.
_ARCHIVE = 'albert-jax-code.tar.gz'
_LOGS = 'logs'  # Per-worker logs of detached runs, under the code directory.


def pretrain_command(
  config: str, workdir: str, extra: Sequence[str], *, distributed: bool = True
) -> list[str]:
  """The command every process runs; without `distributed`, that of a
  single-process run."""
  return [
    'python',
    '-m',
    'launch.pretrain',
    f'--config={config}',
    f'--workdir={workdir}',
    *(['--distributed'] if distributed else []),
    *extra,
  ]


def memory_plan_command(config: str, extra: Sequence[str], topology: str) -> list[str]:
  """The check before a TPU run, on this machine: `launch.memory_plan`
  compiling the run's train step (`config` and its overrides `extra`) with
  the TPU compiler for the slice `topology` ('v4:4x4x4'), as the job on
  its hosts would, one JSON line out."""
  return [
    'python',
    '-m',
    'launch.memory_plan',
    f'--config={config}',
    *extra,
    f'--topology={topology}',
    '--json',
  ]


def tpu_commands(
  *,
  tpu: str,
  zone: str,
  project: str | None,
  repo_dir: str,
  install: bool,
  command: Sequence[str],
  setup: str | None = None,
  source_dir: str = '.',
  log_name: str | None = None,
) -> list[list[str]]:
  """The commands that run `command` on every worker of TPU VM `tpu`.

  With `install`, first the code (CODE of `source_dir`, archived here) goes
  to `repo_dir` on every worker, and requirements-tpu.txt is installed there
  with the interpreter that will run (jax with the TPU runtime built for it,
  pinned alike). `setup` (a shell line, e.g. 'source venv/bin/activate') runs
  on each worker before the install and the run. With `log_name` the run is
  detached: each worker runs `command` under nohup, writing
  repo_dir/logs/LOG_NAME-HOSTNAME.log, and the ssh returns at once (see
  `tpu_follow_lines`); without, it runs in the foreground, one run after
  another as `launch.sweep --emit=tpu` writes them.
  """
  where = [f'--zone={zone}'] + ([f'--project={project}'] if project else [])
  ssh = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu, *where, '--worker=all']
  enter = f'cd {repo_dir}' + (f' && {setup}' if setup else '')
  commands = []
  if install:
    archive = os.path.join('/tmp', _ARCHIVE)
    commands.append(
      ['tar', '-czf', archive, '--exclude=__pycache__', '-C', source_dir, *CODE],
    )
    commands.append(
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive, f'{tpu}:{_ARCHIVE}', *where]
      + ['--worker=all']
    )
    commands.append(
      [
        *ssh,
        f'--command=mkdir -p {repo_dir} && tar -xzf {_ARCHIVE} -C {repo_dir} && rm {_ARCHIVE}'
        f' && {enter} && python -m pip install -q -r requirements-tpu.txt',
      ]
    )
  if log_name is None:
    commands.append([*ssh, f'--command={enter} && {shlex.join(command)}'])
  else:
    log = f'{_LOGS}/{log_name}-$(hostname).log'
    # Only the run in the background, its output to the log: the ssh then
    # has nothing open and returns, and nohup keeps the run past its hangup.
    commands.append(
      [
        *ssh,
        f'--command={enter} && mkdir -p {_LOGS} && '
        f'{{ nohup {shlex.join(command)} > {log} 2>&1 < /dev/null & }} && '
        f'echo "$(hostname): started (pid $!), log {repo_dir}/{log}"',
      ]
    )
  return commands


def tpu_follow_lines(
  *, tpu: str, zone: str, project: str | None, repo_dir: str, log_name: str
) -> list[str]:
  """How to follow a detached run of `tpu_commands`: worker 0 prints the
  progress (the other workers' logs hold their errors, if any)."""
  where = [f'--zone={zone}'] + ([f'--project={project}'] if project else [])
  log = f'{repo_dir}/{_LOGS}/{log_name}-$(hostname).log'

  def on(worker: str, remote: str) -> str:
    command = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu, *where, f'--worker={worker}']
    return shlex.join([*command, f'--command={remote}'])

  return [
    f'# Running detached; each worker logs to {log}. Follow worker 0:',
    on('0', f'tail -f {log}'),
    '# The last lines of every worker:',
    on('all', f'tail -n 3 {log}'),
  ]


def sbatch_script(
  *,
  nodes: int,
  gpus_per_node: int,
  time: str,
  partition: str | None,
  account: str | None,
  job_name: str,
  repo_dir: str,
  command: Sequence[str] = (),
  setup: str | None = None,
  cpus_per_task: int | None = None,
  exclusive: bool = False,
  array: Sequence[Sequence[str]] = (),
) -> str:
  """An sbatch script running one process per GPU (see the module's
  docstring); `setup` (a shell line) runs first, and every task inherits
  its environment. With `array` instead of `command`, a job array: array
  task i runs `array[i]` (SLURM_ARRAY_TASK_ID), each task a job as above."""
  if bool(command) == bool(array):
    raise ValueError('give sbatch_script a command or an array of commands')
  options = [
    f'--job-name={job_name}',
    f'--nodes={nodes}',
    f'--ntasks-per-node={gpus_per_node}',
    f'--gpus-per-node={gpus_per_node}',
    f'--time={time}',
    '--signal=TERM@120',
    '--requeue',
    '--open-mode=append',
    # Array tasks: ARRAY-JOB_TASK, one log each.
    '--output=%x-%A_%a.out' if array else '--output=%x-%j.out',
  ]
  options += [f'--array=0-{len(array) - 1}'] if array else []
  options += [f'--cpus-per-task={cpus_per_task}'] if cpus_per_task else []
  options += ['--exclusive'] if exclusive else []
  options += [f'--partition={partition}'] if partition else []
  options += [f'--account={account}'] if account else []
  lines = ['#!/bin/bash']
  lines += [f'#SBATCH {option}' for option in options]
  # In the script, for whoever reads or edits it before submitting.
  lines += [
    "# One task per GPU: JAX's SLURM detection gives each task the GPU its SLURM_LOCALID",
    "# numbers, and every task sees all of the node's GPUs (no --gpus-per-task).",
    '# SIGTERM 120 s before the time limit, or on preemption, `scontrol requeue` or',
    '# `scancel`: the tasks agree on a step, save a checkpoint there, print',
    "# 'preempted at step N: checkpoint saved' and exit 0. Requeued (--requeue), the",
    '# job resumes from that checkpoint (SLURM holds a requeued job ~2 minutes before it',
    '# starts again); after the time limit, submit this script again. A task that fails',
    '# ends the job (--kill-on-bad-exit) instead of leaving the others waiting for it.',
  ]
  lines += ['set -euo pipefail', f'cd {repo_dir}']
  if setup:
    # Unset variables allowed here: activation scripts (conda's) read some.
    lines += ['set +u', setup, 'set -u']
  srun = lambda argv: f'srun --kill-on-bad-exit=1 {shlex.join(argv)}'
  if not array:
    return '\n'.join([*lines, srun(command), ''])
  lines.append('case "$SLURM_ARRAY_TASK_ID" in')
  lines += [f'  {i}) {srun(argv)} ;;' for i, argv in enumerate(array)]
  lines += ['  *) echo "no command for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', 'esac', '']
  return '\n'.join(lines)
