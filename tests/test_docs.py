"""README.md and docs/**/*.md against the repository (issue 24, point 2): every relative link
resolves (the file exists inside the repository; a `#anchor` names a heading of its page by
GitHub's slug rules), every `python -m alexnet_jax.X` or `python launch.py` command they name
answers `--help`, and docs/faithfulness.md's code references (a link to a .py file followed by
backquoted names) name functions, classes, constants and tests that exist there.

The pages are read when the tests are collected, not when this file was written: a page being
rewritten is checked as it stands. External (http, https, mailto) links are not fetched: the
tests run offline. The `--help` runs share one process that imports JAX and the other common
libraries once and forks a child per command (_HELP_RUNNER). The checkers' own tests feed them
small pages with known faults, so a checker that lets everything through fails here.
"""
import functools
import glob
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from alexnet_jax import config_changes
from tests import helpers
from tests.helpers import alexnet_config

ROOT = helpers.ROOT
HELP_TIMEOUT_S = 300  # all of the commands' --help together


def pages() -> list[str]:
  """README.md and every docs page, relative to the repository."""
  found = glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True)
  return ['README.md'] + sorted(os.path.relpath(path, ROOT) for path in found)


@functools.cache
def read(page: str) -> str:
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    return f.read()


# --- Markdown: code, headings, anchors, links ---

_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.DOTALL)
_INLINE_LINK = re.compile(r'!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^()\s<>]*)>?'
                          r'(?:\s+(?:"[^"]*"|\'[^\']*\'))?\s*\)')
_REFERENCE_DEF = re.compile(r'^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)', re.MULTILINE)
_HTML_TARGET = re.compile(r'<(?:a|img)\b[^>]*?\s(?:href|src)\s*=\s*["\']([^"\']*)["\']',
                          re.IGNORECASE)
_HTML_ANCHOR = re.compile(r'<a\b[^>]*?\s(?:name|id)\s*=\s*["\']([^"\']+)["\']', re.IGNORECASE)
_ATX_HEADING = re.compile(r'^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$')
_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def outside_fences(text: str) -> list[str]:
  """The page's lines with those of fenced code blocks blanked (line numbers stay)."""
  lines, fence = [], None
  for line in text.split('\n'):
    m = _FENCE.match(line)
    if fence is None and m:
      fence = m.group(1)
      lines.append('')
    elif fence is not None:
      if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and (
          not line.strip()[len(m.group(1)):].strip()):
        fence = None
      lines.append('')
    else:
      lines.append(line)
  return lines


def slug(heading: str) -> str:
  """GitHub's anchor for a heading's text: the rendered text (a link's text, code without its
  backquotes, no HTML tags), lowercased, every character but letters, digits, '_', '-' and
  spaces dropped, each space a '-'."""
  text = re.sub(r'!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)', r'\1', heading)
  text = re.sub(r'<[^>]+>', '', text).replace('`', '')
  text = re.sub(r'[^\w\- ]', '', text.strip().lower())
  return text.replace(' ', '-')


def anchors(text: str) -> set[str]:
  """The anchors a page has: one per heading (a repeated one gets -1, -2, ...), and any HTML
  `<a name=...>` or `id=...`."""
  found, seen = set(), {}
  for line in outside_fences(text):
    m = _ATX_HEADING.match(line)
    if not m:
      continue
    base = slug(m.group(1))
    count = seen.get(base, 0)
    seen[base] = count + 1
    found.add(base if count == 0 else f'{base}-{count}')
  found.update(_HTML_ANCHOR.findall(text))
  return found


def links(text: str) -> list[tuple[int, str]]:
  """(line, target) of every link and image of a page, outside code blocks and code spans."""
  lines = outside_fences(text)
  prose = _CODE_SPAN.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), '\n'.join(lines))
  found = []
  for pattern in (_INLINE_LINK, _REFERENCE_DEF, _HTML_TARGET):
    for m in pattern.finditer(prose):
      target = m.group(m.lastindex)
      found.append((prose.count('\n', 0, m.start()) + 1, target))
  return sorted(found)


def link_problem(page: str, target: str, read_page=read, root: str = ROOT) -> str | None:
  """Why a link of `page` (relative to root) is broken, or None where it resolves. External
  links are taken as they are."""
  if _SCHEME.match(target):
    return None
  path, _, anchor = target.partition('#')
  path = urllib.parse.unquote(path)
  if not path and not anchor:
    return 'an empty link'
  if path.startswith('/'):
    return 'an absolute path (links are relative to the page)'
  if path:
    full = os.path.normpath(os.path.join(root, os.path.dirname(page), path))
    if os.path.relpath(full, root).startswith('..'):
      return f'{path} is outside the repository'
    if not os.path.exists(full):
      return f'no file {os.path.relpath(full, root)}'
    linked = os.path.relpath(full, root)
  else:
    linked = page
  if not anchor:
    return None
  if linked.endswith('.md'):
    if anchor not in anchors(read_page(linked)):
      return f'no heading #{anchor} in {linked}'
    return None
  if os.path.isfile(os.path.join(root, linked)) and re.fullmatch(r'L\d+(-L\d+)?', anchor):
    return None  # a line of a source file, as GitHub shows it
  return f'#{anchor} is not a heading or a line of {linked}'


# --- The commands a page names ---

_MODULE_COMMAND = re.compile(r'\bpython3?\s+-m\s+(alexnet_jax(?:\.[A-Za-z_][A-Za-z0-9_]*)+)')
_SCRIPT_COMMAND = re.compile(r'\bpython3?\s+(launch\.py)\b')


def commands(text: str) -> list[str]:
  """The modules (alexnet_jax.tools.evaluate, ...) and scripts (launch.py) a page runs, in code
  blocks and prose alike, once each; a placeholder (alexnet_jax.tools.NAME) is not one."""
  found = _MODULE_COMMAND.findall(text) + _SCRIPT_COMMAND.findall(text)
  return list(dict.fromkeys(c for c in found if not any(
      part.isupper() for part in c.split('.'))))


# One process runs every `--help`: it imports the libraries the commands share (JAX, Flax, ...:
# most of a command's start-up) once, then forks a child per command, which runs it as
# `python -m command --help` (or `python command --help`) would, as __main__ with that argv
# from the repository root (`python -c` puts it on sys.path, as -m does), its stdout and stderr
# in files. Thirteen commands take ~5 s of CPU this way, ~22 s as thirteen
# processes (2026-12-06, the 2-core VM).
_HELP_RUNNER = r"""
import importlib, os, runpy, sys, traceback
out_dir, commands = sys.argv[1], sys.argv[2:]
for name in ('jax', 'flax.linen', 'optax', 'orbax.checkpoint', 'grain', 'numpy', 'PIL.Image'):
  try:
    importlib.import_module(name)
  except ImportError:
    pass  # a command that needs it says so itself
for i, command in enumerate(commands):
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid:  # the exit status (the negated signal of a killed child) in a file of its own
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with open(os.path.join(out_dir, f'{i}.status'), 'w') as f:
      f.write(str(status))
    continue
  for fd, ext in ((1, 'out'), (2, 'err')):
    os.dup2(os.open(os.path.join(out_dir, f'{i}.{ext}'), os.O_WRONLY | os.O_CREAT), fd)
  sys.argv, code = [command, '--help'], 1
  try:
    if command.endswith('.py'):
      runpy.run_path(command, run_name='__main__')
    else:
      runpy.run_module(command, run_name='__main__', alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else int(e.code is not None)
  except BaseException:
    traceback.print_exc()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
"""


def run_help(commands: list[str], out_dir: str) -> dict[str, tuple[int, str, str]]:
  """{command: (exit status, stdout, stderr)} of `command --help`, each run as above."""
  env = dict(helpers.cpu_env(), ALEXNET_JAX_HUGE_PAGES='0')  # no huge-pages re-exec
  subprocess.run([sys.executable, '-c', _HELP_RUNNER, out_dir, *commands], cwd=ROOT, env=env,
                 check=True, timeout=HELP_TIMEOUT_S)
  def read_output(i, ext):
    with open(os.path.join(out_dir, f'{i}.{ext}')) as f:
      return f.read()

  return {command: (int(read_output(i, 'status')), read_output(i, 'out'), read_output(i, 'err'))
          for i, command in enumerate(commands)}


def help_problem(status: int, stdout: str, stderr: str) -> str | None:
  """Why a `--help` did not answer, or None where it did. absl's --help prints the usage and
  `Try --helpfull ...` on stdout and exits 1 (absl.app.HelpFlag); 0 is taken too."""
  if status in (0, 1) and '--helpfull' in stdout and 'Traceback' not in stderr:
    return None
  return f'exit {status}; stdout ends {stdout[-300:]!r}; stderr ends {stderr[-600:]!r}'


def named_commands() -> dict[str, list[str]]:
  """{command: the pages naming it}, over README.md and the docs."""
  named: dict[str, list[str]] = {}
  for page in pages():
    for command in commands(read(page)):
      named.setdefault(command, []).append(page)
  return named


# --- docs/faithfulness.md: the code each paper detail lives in ---

_CODE_REFERENCE = re.compile(r'\[[^\]]*\]\(([^()\s#]+\.py)\)((?:[ \t]*,?[ \t]*`[^`\n]+`)+)')


def code_references(text: str) -> list[tuple[str, str]]:
  """(linked .py path, name) for each backquoted name that follows a link to a .py file:
  [`model/lrn.py`](../alexnet_jax/model/lrn.py) `local_response_norm`, `ALPHA`."""
  return [(path, name) for path, names in _CODE_REFERENCE.findall(text)
          for name in re.findall(r'`([^`]+)`', names)]


def defines(source: str, name: str) -> bool:
  """Whether Python source defines `name` (Class.method: both): a def, a class, or an
  assignment or annotation (a module constant, a dataclass field)."""
  for part in name.split('.'):
    pattern = (rf'^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+{re.escape(part)}\b|'
               rf'^[ \t]*{re.escape(part)}[ \t]*(?::|=(?!=))')
    if not re.search(pattern, source, re.MULTILINE):
      return False
  return True


def reference_problem(page: str, path: str, name: str, root: str = ROOT) -> str | None:
  full = os.path.normpath(os.path.join(root, os.path.dirname(page), path))
  if not os.path.isfile(full):
    return f'no file {path}'
  if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*', name):
    return f'`{name}` after {path} is not a Python name'
  with open(full, encoding='utf-8') as f:
    if not defines(f.read(), name):
      return f'{path} defines no {name}'
  return None


_CONFIG_KEY = re.compile(r'`((?:seed|dataset|input|model|optimizer|mesh|distributed|train|eval)'
                         r'\.[a-z_0-9]+)(?:=[^`]*)?`')


# --- The pages as they stand ---


@pytest.mark.parametrize('page', pages())
def test_every_relative_link_resolves(page):
  broken = [f'{page}:{line}: ({target}) {problem}' for line, target in links(read(page))
            if (problem := link_problem(page, target))]
  assert not broken, '\n'.join(broken)


NO_SUCH_COMMAND = 'alexnet_jax.tools.no_such_tool'  # the help check's own test


@pytest.fixture(scope='module')
def help_results(tmp_path_factory):
  """Every named command's --help, run once for the whole file, and one that does not exist."""
  return run_help(sorted(named_commands()) + [NO_SUCH_COMMAND],
                  str(tmp_path_factory.mktemp('help')))


@pytest.mark.parametrize('command', sorted(named_commands()))
def test_every_named_command_answers_help(command, help_results):
  problem = help_problem(*help_results[command])
  assert problem is None, f'{command} --help (named in {named_commands()[command]}): {problem}'


def test_the_readme_names_the_training_command():
  """The scan finds what it is for: the README runs launch.py."""
  assert 'launch.py' in commands(read('README.md'))


def test_faithfulness_names_code_and_tests_that_exist():
  page = os.path.join('docs', 'faithfulness.md')
  references = code_references(read(page))
  assert len(references) >= 30, references  # the page's table: one or more per paper detail
  problems = [p for path, name in references if (p := reference_problem(page, path, name))]
  assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('page', pages())
def test_config_keys_named_are_config_keys(page):
  """A `model.pool`-style key a page names is a key of configs/alexnet.py (every key has a
  resume class in config_changes.KEYS, tests/test_config_changes.py), so a removed or renamed
  key cannot live on in the docs. `train.train_step` names a function of alexnet_jax/train.py."""
  keys = set(config_changes.leaf_keys(alexnet_config.get_config()))
  named = set(_CONFIG_KEY.findall(_INLINE_LINK.sub('', read(page))))  # a link's text names a file

  def module_name(dotted):
    module, name = dotted.split('.', 1)
    path = os.path.join(ROOT, 'alexnet_jax', module + '.py')
    return os.path.exists(path) and defines(open(path).read(), name)

  if page in ('docs/faithfulness.md', 'docs/resuming.md', 'docs/configs.md'):
    assert named, page
  assert not {k for k in named - keys if not module_name(k)}, sorted(named - keys)


def test_default_config_is_the_papers_recipe():
  """docs/faithfulness.md's numbers, from the paper (sections 2, 3.3-3.5, 4.1, 4.2, 5), in the
  default config: an edit of a default that departs from the paper fails here."""
  c = alexnet_config.get_config()
  assert (c.dataset.name, c.input.resize_size, c.input.image_size) == ('imagenet2012', 256, 227)
  assert (c.input.random_crop, c.input.random_flip, c.input.pca_lighting) == (True, True, True)
  assert (c.input.lighting_std, c.input.mean, c.input.standardize) == (0.1, 'pixel', False)
  assert (c.model.num_classes, c.model.norm, c.model.lrn_order) == (1000, 'lrn', 'paper')
  assert (c.model.pool, c.model.activation, c.model.init) == ('overlap', 'relu', 'paper')
  assert (c.model.dropout, c.model.dropout_placement) == (0.5, 'paper')
  assert (c.optimizer.name, c.optimizer.lr, c.optimizer.momentum) == ('sgd', 0.01, 0.9)
  assert (c.optimizer.weight_decay, c.optimizer.schedule) == (5e-4, 'plateau')
  assert (c.optimizer.plateau_factor, c.optimizer.plateau_max_decays) == (0.1, 3)
  assert (c.train.batch_size, c.train.num_epochs) == (128, 90)
  assert alexnet_config.get_config('two_gpu').mesh.model == 2


# --- The checkers themselves, on pages with known faults ---

_PAGE = """# A page

## The paper's recipe, from its own init (embedded photos)

See [the recipe](#the-papers-recipe-from-its-own-init-embedded-photos), [ok](other.md#usage),
[gone](missing.md), [bad anchor](other.md#no-such-heading), [web](https://example.com/x#y),
![img](pic.png) and [self bad](#nowhere).

```
[not a link](in-a-code-block.md)
## not a heading
```

`[not a link either](span.md)`

## Usage
## Usage
## `config.x` and **bold** [linked](other.md)
"""


def test_link_checker_finds_a_missing_file_and_a_bad_anchor(tmp_path):
  (tmp_path / 'other.md').write_text('# Other\n\n## Usage\n')
  (tmp_path / 'pic.png').write_bytes(b'')
  (tmp_path / 'page.md').write_text(_PAGE)
  read_tmp = lambda page: (tmp_path / page).read_text()
  found = {target: link_problem('page.md', target, read_tmp, str(tmp_path))
           for _, target in links(_PAGE)}
  assert found == {
      '#the-papers-recipe-from-its-own-init-embedded-photos': None,
      'other.md#usage': None,
      'missing.md': 'no file missing.md',
      'other.md#no-such-heading': 'no heading #no-such-heading in other.md',
      'https://example.com/x#y': None,
      'pic.png': None,
      '#nowhere': 'no heading #nowhere in page.md',
      'other.md': None,  # the heading's link
  }
  assert link_problem('page.md', '../outside.md', read_tmp, str(tmp_path)).endswith(
      'outside the repository')
  assert anchors(_PAGE) == {'a-page', 'the-papers-recipe-from-its-own-init-embedded-photos',
                            'usage', 'usage-1', 'configx-and-bold-linked'}


def test_command_scan_dedupes_and_skips_placeholders():
  text = ('Run `python -m alexnet_jax.tools.report --sweep_dir=x`.\n```\npython launch.py \\\n'
          '  --config=c\npython3 -m alexnet_jax.figure1 --workdir=w\n'
          'python -m alexnet_jax.tools.report --help\n```\n'
          'Each tool: `python -m alexnet_jax.tools.NAME --help`; also python -m pytest.')
  assert commands(text) == ['alexnet_jax.tools.report', 'alexnet_jax.figure1', 'launch.py']


def test_help_check_fails_a_command_that_does_not_exist(help_results):
  status, stdout, stderr = help_results[NO_SUCH_COMMAND]
  assert status == 1 and 'No module named' in stderr
  assert 'No module named' in help_problem(status, stdout, stderr)
  assert help_problem(1, 'usage\n\nTry --helpfull to get a list of all flags.\n', '') is None
  assert help_problem(0, '', '') is not None  # a module that runs, with no usage: not a command


def test_code_reference_checker_finds_a_missing_name(tmp_path):
  (tmp_path / 'mod.py').write_text('X = 1\nclass Rule:\n  cls: str\n  def describe(self):\n'
                                   '    pass\n')
  text = ('| a | [`mod.py`](mod.py) `X`, `Rule.describe` | [`mod.py`](mod.py) `Rule.cls` |\n'
          '| b | [`mod.py`](mod.py) `nothing` | [`gone.py`](gone.py) `X` |\n')
  problems = [reference_problem('page.md', path, name, str(tmp_path))
              for path, name in code_references(text)]
  assert problems == [None, None, None, 'mod.py defines no nothing', 'no file gone.py']


# The front door stays a front door (issue 24): measurements, dated, live in docs/ pages.
README_MAX_LINES = 250
_DATE = re.compile(r'\b20\d\d-\d\d-\d\d\b|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)'
                   r'[a-z]* 20\d\d\b')
_SUITE_LOG = re.compile(r'\b\d+ (tests?|passed)\b|\bsuite (runs|ran|takes|took) (in )?\d',
                        re.IGNORECASE)


def readme_problems(text: str) -> list[str]:
  lines = text.splitlines()
  problems = [f'{len(lines)} lines (at most {README_MAX_LINES})'] if len(
      lines) > README_MAX_LINES else []
  for number, line in enumerate(lines, 1):
    if _DATE.search(line):
      problems.append(f'line {number} has a date (dates live in docs/ pages): {line.strip()}')
    if _SUITE_LOG.search(line):
      problems.append(f'line {number} logs the suite (test counts, times): {line.strip()}')
  return problems


def test_readme_is_short_and_undated():
  assert not readme_problems(read('README.md'))


def test_readme_check_can_fail():
  long_page = '\n'.join(['x'] * (README_MAX_LINES + 1))
  assert readme_problems(long_page) == ['251 lines (at most 250)']
  assert len(readme_problems('measured 2026-12-06: 1102 ms\nOn Dec 2026 it ran')) == 2
  assert len(readme_problems('539 tests, 4 min 57 s\nthe suite takes 5 min')) == 2
  assert not readme_problems('batch 128, 90 epochs, 60,965,224 parameters, top-1 40.7 %')
