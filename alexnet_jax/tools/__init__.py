"""Command-line tools, each a thin absl command over the library (`python -m
alexnet_jax.tools.NAME --help`), sharing cli.py's conventions. The library never imports
anything from here."""
