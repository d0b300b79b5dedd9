"""Cluster recipes: the commands that run `launch.pretrain` on every process
of a Cloud TPU VM pod (gcloud over ssh) or a SLURM job (an sbatch script).

`launch.cluster` runs them for one training run; `launch.sweep --emit`
writes them for every variant of a sweep.
"""

import shlex
from collections.abc import Sequence


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


def tpu_commands(
  *, tpu: str, zone: str, project: str | None, repo_dir: str, install: bool, command: Sequence[str]
) -> list[list[str]]:
  """gcloud commands that (optionally) install the code on every worker, then run."""
  where = [f'--zone={zone}'] + ([f'--project={project}'] if project else [])
  ssh = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', tpu, *where, '--worker=all']
  commands = []
  if install:
    commands.append(
      [
        'gcloud',
        'compute',
        'tpus',
        'tpu-vm',
        'scp',
        '--recurse',
        '.',
        f'{tpu}:{repo_dir}',
        *where,
        '--worker=all',
      ]
    )
    commands.append(
      [*ssh, '--command=' + f'cd {repo_dir} && pip install -q -r requirements.txt "jax[tpu]"']
    )
  commands.append([*ssh, f'--command=cd {repo_dir} && {shlex.join(command)}'])
  return commands


def sbatch_script(
  *,
  nodes: int,
  gpus_per_node: int,
  time: str,
  partition: str | None,
  account: str | None,
  job_name: str,
  repo_dir: str,
  command: Sequence[str],
) -> str:
  """An sbatch script running one process per GPU."""
  options = [
    f'--job-name={job_name}',
    f'--nodes={nodes}',
    f'--ntasks-per-node={gpus_per_node}',
    f'--gpus-per-node={gpus_per_node}',
    f'--time={time}',
    # SIGTERM to every task 120 s before the time limit: checkpoint, exit 0.
    '--signal=TERM@120',
    # Requeued after preemption, the same command resumes from the workdir.
    '--requeue',
    '--open-mode=append',
    '--output=%x-%j.out',
  ]
  options += [f'--partition={partition}'] if partition else []
  options += [f'--account={account}'] if account else []
  lines = ['#!/bin/bash']
  lines += [f'#SBATCH {option}' for option in options]
  lines += ['set -euo pipefail', f'cd {repo_dir}', f'srun {shlex.join(command)}', '']
  return '\n'.join(lines)
