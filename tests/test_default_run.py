"""The default run's numbers, pinned: a refactor must not change what users train.

`python -m launch.pretrain` as a user types it (tiny preset, builtin corpus, a
tokenizer trained into the workdir, one CPU device), shortened to 30 steps with
a record per step. The losses were recorded before the trainers were
restructured; they stay within float32 rounding of those numbers (bitwise on
the machine they were recorded on; the tolerance leaves room for another CPU's
vector code).
"""

import os
import subprocess
import sys

import numpy as np

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_LOSSES = [
  8.290068626403809,
  8.32380199432373,
  8.298989295959473,
  8.302337646484375,
  8.296276092529297,
  8.28891372680664,
  8.278738021850586,
  8.248478889465332,
  8.24951457977295,
  8.23167610168457,
  8.228766441345215,
  8.195123672485352,
  8.231300354003906,
  8.173168182373047,
  8.196897506713867,
  8.156259536743164,
  8.131937980651855,
  8.119046211242676,
  8.11111068725586,
  8.107945442199707,
  8.064226150512695,
  7.996164321899414,
  7.981534957885742,
  7.962314605712891,
  7.964158058166504,
  7.958681106567383,
  7.91707706451416,
  7.885040760040283,
  7.850583076477051,
  7.786723613739014,
]
EVAL_LOSSES = [8.209073066711426, 8.046260833740234, 7.746858596801758]  # Steps 10, 20, 30.


def test_default_run_losses_are_pinned(tmp_path):
  env = train_testing.subprocess_env()
  env.pop('XLA_FLAGS', None)  # One device, as a user's CPU run.
  process = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.pretrain',
      f'--workdir={tmp_path}',
      '--config.train.num_steps=30',
      '--config.train.log_every=1',
      '--config.train.eval_every=10',
      '--config.checkpoint.every_steps=1000',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert process.returncode == 0, process.stdout + process.stderr
  records = train_testing.read_metrics(str(tmp_path))
  train = [r['loss'] for r in records if 'loss' in r]
  evaluation = [r['eval_loss'] for r in records if 'eval_loss' in r]
  np.testing.assert_allclose(train, TRAIN_LOSSES, rtol=1e-6, atol=0)
  np.testing.assert_allclose(evaluation, EVAL_LOSSES, rtol=1e-6, atol=0)
