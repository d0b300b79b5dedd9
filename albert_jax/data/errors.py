"""The one exception type of the data package."""


class DataError(ValueError):
  """Bad data input: missing path, empty or binary corpus, unusable vocab.

  The message is a single line saying what is wrong and how to fix it;
  launchers print it as `error: ...` and exit non-zero, without a traceback.
  """
