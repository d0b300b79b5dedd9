"""Checkpoints: exact resume (restart, SIGTERM), another mesh, another model refused."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from albert_jax import pretraining
from albert_jax.errors import UsageError
from albert_jax.train import workdir as workdir_lib
from albert_jax.train.config import PretrainConfig

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = train_testing.TINY['train.num_steps']
SETTINGS = {'checkpoint.every_steps': 2, 'checkpoint.keep': 10}


@pytest.fixture(scope='module')
def straight(vocab, tmp_path_factory):
  """NUM_STEPS uninterrupted steps on all 8 devices (data=8), checkpoints every 2."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  pretraining.train(
    PretrainConfig.from_config(train_testing.tiny_config(vocab, **SETTINGS)), workdir
  )
  return workdir


def _params(workdir: str, step: int):
  return ocp.StandardCheckpointer().restore(
    os.path.join(workdir, 'checkpoints', str(step), 'state')
  )['params']


def _assert_same_run_after(step: int, workdir: str, reference: str) -> None:
  """Bitwise: the losses of every step after `step` and the final params."""
  got, expected = (train_testing.train_losses(w) for w in (workdir, reference))
  after = list(range(step + 1, NUM_STEPS + 1))
  assert [got[s] for s in after] == [expected[s] for s in after]
  got_params, expected_params = (_params(w, NUM_STEPS) for w in (workdir, reference))
  assert jax.tree.structure(got_params) == jax.tree.structure(expected_params)
  assert all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(expected_params))
  )


def _copy_checkpoint(reference: str, step: int, workdir: str) -> None:
  shutil.copytree(
    os.path.join(reference, 'checkpoints', str(step)),
    os.path.join(workdir, 'checkpoints', str(step)),
  )


def test_restart_from_a_periodic_checkpoint_is_exact(vocab, straight, tmp_path):
  _copy_checkpoint(straight, 2, tmp_path)  # As if the run died after step 2.
  result = pretraining.train(
    PretrainConfig.from_config(train_testing.tiny_config(vocab, **SETTINGS)), str(tmp_path)
  )
  assert result.step == NUM_STEPS and not result.preempted
  _assert_same_run_after(2, str(tmp_path), straight)


def test_sigterm_saves_exits_0_and_resume_is_exact(vocab, straight, tmp_path):
  # Run from elsewhere with a relative workdir, as users do.
  process = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'launch.pretrain',
      '--workdir=run',
      *train_testing.tiny_flags(vocab, **SETTINGS),
    ],
    cwd=tmp_path,
    env=train_testing.subprocess_env(PYTHONPATH=REPO),
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  workdir = str(tmp_path / 'run')
  output = []
  for line in process.stdout:
    output.append(line)
    if line.startswith('mesh '):  # Starting up: the notice takes effect after step 1.
      process.send_signal(signal.SIGTERM)
  output = ''.join(output)
  assert process.wait(timeout=120) == 0, output
  assert 'preempted at step 1: checkpoint saved; rerun the same command to resume' in output
  assert 'finished at step' not in output
  assert 'checkpoints: run/checkpoints' in output
  assert [d for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()] == ['1']

  # Resumed keeping the last 2 checkpoints: 1 (the preemption's) goes.
  result = pretraining.train(
    PretrainConfig.from_config(
      train_testing.tiny_config(vocab, **{**SETTINGS, 'checkpoint.keep': 2})
    ),
    workdir,
  )
  assert result.step == NUM_STEPS
  _assert_same_run_after(1, workdir, straight)
  assert sorted(d for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()) == [
    '2',
    '4',
  ]


def test_checkpoint_of_data_mesh_restores_under_fsdp(vocab, straight, tmp_path):
  _copy_checkpoint(straight, 2, tmp_path)
  config = train_testing.tiny_config(vocab, **SETTINGS)
  config.mesh.update(data=1, fsdp=8)
  result = pretraining.train(PretrainConfig.from_config(config), str(tmp_path))
  assert result.step == NUM_STEPS
  got, expected = (train_testing.train_losses(w) for w in (str(tmp_path), straight))
  after = range(3, NUM_STEPS + 1)
  # Same params and data; only the order of floating-point sums differs.
  np.testing.assert_allclose([got[s] for s in after], [expected[s] for s in after], rtol=1e-5)


def test_workdir_of_another_model_is_refused_untouched(vocab, straight, tmp_path):
  workdir = os.path.join(tmp_path, 'run')
  shutil.copytree(straight, workdir)
  before = train_testing.snapshot(workdir)
  process = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.pretrain',
      f'--workdir={workdir}',
      *train_testing.tiny_flags(vocab, **SETTINGS),
      '--config.model.hidden_size=64',
    ],
    cwd=REPO,
    env=train_testing.subprocess_env(),
    text=True,
    capture_output=True,
    timeout=300,
  )
  assert process.returncode == 1
  stderr = process.stderr.strip().splitlines()
  assert len(stderr) == 1, process.stderr
  assert re.match(
    r'error: .*run holds a run of another model \(model.hidden_size 32 -> 64\); rerun with '
    r'its settings or use a new --workdir$',
    stderr[0],
  )
  assert train_testing.snapshot(workdir) == before


def test_run_saved_before_a_fixed_key_existed_resumes_at_its_default(vocab, tmp_path):
  """An older version's config.json lacks the keys added since (here two that
  define the training text): at their defaults the run resumes, recording
  them; set otherwise, they make another run."""
  config = PretrainConfig.from_config(train_testing.tiny_config(vocab))
  with workdir_lib.claim(str(tmp_path), config) as claimed:
    claimed.record_start(config, step=0)
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['data']['language'], saved['data']['drop_markup']
  (tmp_path / 'config.json').write_text(json.dumps(saved))

  with workdir_lib.claim(str(tmp_path), config) as claimed:
    assert claimed.changed == {'data.drop_markup': (None, False), 'data.language': (None, 'en')}
  markup_dropped = dataclasses.replace(config.data, drop_markup=True)
  with pytest.raises(UsageError, match=r'another model \(data.drop_markup None -> True\);'):
    with workdir_lib.claim(str(tmp_path), dataclasses.replace(config, data=markup_dropped)):
      pass


def test_checkpoint_of_other_shapes_is_refused_without_its_config(vocab, straight, tmp_path):
  """The shapes guard stands when config.json is gone (a copied checkpoint)."""
  workdir = os.path.join(tmp_path, 'run')
  shutil.copytree(straight, workdir)
  os.remove(os.path.join(workdir, 'config.json'))
  config = train_testing.tiny_config(vocab, **SETTINGS, **{'model.hidden_size': 64})
  with pytest.raises(UsageError, match=r'holds a checkpoint \(step 4\) of another model'):
    pretraining.train(PretrainConfig.from_config(config), workdir)
