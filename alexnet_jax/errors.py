"""The exception types that launch.py turns into a single line and a non-zero exit."""


class UserError(Exception):
  """Bad input from the user (config, data, workdir): reported as one line, no traceback
  (exit status 2)."""


class RunFailure(RuntimeError):
  """A run that cannot go on (divergence, a checkpoint that cannot be written or read),
  reported as one line that says what was kept and what to do (exit status 3)."""
