"""What every command shares: the libraries' logs kept quiet, bad input as one line, and, on
a CPU host outside SLURM, MPI and jax.distributed launchers, malloc's transparent huge pages
(huge_pages.py).

Orbax logs every file it reads at INFO and TFDS probes data dirs at WARNING; a command prints
its own progress and results, and `--verbosity=0` brings the libraries' logs back. A UserError
(a missing dataset, a bad flag value, a workdir with no run) is `error: ...` on stderr and exit
status 2, never a traceback.
"""
import sys

from absl import app
from absl import flags
from absl import logging

from alexnet_jax.errors import RunFailure
from alexnet_jax.errors import UserError
from alexnet_jax.tools import huge_pages


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

  app.run(wrapped)
