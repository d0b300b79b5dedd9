"""The errors a user can fix, one base class for all of them.

Each message is one line saying what is wrong and how to fix it; the
launchers print it as `error: ...` and exit non-zero, without a traceback.
The subclasses say which part of the codebase refused; nothing translates one
into another.
"""


class AlbertError(ValueError):
  """Bad input: a config, flag, path, corpus or checkpoint that cannot be used."""


class UsageError(AlbertError):
  """An impossible config or run: mesh, batch, workdir, divergence."""


class DataError(AlbertError):
  """Unusable data: a missing path, an empty or binary corpus, a bad vocabulary."""


class ExportError(AlbertError):
  """A model directory that cannot be read or written."""


class SweepError(AlbertError):
  """A sweep that cannot run or be reported."""
