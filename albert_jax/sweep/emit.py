"""A plan as launch commands for elsewhere, one per run, as a bash script
that stops at the first failing command (`set -euo pipefail`):

  shell  the commands the local runner runs (run from the repository root);
  slurm  one job array, task i the sbatch script of albert_jax.cluster for
         run i (one process per GPU, requeued and resumed after preemption),
         and a report job that starts once every task has succeeded;
  tpu    gcloud commands of albert_jax.cluster: copy and install the code on
         every worker of the TPU VM once, then one run after another.

Afterwards (for slurm, in the report job) `python -m launch.sweep
--report=DIR` evaluates the finished runs and writes the report.
"""

import dataclasses
import shlex

from albert_jax.cluster import sbatch_script, tpu_commands
from albert_jax.errors import SweepError
from albert_jax.sweep.plan import Plan

TARGETS = ('shell', 'slurm', 'tpu')


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where the cluster targets run; account and project come from the
  environment (SBATCH_ACCOUNT, gcloud config)."""

  nodes: int = 1
  gpus_per_node: int = 8
  time: str = '24:00:00'
  partition: str | None = None
  tpu: str | None = None
  zone: str | None = None


def emit(plan: Plan, root: str, target: str, cluster: Cluster, *, eval_batches: int = 0) -> str:
  """The bash script running every run of `plan` in `root`/RUN on `target`;
  `eval_batches` is the report's (launch.sweep --eval_batches)."""
  report = ['python', '-m', 'launch.sweep', f'--report={root}']
  report += [f'--eval_batches={eval_batches}'] if eval_batches else []
  lines = [
    '#!/bin/bash',
    f'# {plan.name} sweep ({plan.spec}), {len(plan.runs)} runs; afterwards'
    + (', in a job of its own: ' if target == 'slurm' else ': ')
    + shlex.join(report),
    'set -euo pipefail',
  ]
  if target == 'shell':
    lines.insert(2, '# Run from the repository root.')
    lines += [shlex.join(plan.command(run, root)) for run in plan.runs]
  elif target == 'slurm':
    lines += _slurm(plan, root, cluster, report)
  elif target == 'tpu':
    if not cluster.tpu or not cluster.zone:
      raise SweepError('--emit=tpu needs --tpu=NAME and --zone=ZONE')
    for i, run in enumerate(plan.runs):
      lines += [
        shlex.join(command)
        for command in tpu_commands(
          tpu=cluster.tpu,
          zone=cluster.zone,
          project=None,
          repo_dir='~/albert-jax',
          install=i == 0,
          command=plan.command(run, root, distributed=True),
        )
      ]
  else:
    raise SweepError(f'unknown --emit={target}: choose one of {", ".join(TARGETS)}')
  return '\n'.join(lines) + '\n'


def _slurm(plan: Plan, root: str, cluster: Cluster, report: list[str]) -> list[str]:
  """Submits the runs as one job array, then the report job depending on it."""
  if cluster.nodes < 1 or cluster.gpus_per_node < 1:
    raise SweepError('--nodes and --gpus_per_node must be >= 1')
  shared = dict(time=cluster.time, partition=cluster.partition, account=None)
  runs = sbatch_script(
    nodes=cluster.nodes,
    gpus_per_node=cluster.gpus_per_node,
    job_name=f'albert-{plan.name}',
    repo_dir='"$SLURM_SUBMIT_DIR"',
    array=[plan.command(run, root, distributed=True) for run in plan.runs],
    **shared,
  )
  # One process on one GPU: it evaluates the runs that have no result yet.
  report_job = sbatch_script(
    nodes=1,
    gpus_per_node=1,
    job_name=f'albert-{plan.name}-report',
    repo_dir='"$SLURM_SUBMIT_DIR"',
    command=report,
    **shared,
  )
  return [
    f'# Array task i runs run i: {", ".join(run.name for run in plan.runs)}.',
    "ARRAY_JOB_ID=$(sbatch --parsable <<'EOF'",
    runs.rstrip('\n'),
    'EOF',
    ')',
    'ARRAY_JOB_ID=${ARRAY_JOB_ID%%;*}  # --parsable prints ID[;CLUSTER].',
    'echo "runs: job array $ARRAY_JOB_ID"',
    # afterok on an array: every task has succeeded.
    """sbatch --dependency=afterok:"$ARRAY_JOB_ID" <<'EOF'""",
    report_job.rstrip('\n'),
    'EOF',
  ]
