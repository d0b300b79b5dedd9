"""The default run's numbers, pinned: a refactor must not change what users train.

`python -m launch.pretrain` as a user types it (tiny preset, builtin corpus, a
tokenizer trained into the workdir, one CPU device), shortened to 30 steps with
a record per step. The losses stay within float32 rounding of the numbers
recorded (bitwise on the machine they were recorded on; the tolerance leaves
room for another CPU's vector code). They were re-pinned when the data rules
became the original's; the 30 steps are all warmup (60), where both schedules
agree.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The original's data rules and schedule (issue 15, items 3-6), the defaults.
TRAIN_LOSSES = [
  8.300899505615234,
  8.301224708557129,
  8.305854797363281,
  8.292798042297363,
  8.283772468566895,
  8.295130729675293,
  8.278871536254883,
  8.268943786621094,
  8.26579475402832,
  8.263520240783691,
  8.251320838928223,
  8.250143051147461,
  8.247993469238281,
  8.228394508361816,
  8.22978401184082,
  8.207866668701172,
  8.192051887512207,
  8.195463180541992,
  8.207758903503418,
  8.174284934997559,
  8.16112995147705,
  8.123190879821777,
  8.110920906066895,
  8.1340913772583,
  8.096641540527344,
  8.09699821472168,
  8.07045841217041,
  8.069302558898926,
  8.057127952575684,
  8.057546615600586,
]
EVAL_LOSSES = [8.253262519836426, 8.161962509155273, 8.01395034790039]  # Steps 10, 20, 30.

# This code's earlier rules, recorded before the defaults became the
# original's: the switches give them back bitwise. (The earlier run's eval loss
# of 7.75 at step 30 is on the lucky side: the same rules with train seeds 1
# and 2 give 8.02 and 8.01, as the new defaults do.)
EARLIER_RULES = (
  '--config.train.decay_from_step_0=False',
  '--config.data.short_seq_per_document=False',
  '--config.data.num_to_predict_counts_specials=False',
  '--config.data.random_token_includes_specials=False',
  '--config.data.apostrophe_joins_word=True',
)
EARLIER_TRAIN_LOSSES = [
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
EARLIER_EVAL_LOSSES = [8.209073066711426, 8.046260833740234, 7.746858596801758]


@pytest.mark.parametrize(
  'flags, train_losses, eval_losses',
  [
    ((), TRAIN_LOSSES, EVAL_LOSSES),
    (EARLIER_RULES, EARLIER_TRAIN_LOSSES, EARLIER_EVAL_LOSSES),
  ],
  ids=['original', 'earlier_rules'],
)
def test_default_run_losses_are_pinned(tmp_path, flags, train_losses, eval_losses):
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
      *flags,
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
  np.testing.assert_allclose(train, train_losses, rtol=1e-6, atol=0)
  np.testing.assert_allclose(evaluation, eval_losses, rtol=1e-6, atol=0)
