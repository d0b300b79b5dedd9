"""The default run's numbers, pinned: a refactor must not change what users train.

`python -m launch.pretrain` as a user types it (tiny preset, builtin corpus, a
tokenizer trained into the workdir, one CPU device), shortened to 30 steps with
a record per step. The losses stay within float32 rounding of the numbers
recorded (bitwise on the machine they were recorded on; the tolerance leaves
room for another CPU's vector code). They were re-pinned when the data rules
became the original's (the 30 steps are all warmup (60), where both schedules
agree), and when sentencex replaced a regex in splitting the builtin corpus's
paragraphs into sentences (1,975 sentences became 2,062).
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
  8.317628860473633,
  8.316107749938965,
  8.305255889892578,
  8.3067626953125,
  8.305672645568848,
  8.29940128326416,
  8.292557716369629,
  8.279999732971191,
  8.251749992370605,
  8.263753890991211,
  8.262151718139648,
  8.259282112121582,
  8.255715370178223,
  8.231910705566406,
  8.21664810180664,
  8.219184875488281,
  8.179281234741211,
  8.18736743927002,
  8.214245796203613,
  8.15307331085205,
  8.158187866210938,
  8.147793769836426,
  8.128324508666992,
  8.137259483337402,
  8.11825180053711,
  8.102959632873535,
  8.099200248718262,
  8.072932243347168,
  8.039678573608398,
  8.057912826538086,
]
EVAL_LOSSES = [8.246318817138672, 8.172616958618164, 8.031676292419434]  # Steps 10, 20, 30.

# This code's earlier rules, which the switches give back (recorded before the
# defaults became the original's, re-recorded with sentencex's sentences). (The
# eval loss of 7.75 at step 30 is on the lucky side: with the regex's sentences,
# the same rules with train seeds 1 and 2 gave 8.02 and 8.01.)
EARLIER_RULES = (
  '--config.train.decay_from_step_0=False',
  '--config.data.short_seq_per_document=False',
  '--config.data.num_to_predict_counts_specials=False',
  '--config.data.random_token_includes_specials=False',
  '--config.data.apostrophe_joins_word=True',
)
EARLIER_TRAIN_LOSSES = [
  8.293484687805176,
  8.321483612060547,
  8.298771858215332,
  8.297872543334961,
  8.295112609863281,
  8.291460990905762,
  8.267237663269043,
  8.243630409240723,
  8.242448806762695,
  8.227649688720703,
  8.213481903076172,
  8.194738388061523,
  8.22026252746582,
  8.178715705871582,
  8.189596176147461,
  8.168224334716797,
  8.141768455505371,
  8.103043556213379,
  8.105123519897461,
  8.094634056091309,
  8.0444974899292,
  8.045587539672852,
  7.983642578125,
  7.963162422180176,
  7.973577499389648,
  7.966972827911377,
  7.864731788635254,
  7.895875453948975,
  7.836705207824707,
  7.807352066040039,
]
EARLIER_EVAL_LOSSES = [8.21088981628418, 8.052248001098633, 7.750068664550781]


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
