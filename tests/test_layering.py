"""The layout's rules, read from the source with Python's own parser (ast), not by convention:
the library imports no tool (alexnet_jax.tools.*, and a sub-package's __main__: its command,
e.g. alexnet_jax.figure1's), no module imports itself back through a cycle, only tools define
flags, imports sit at the top except heavy optional ones, nothing edits sys.path, and nothing
the project runs, tests or documents points at the `shared` folder beside a developer's clone
(a user's clone has none; CI has one, so a reader of it would pass there unseen).
"""
import ast
import os
import re
import subprocess


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'alexnet_jax'
TOOLS = 'alexnet_jax.tools'
# The only imports allowed inside functions: heavy or optional libraries, loaded where used.
LAZY_OK = ('matplotlib', 'tensorflow', 'tensorflow_datasets', 'tensorboard', 'torch')


def module_files() -> dict[str, str]:
  """{'alexnet_jax.data.pipeline': path, ...} for every module of the package."""
  found = {}
  for root, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
        found[rel.removesuffix('.__init__')] = path
  return found


MODULES = module_files()


def imported_modules(path: str) -> list[tuple[str, bool]]:
  """(alexnet_jax module imported, whether at module level) for each import in a file."""
  tree = ast.parse(open(path).read(), path)
  top_level = {id(node) for node in tree.body}
  out = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      # `from alexnet_jax.data import pipeline` imports the module alexnet_jax.data.pipeline.
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in MODULES else node.module
               for a in node.names]
    for name in names:
      out.append((name, id(node) in top_level))
  return out


def internal_graph() -> dict[str, set[str]]:
  graph = {}
  for module, path in MODULES.items():
    graph[module] = {name for name, _ in imported_modules(path)
                     if name.startswith(PACKAGE + '.') or name == PACKAGE}
  return graph


def is_tool(module: str) -> bool:
  """A command: a module of alexnet_jax.tools, or a sub-package's __main__ (`python -m
  alexnet_jax.figure1`). The library imports none of them; only they define flags."""
  return module.startswith(TOOLS) or module.endswith('.__main__')


def test_the_library_imports_no_tool():
  graph = internal_graph()
  library = [m for m in graph if not is_tool(m)]
  tools = [m for m in graph if is_tool(m)]
  assert len(library) > 20 and len(tools) >= 10  # the walk found both sides
  assert 'alexnet_jax.figure1.__main__' in tools and 'alexnet_jax.figure1.protocol' in library
  bad = {m: sorted(d for d in graph[m] if is_tool(d)) for m in library}
  assert not {m: d for m, d in bad.items() if d}


def test_no_import_cycle():
  graph = internal_graph()
  state: dict[str, int] = {}  # 1: on the current path, 2: done

  def visit(module, path):
    state[module] = 1
    for dep in sorted(graph.get(module, ())):
      if state.get(dep) == 1:
        raise AssertionError('import cycle: ' + ' -> '.join(path + [module, dep]))
      if dep in graph and not state.get(dep):
        visit(dep, path + [module])
    state[module] = 2

  for module in sorted(graph):
    if not state.get(module):
      visit(module, [])


def test_the_cycle_check_can_fail():
  """The checker itself: a graph with a cycle is caught (guards against a vacuous pass)."""
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}}
  seen, cycle = set(), []

  def visit(module, path):
    if module in path:
      cycle.append(path)
      return
    if module in seen:
      return
    seen.add(module)
    for dep in graph[module]:
      visit(dep, path + [module])

  visit('a', [])
  assert cycle


def test_imports_at_the_top_except_heavy_optional_ones():
  late = []
  for module, path in MODULES.items():
    for name, at_top in imported_modules(path):
      if not at_top and not name.startswith(LAZY_OK):
        # A try/except ImportError at module level is still the module's top.
        late.append(f'{module}: {name}')
  # simplejpeg's optional import sits in a module-level try: ast.walk reaches it below tree.body.
  assert set(late) <= {'alexnet_jax.data.preprocessing: simplejpeg'}, late


def test_only_tools_define_flags_and_read_them_in_main():
  definers = set()
  for module, path in MODULES.items():
    source = open(path).read()
    tree = ast.parse(source)
    defines = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and n.func.attr.startswith('DEFINE_')]
    if defines:
      definers.add(module)
    if not is_tool(module):
      assert not defines, f'{module} defines flags'
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
      if func.name == 'main':
        continue
      for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and node.attr == 'value' and isinstance(
            node.value, ast.Name) and node.value.id.startswith('_') and node.value.id.isupper():
          raise AssertionError(f'{module}.{func.name} reads flag {node.value.id}')
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and (
            node.value.attr == 'FLAGS') and node.attr not in ('is_parsed', 'mark_as_parsed'):
          raise AssertionError(f'{module}.{func.name} reads FLAGS.{node.attr}')
  # The walk saw flags defined, by alexnet_jax.tools' commands and by a sub-package's __main__.
  assert 'alexnet_jax.figure1.__main__' in definers
  assert any(m.startswith(TOOLS) for m in definers)


def test_nothing_imports_configs_as_a_package():
  """configs/ is a folder of config files, read by path (--config, cli.config_module): an
  `import configs...` works only from the repository root, so nothing the project runs or tests
  does one."""
  files = [p for p in tracked_text_files() if p.endswith('.py')]
  assert 'launch.py' in files and 'tests/helpers.py' in files
  bad = []
  for rel in files:
    for name, _ in imported_names(os.path.join(ROOT, rel)):
      if name == 'configs' or name.startswith('configs.'):
        bad.append(f'{rel}: {name}')
  assert not bad, bad


def imported_names(path: str) -> list[tuple[str, bool]]:
  """Every module a file imports (any package), with whether at module level."""
  tree = ast.parse(open(path).read(), path)
  top_level = {id(node) for node in tree.body}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(alias.name, id(node) in top_level) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.append((node.module, id(node) in top_level))
  return out


def test_nothing_edits_sys_path():
  for path in list(MODULES.values()) + [os.path.join(ROOT, 'launch.py')]:
    assert 'sys.path' not in open(path).read(), path


def tracked_text_files() -> list[str]:
  out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  paths = [p for p in out.splitlines()
           if p.endswith(('.py', '.md', '.txt', '.ini', '.cfg', '.toml', '.sh', '.json'))
           or p.startswith('.ci/')]
  return [p for p in paths if os.path.isfile(os.path.join(ROOT, p))]


# The parent folder's shared/ (by relative path, by its subfolders, joined with pathlib) and
# the name of the paper-facts file kept there.
SHARED = re.compile('|'.join([r'\.\./' + 'shared', 'shared' + r'/(reference|data)\b',
                              r"parent\s*/\s*'" + 'shared', 'ALEX' + r'NET\.md']))


def test_nothing_points_at_the_shared_folder():
  files = tracked_text_files()
  assert 'README.md' in files and 'launch.py' in files
  hits = []
  for rel in files:
    with open(os.path.join(ROOT, rel), errors='replace') as f:
      for number, line in enumerate(f, 1):
        if SHARED.search(line):
          hits.append(f'{rel}:{number}: {line.strip()}')
  assert not hits, '\n'.join(hits)


def test_only_the_pytorch_yardstick_imports_torch_and_only_when_used():
  """README and requirements-torch.txt: the project itself never imports torch."""
  importers = {}
  for module, path in MODULES.items():
    tree = ast.parse(open(path).read(), path)
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
      named = [a.name for a in node.names] if isinstance(node, ast.Import) else (
          [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
      dynamic = (isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'import_module'
                 and node.args and getattr(node.args[0], 'value', None) == 'torch')
      if dynamic or any(n == 'torch' or n.startswith('torch.') for n in named):
        importers.setdefault(module, []).append(id(node) in top_level)
  yardsticks = {'alexnet_jax.benchmarks.yardsticks.pytorch',
                'alexnet_jax.benchmarks.yardsticks.small_pytorch'}
  assert set(importers) == yardsticks, importers
  assert not any(any(importers[m]) for m in yardsticks)  # inside functions only


def test_ci_runs_the_readme_test_command():
  """README: `.ci/run` runs exactly the README's test command, and a newcomer finds both set-up
  commands (the demo, then the tests) on the README's first screen."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  commands = re.findall(r'^    (pip install -r requirements\S*\.txt && .+)$', readme, re.M)
  assert len(commands) == 2, commands  # the two set-up commands: the demo, the tests
  ci = open(os.path.join(ROOT, '.ci', 'run')).read()
  assert commands[1] in ci.splitlines(), (commands[1], ci)
  assert 'launch.py --config=configs/alexnet.py:demo' in commands[0], commands[0]
  first_screen = readme.split('\n')[:40]
  assert all(f'    {c}' in first_screen for c in commands), first_screen
