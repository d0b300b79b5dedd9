"""The errors a user can fix, one base class for all of them.

Each message is one line saying what is wrong and how to fix it; the
launchers print it as `error: ...` and exit non-zero, without a traceback.
The subclasses say which part of the codebase refused; nothing translates one
into another. AlbertError is not a ValueError: an `except ValueError` meant
for a library's errors never catches (and relabels) one of these.
"""


class AlbertError(Exception):
  """Bad input: a config, flag, path, corpus or checkpoint that cannot be used."""


class UsageError(AlbertError):
  """An impossible config or run: mesh, batch, workdir, divergence."""


class DataError(AlbertError):
  """Unusable data: a missing path, an empty or binary corpus, a bad vocabulary."""


class ExportError(AlbertError):
  """A model directory that cannot be read or written."""


class SweepError(AlbertError):
  """A sweep that cannot run or be reported."""


class RecordError(AlbertError):
  """A file this codebase wrote (a workdir's records, a manifest) that is
  corrupt: torn, truncated or overwritten."""


class Interrupted(AlbertError):
  """The run was stopped by a signal (Ctrl-C, SIGTERM), having said what it
  kept; the launcher exits with 128 + `signum`, as the shell reports a
  signal."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum
