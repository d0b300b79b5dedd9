"""The error type for bad input to a sweep.

`launch.sweep` prints the message as one line and exits non-zero.
"""


class SweepError(ValueError):
  """A sweep cannot run or be reported; the message says what to fix."""
