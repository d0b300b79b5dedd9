"""The flags that join the processes of a multi-host run, shared by the
trainers (pretrain, finetune): --distributed, or --coordinator_address,
--num_processes and --process_id."""

from absl import flags

from albert_jax.train import distributed

_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  False,
  'Join the other processes of a Cloud TPU pod / SLURM job (found from the environment).',
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
  'coordinator_address', None, 'HOST:PORT of process 0, for a multi-process run.'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0-based.')


def join() -> None:
  """Joins the run's other processes as the command line says (a single
  process without any of the flags)."""
  distributed.initialize(
    _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value, cluster=_DISTRIBUTED.value
  )
