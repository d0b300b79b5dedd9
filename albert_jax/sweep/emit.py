"""A plan as launch commands for elsewhere, one per run, as a bash script:

  shell  the commands the local runner runs (run from the repository root);
  slurm  one `sbatch` per run, each an sbatch script of albert_jax.cluster
         (one process per GPU, requeued and resumed after preemption);
  tpu    gcloud commands of albert_jax.cluster: copy and install the code on
         every worker of the TPU VM once, then one run after another.

Afterwards `python -m launch.sweep --report=DIR` evaluates the finished runs
and writes the report.
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


def emit(plan: Plan, root: str, target: str, cluster: Cluster) -> str:
  """The bash script running every run of `plan` in `root`/RUN on `target`."""
  lines = [
    '#!/bin/bash',
    f'# {plan.name} sweep ({plan.spec}), '
    f'{len(plan.runs)} runs; afterwards: python -m launch.sweep '
    f'--report={root}',
  ]
  if target == 'shell':
    lines.insert(2, '# Run from the repository root.')
    lines += [shlex.join(plan.command(run, root)) for run in plan.runs]
  elif target == 'slurm':
    if cluster.nodes < 1 or cluster.gpus_per_node < 1:
      raise SweepError('--nodes and --gpus_per_node must be >= 1')
    for run in plan.runs:
      script = sbatch_script(
        nodes=cluster.nodes,
        gpus_per_node=cluster.gpus_per_node,
        time=cluster.time,
        partition=cluster.partition,
        account=None,
        job_name=f'albert-{plan.name}-{run.name}',
        repo_dir='"$SLURM_SUBMIT_DIR"',
        command=plan.command(run, root, distributed=True),
      )
      lines += ["sbatch <<'EOF'", script.rstrip('\n'), 'EOF']
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
