"""What every command shares: the libraries' logs kept quiet, bad input as one line, and, on
a CPU host outside SLURM, MPI and jax.distributed launchers, malloc's transparent huge pages
(huge_pages.py).

Orbax logs every file it reads at INFO and TFDS probes data dirs at WARNING; a command prints
its own progress and results, and `--verbosity=0` brings the libraries' logs back. A UserError
(a missing dataset, a bad flag value, a workdir with no run) is `error: ...` on stderr and exit
status 2, never a traceback, and so is a bad flag or --config override (parse_flags). A
RunFailure (a full disk, an unreadable checkpoint) is one line and exit status 3. launch.py and
every tool run through run() below.
"""
import importlib.util
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from alexnet_jax.tools import huge_pages

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository: launch.py, configs/


def config_module(path: str):
  """A config file (e.g. 'configs/alexnet.py', relative to the repository) as a module, loaded
  by its path as --config loads it: configs/ is a folder of files, not an importable package."""
  full = path if os.path.isabs(path) else os.path.join(ROOT, path)
  name = 'config_file_' + os.path.splitext(os.path.relpath(full, ROOT))[0].replace(os.sep, '_')
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a bad flag or --config override reported as one line (exit 2)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).strip()
    if 'Traceback' in message:  # a config file that raised: its last line says why
      message = message.splitlines()[-1]
    if isinstance(e, AttributeError):
      message = f'unknown config key {message.strip(chr(34) + chr(39))}'
    print(f'error: {message} (python {argv[0]} --help lists the flags)', file=sys.stderr)
    sys.exit(2)


def run(main) -> None:
  """app.run(main) with the conventions above, in a process with malloc's huge pages where
  they were measured to help (huge_pages.py: on a CPU host the command re-executes itself once
  to get them; on a GPU or TPU host, or under a launcher, it runs as started)."""
  huge_pages.reexec_with_huge_pages()

  def wrapped(argv):
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.ERROR)
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except RunFailure as e:  # a full disk, an unreadable checkpoint: what was kept, in words
      print(f'error: {e}', file=sys.stderr)
      sys.exit(3)

  app.run(wrapped, flags_parser=parse_flags)
