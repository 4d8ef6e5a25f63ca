"""Command-line tools, each a thin absl command over the library (`python -m
alexnet_jax.tools.NAME --help`). The library never imports anything from here."""
