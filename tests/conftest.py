"""Test setup, before jax is imported anywhere in the test process.

- 8 simulated CPU devices, so sharded code runs on one machine, and the CPU
  backend alone (libtpu, installed for tests/test_memory_plan.py, would
  have every jax process look for a TPU);
- a persistent compilation cache for the session, shared with the launcher
  subprocesses through the environment: many tests compile the same step;
- `vocab`: the tiny training runs' SentencePiece vocabulary (train_testing).
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_CACHE = tempfile.mkdtemp(prefix='albert-jax-test-xla-')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'


@pytest.fixture(scope='session')
def vocab(tmp_path_factory) -> str:
  """The directory of the tiny training runs' SentencePiece vocabulary."""
  import train_testing  # pylint: disable=g-import-not-at-top  (imports jax)

  return train_testing.train_vocab(str(tmp_path_factory.mktemp('vocab')))
