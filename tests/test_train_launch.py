"""Launchers: command-line errors, several processes, preemption notice.

The cluster recipes (launch.cluster) are in test_cluster.py."""

import os
import re
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from albert_jax import pretraining
from albert_jax.train import distributed
from albert_jax.train.config import PretrainConfig

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args: str, env: dict[str, str] | None = None, **kwargs):
  return subprocess.Popen(
    [sys.executable, '-m', 'launch.pretrain', *args],
    cwd=REPO,
    env=env or train_testing.subprocess_env(),
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    **kwargs,
  )


@pytest.mark.parametrize(
  'flag, message',
  [
    (
      '--config.train.num_step=3',
      r'error: unknown config key --config.train.num_step \(Did you mean "num_steps"',
    ),
    ('--config.mesh.data=3', r'error: mesh data=3 x fsdp=1 x tensor=1 needs 3 devices'),
    (
      '--config.train.batch_size=many',
      r'error: flag --config.train.batch_size=many: '
      r'invalid literal for int\(\)',
    ),
  ],
)
def test_bad_command_line_is_one_line_and_nonzero(flag, message, vocab, tmp_path):
  process = _launch(f'--workdir={tmp_path}', *train_testing.tiny_flags(vocab), flag)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 1
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and re.match(message, lines[0]), stderr
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(vocab, tmp_path):
  """2 processes x 2 CPU devices, joined over localhost, vs 1 process on 1 device."""
  address = f'127.0.0.1:{_free_port()}'
  env = train_testing.subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=2')
  workdir = os.path.join(tmp_path, 'two')
  processes = [
    _launch(
      f'--workdir={workdir}',
      *train_testing.tiny_flags(vocab),
      f'--coordinator_address={address}',
      '--num_processes=2',
      f'--process_id={i}',
      env=env,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stdout + stderr
  assert 'mesh data=4 fsdp=1 tensor=1 (4 devices, 2 processes)' in outputs[0][0]
  # Each process saved its own data position.
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(
    os.listdir(os.path.join(workdir, 'checkpoints', '4', 'data'))
  )

  one = os.path.join(tmp_path, 'one')
  pretraining.train(
    PretrainConfig.from_config(train_testing.tiny_config(vocab)), one, devices=jax.devices()[:1]
  )
  got, expected = (train_testing.train_losses(w) for w in (workdir, one))
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=1e-5
  )


def test_sigterm_sets_the_stop_flag_and_close_restores_the_handler():
  previous = signal.getsignal(signal.SIGTERM)
  watcher = distributed.PreemptionWatcher()
  try:
    assert not watcher.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.should_stop(2)
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGTERM) == previous
