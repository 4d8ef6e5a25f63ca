"""Imports of TensorFlow-backed packages without TensorFlow's native start-up lines.

TF 2.21 prints oneDNN / CPU-feature / absl InitializeLog lines from C++ when it loads, whatever
TF_CPP_MIN_LOG_LEVEL says. They would land between a run's own messages and break the
one-line errors. Only the import is silenced; Python exceptions still propagate.
"""
import contextlib
import importlib
import os


@contextlib.contextmanager
def native_stderr_silenced():
  """fd 2 pointed at /dev/null for the duration (C++ writes bypass sys.stderr)."""
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def import_quietly(name: str):
  with native_stderr_silenced():
    return importlib.import_module(name)
