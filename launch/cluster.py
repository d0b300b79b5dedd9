r"""Launch `launch.pretrain` on a Cloud TPU VM pod or a SLURM GPU cluster.

  # Every worker of a TPU pod slice runs one process (over ssh, detached):
  python -m launch.cluster --target=tpu --tpu=my-v4-32 --zone=us-central2-b \
      --setup='source ~/venv/bin/activate' \
      --config=experiments/configs/pretrain.py:base --workdir=/mnt/shared/base \
      --config.train.batch_size=1024

  # One process per GPU on 4 nodes of 8 GPUs (an sbatch script on stdin):
  python -m launch.cluster --target=slurm --nodes=4 --gpus_per_node=8 \
      --cpus_per_task=12 --exclusive --setup='source venv/bin/activate' \
      --config=experiments/configs/pretrain.py:large --workdir=/shared/large

Processes: one per TPU VM worker, one per GPU under SLURM (why:
albert_jax/cluster.py). --config=FILE:PRESET and the overrides
--config.KEY=VALUE are checked here, then go to `launch.pretrain` as given
(arguments after `--` too, deprecated); --print_config prints the config the
run will use. `--dry_run` prints what would run and runs nothing. `--setup`
is a shell line run before the command on every host (SLURM: once per job,
its environment passed to every task), e.g. activating a virtual environment.

TPU: `--check_topology=v4:4x4x4` (the slice's libtpu name) first compiles
the run's train step here, with the TPU compiler for that slice's devices
and hosts (`launch.memory_plan --topology`; libtpu needed, no TPU), and
stops before anything runs when it does not compile or does not fit the
chips' memory; with --dry_run that check is all that runs.

TPU: the code alone (albert_jax, launch, experiments and the requirement
files; not runs/ or .git) is copied to --repo_dir on every worker and
requirements-tpu.txt installed there (--noinstall skips both); the run is
detached, each worker logging to REPO_DIR/logs/, and the commands to follow
it are printed.

The processes find each other through `--distributed` (JAX reads the TPU
metadata or the SLURM environment). The workdir must be one directory that
every host sees (NFS, Filestore, a GCS FUSE mount): each process writes its
shards of every checkpoint there. On preemption (SIGTERM: TPU maintenance,
SLURM's `--signal` before the time limit, `scontrol requeue`) the processes
save a checkpoint at one step, print 'preempted at step N: checkpoint saved'
and exit 0; rerunning the same command (or SLURM's requeue) resumes.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

from absl import flags

from albert_jax.cluster import (
  memory_plan_command,
  pretrain_command,
  sbatch_script,
  tpu_commands,
  tpu_follow_lines,
)
from albert_jax.errors import UsageError
from launch import command_line

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Relative to the repository: the hosts hold it elsewhere.
_DEFAULT_CONFIG = 'experiments/configs/pretrain.py:base'

_TARGET = flags.DEFINE_enum('target', None, ['tpu', 'slurm'], 'Where to run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory, shared by all hosts.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
_REPO_DIR = flags.DEFINE_string(
  'repo_dir',
  None,
  'Where the code is on the hosts. Default: ~/albert-jax on '
  'TPU workers (copied there), the submission directory under SLURM.',
)
_SETUP = flags.DEFINE_string(
  'setup',
  None,
  "A shell line run first on every host, in --repo_dir, e.g. 'source venv/bin/activate'.",
)
# Cloud TPU.
_TPU = flags.DEFINE_string('tpu', None, 'tpu: TPU VM name.')
_ZONE = flags.DEFINE_string('zone', None, 'tpu: zone of the TPU VM.')
_PROJECT = flags.DEFINE_string('project', None, 'tpu: GCP project (default: gcloud config).')
_CHECK_TOPOLOGY = flags.DEFINE_string(
  'check_topology',
  None,
  "tpu: the slice's topology (e.g. v4:4x4x4): first check here that the train step compiles "
  'for it and fits (launch.memory_plan --topology).',
)
_INSTALL = flags.DEFINE_bool(
  'install',
  True,
  'tpu: copy the code and install requirements-tpu.txt on every worker first.',
)
# SLURM.
_NODES = flags.DEFINE_integer('nodes', 1, 'slurm: number of nodes.')
_GPUS_PER_NODE = flags.DEFINE_integer('gpus_per_node', 8, 'slurm: GPUs per node.')
_TIME = flags.DEFINE_string('time', '24:00:00', 'slurm: time limit.')
_PARTITION = flags.DEFINE_string('partition', None, 'slurm: partition.')
_ACCOUNT = flags.DEFINE_string('account', None, 'slurm: account.')
_CPUS_PER_TASK = flags.DEFINE_integer(
  'cpus_per_task', None, "slurm: CPUs per task (one task per GPU); default: the site's."
)
_EXCLUSIVE = flags.DEFINE_bool('exclusive', False, 'slurm: whole nodes, shared with no job.')
_JOB_NAME = flags.DEFINE_string('job_name', 'albert-pretrain', 'slurm: job name.')


def main(argv: Sequence[str]) -> None:
  if argv[1:] and '--' not in sys.argv:
    raise UsageError(f'unexpected argument {argv[1]!r}; flags look like --name=value')
  if argv[1:]:
    print('warning: arguments after -- are deprecated; pass --config.KEY=VALUE', file=sys.stderr)
  if _TARGET.value is None or _WORKDIR.value is None:
    raise UsageError('--target (tpu|slurm) and --workdir are required')
  config = command_line.flag_value(sys.argv, 'config', _DEFAULT_CONFIG)
  command = pretrain_command(
    config, _WORKDIR.value, command_line.config_overrides(sys.argv) + argv[1:]
  )
  if _TARGET.value == 'tpu':
    _tpu(command, checked=(config, command_line.config_overrides(sys.argv) + argv[1:]))
  else:
    _slurm(command)


def _tpu(command: list[str], checked: tuple[str, list[str]]) -> None:
  """Runs `command` on every worker; `checked`: the config and overrides
  --check_topology compiles."""
  if not _TPU.value or not _ZONE.value:
    raise UsageError('--target=tpu needs --tpu=NAME and --zone=ZONE')
  if _CHECK_TOPOLOGY.value:
    _check_topology(*checked)
  where = {
    'tpu': _TPU.value,
    'zone': _ZONE.value,
    'project': _PROJECT.value,
    'repo_dir': _REPO_DIR.value or '~/albert-jax',
  }
  # The workdir's name tells the logs of several runs apart.
  log_name = re.sub(r'[^A-Za-z0-9._-]', '_', os.path.basename(_WORKDIR.value.rstrip('/'))) or 'run'
  commands = tpu_commands(
    **where,
    install=_INSTALL.value,
    command=command,
    setup=_SETUP.value,
    source_dir=_REPO,
    log_name=log_name,
  )
  for cmd in commands:
    print(shlex.join(cmd), flush=True)
    if not _DRY_RUN.value:
      _run(cmd)
  print('\n'.join(tpu_follow_lines(**where, log_name=log_name)), flush=True)


def _check_topology(config: str, overrides: list[str]) -> None:
  """Compiles the run's train step for --check_topology; one line on how
  it went, or a UsageError where it does not compile or fit."""
  topology = _CHECK_TOPOLOGY.value
  cmd = memory_plan_command(config, overrides, topology)
  print(f'# {shlex.join(cmd)}', flush=True)
  result = subprocess.run(
    [sys.executable, *cmd[1:]], cwd=_REPO, capture_output=True, text=True, check=False
  )
  if result.returncode:
    lines = result.stderr.strip().splitlines() or [f'exit status {result.returncode}']
    raise UsageError(
      f'--check_topology={topology}: the train step does not compile: '
      + lines[-1].removeprefix('error: ')
    )
  (record,) = [json.loads(line) for line in result.stdout.splitlines()]
  if 'compile_error' in record:
    raise UsageError(
      f'--check_topology={topology}: the train step does not fit: {record["compile_error"]}; '
      'set --config.model.remat_policy or --config.train.grad_accum_steps'
    )
  need, have = record['memory_per_device_bytes'] / 2**30, record['device_hbm_bytes'] / 2**30
  if need > have:
    raise UsageError(
      f'--check_topology={topology}: the train step needs {need:.2f} GiB per device, more than '
      f'the {have:g} GiB of a {record["device_kind"]}: set --config.model.remat_policy or '
      '--config.train.grad_accum_steps'
    )
  print(
    f'# checked: the train step compiles for {topology} ({record["num_devices"]} devices, '
    f'{record["hosts"]} hosts) and needs {need:.2f} of {have:g} GiB per device; the TPU '
    + (
      f'compiler estimates {record["estimated_step_s"]:.3g} s per step '
      f'(MFU {record["estimated_mfu"]:.0%})'
      if record['estimated_step_s'] is not None
      else "compiler's cost model gives no step time for it"
    ),
    flush=True,
  )


def _slurm(command: list[str]) -> None:
  if _NODES.value < 1 or _GPUS_PER_NODE.value < 1:
    raise UsageError('--nodes and --gpus_per_node must be >= 1')
  if _CPUS_PER_TASK.value is not None and _CPUS_PER_TASK.value < 1:
    raise UsageError('--cpus_per_task must be >= 1')
  _check_batch_divides(_NODES.value * _GPUS_PER_NODE.value)
  script = sbatch_script(
    nodes=_NODES.value,
    gpus_per_node=_GPUS_PER_NODE.value,
    time=_TIME.value,
    partition=_PARTITION.value,
    account=_ACCOUNT.value,
    job_name=_JOB_NAME.value,
    repo_dir=_REPO_DIR.value or '"$SLURM_SUBMIT_DIR"',
    command=command,
    setup=_SETUP.value,
    cpus_per_task=_CPUS_PER_TASK.value,
    exclusive=_EXCLUSIVE.value,
  )
  print(script, end='', flush=True)
  print('# sbatch < (the script above)', flush=True)
  if not _DRY_RUN.value:
    _run(['sbatch'], stdin=script)


def _check_batch_divides(processes: int) -> None:
  """UsageError unless train.batch_size (the config's, or the last override
  after --) splits evenly over `processes`: each feeds its share of every
  batch, which the job would refuse only once it started on every node."""
  batch_size = flags.FLAGS.config.train.batch_size
  for arg in sys.argv[1:]:
    if match := re.fullmatch(r'--config\.train\.batch_size=(\d+)', arg):
      batch_size = int(match[1])
  if batch_size % processes:
    raise UsageError(
      f"train.batch_size {batch_size} does not split over the job's {processes} processes "
      f'(one per GPU): use a multiple of {processes}'
    )


def _run(cmd: Sequence[str], stdin: str | None = None) -> None:
  try:
    subprocess.run(cmd, input=stdin, text=True, check=True)
  except FileNotFoundError:
    raise UsageError(
      f'{cmd[0]} not found: run this where it is installed, '
      'or use --dry_run and run the printed commands '
      'yourself'
    ) from None
  except subprocess.CalledProcessError as e:
    raise UsageError(f'{shlex.join(cmd)} exited with status {e.returncode}') from None


if __name__ == '__main__':
  command_line.run(
    main,
    takes_arguments=True,
    config=command_line.Config(
      os.path.join(_REPO, _DEFAULT_CONFIG),
      keys_file='experiments/configs/pretrain.py',
      help_text='Config file and preset, FILE:PRESET, passed to launch.pretrain '
      '(relative to the repository on the hosts).',
    ),
  )
