"""The one exception type that launch.py turns into a single line and a non-zero exit."""


class UserError(Exception):
  """Bad input from the user (config, data, workdir): reported as one line, no traceback."""
