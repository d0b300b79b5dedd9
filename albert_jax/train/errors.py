"""The error type for bad input to a training run.

Raised for what the user can fix (an impossible mesh or batch size, a workdir
holding another model's checkpoint, a diverged run): `launch.pretrain` prints
the message as one line and exits non-zero, without a traceback.
"""


class UsageError(Exception):
  """A training run cannot go on; the message says what is wrong and how to fix it."""
