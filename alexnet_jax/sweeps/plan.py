"""A sweep's runs: the sweep config turned into launch commands, each run's resolved config, and
the check that a finished run is still the run the sweep asks for.

A run is the ordinary launch command (base config + the seed + the sweep's common overrides +
the variant's overrides) in its own workdir <sweep_dir>/<variant>/seed<k>. `resolve` builds the
config that command would train, in this process, the way launch.py's config flag does (the
config file's get_config(), then each --config.KEY=VALUE parsed by the type of the value it
replaces). A finished run whose stored config.json differs from that is refused (`check_runs`),
never reused for a sweep that now asks for something else.
"""
import dataclasses
import json
import os
import pathlib
import sys

from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags
from ml_collections.config_flags import config_path
from ml_collections.config_flags import tuple_parser

from alexnet_jax import config_changes
from alexnet_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[2]  # where launch.py is
# The parsers config_flags uses for an override of a value of each type.
_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
            float: flags.FloatParser(), str: flags.ArgumentParser(),
            tuple: tuple_parser.TupleParser()}


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int
  overrides: tuple[str, ...]  # KEY=VALUE, without the --config. prefix
  workdir: str

  @property
  def name(self) -> str:
    return f'{self.variant} seed {self.seed}'

  def overrides_with_seed(self) -> tuple[str, ...]:
    return (f'seed={self.seed}',) + self.overrides  # the order of the command line

  def command(self, base_config: str) -> list[str]:
    return [sys.executable, 'launch.py', f'--config={base_config}', f'--workdir={self.workdir}'
            ] + [f'--config.{o}' for o in self.overrides_with_seed()]


def parse_variant(spec: str) -> tuple[str, tuple[str, ...]]:
  """'no_lrn:model.norm=none,model.pool=disjoint' -> ('no_lrn', ('model.norm=none', ...))."""
  name, _, overrides = spec.partition(':')
  items = tuple(o.strip() for o in overrides.split(',') if o.strip())
  for item in items:
    if '=' not in item:
      raise UserError(f'variant {name!r}: override {item!r} is not KEY=VALUE')
  return name.strip(), items


def variant_names(sweep_config) -> list[str]:
  return [parse_variant(v)[0] for v in sweep_config.variants]


def plan(sweep_config, sweep_dir: str) -> list[Run]:
  _, common = parse_variant(f'common:{sweep_config.common}')
  names = variant_names(sweep_config)
  if sweep_config.baseline not in names:
    raise UserError(f'config.sweep.baseline={sweep_config.baseline!r} is not among the '
                    f'variants {names}')
  # Seed by seed, every variant of a seed before the next seed: a sweep stopped part way (or
  # spread over several sessions) has whole paired seeds to report, not a variant with no
  # baseline to pair with.
  variants = [parse_variant(spec) for spec in sweep_config.variants]
  return [Run(name, int(seed), common + overrides,
              os.path.join(os.path.abspath(sweep_dir), name, f'seed{seed}'))
          for seed in sweep_config.seeds for name, overrides in variants]


def resolve(base: str, overrides) -> ml_collections.ConfigDict:
  """The config `launch.py --config=base --config.O ...` trains, for O in overrides (KEY=VALUE);
  a relative config path is taken from the repository root, as the runs start there."""
  path, colon, arg = base.partition(':')
  path = path if os.path.isabs(path) else str(ROOT / path)
  if not os.path.isfile(path):
    raise UserError(f'config file {base.partition(":")[0]} not found (from {ROOT})')
  try:
    config = config_flags.ConfigFileFlagParser('config').parse(path + colon + arg)
  except (OSError, TypeError, ValueError) as e:
    raise UserError(f'config {base}: {str(e).strip().splitlines()[-1]}') from None
  for item in overrides:
    key, _, text = item.partition('=')
    try:
      parser = _PARSERS.get(config_path.get_type(key, config))
      if parser is None:
        raise TypeError('a value of this type cannot be overridden on the command line')
      config_path.set_value(key, config, parser.parse(text))
    except (AttributeError, KeyError, IndexError):
      raise UserError(f'{base}: unknown config key {key!r} (in override {item!r})') from None
    except (TypeError, ValueError) as e:
      raise UserError(f'{base}: override {item!r}: {e}') from None
  return config


def run_config(sweep_config, run: Run):
  return resolve(sweep_config.base, run.overrides_with_seed())


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def is_finished(workdir: str) -> bool:
  try:
    summary = read_json(os.path.join(workdir, 'summary.json'))
  except (OSError, ValueError):
    return False
  return summary.get('final_step') == summary.get('total_steps')


def stale_keys(config, workdir: str) -> dict[str, tuple]:
  """{key: (stored, wanted)} where the run's config.json differs from `config` in a key its
  results depend on (config_changes.changes_results: not the workers, the logging, where the
  data lives, nor the other keys a resume passes with a note, save the run's length and what
  its evaluations measure). The stored config is read as resume reads it
  (config_changes.upgrade: an earlier version's keys in today's); keys only one side has are not
  compared. A missing or unreadable config.json is '<config.json>'."""
  try:
    stored = config_changes.flatten(
        config_changes.upgrade(read_json(os.path.join(workdir, 'config.json'))))
  except (OSError, ValueError):
    return {'<config.json>': ('missing', 'present')}
  wanted = config_changes.flatten(json.loads(config.to_json()))
  return {key: (stored[key], wanted[key]) for key in sorted(stored.keys() & wanted.keys())
          if not config_changes.same(stored[key], wanted[key])
          and config_changes.changes_results(key, config)}


def _shown(diffs: dict[str, tuple]) -> str:
  return ', '.join(f'{key} ({old!r} -> {new!r})' for key, (old, new) in diffs.items())


def check_runs(sweep_config, runs: list[Run]) -> dict[Run, object]:
  """Each run's resolved config (a bad override is one error line before anything runs); a
  finished run whose stored config differs from it is refused with one line."""
  configs = {run: run_config(sweep_config, run) for run in runs}
  stale = [(run, stale_keys(configs[run], run.workdir)) for run in runs
           if is_finished(run.workdir)]
  stale = [(run, diffs) for run, diffs in stale if diffs]
  if stale:
    run, diffs = stale[0]
    more = f' (and {len(stale) - 1} more finished run(s))' if len(stale) > 1 else ''
    raise UserError(f'finished run {run.name} ({run.workdir}) was trained with another config '
                    f'than the sweep now asks for: {_shown(diffs)}{more}; move it away to '
                    'rerun it, or restore the sweep\'s settings')
  return configs
