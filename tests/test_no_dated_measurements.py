"""No dated measurements in the code (issue 24, point 3): a measured number goes stale where it
sits, so the docs pages hold them, dated, and a docstring says what the code does and why,
pointing to the page ("measured faster on the CPU: docs/performance.md").

The rule, over every .py file under alexnet_jax/ and configs/ (library, commands and configs):

  1. A date fails on any line, code included: 2026-11-30, 2026/11/30, Nov 2026, 30 Nov 2026,
     November 30, 2026. A dated sentence is a log entry, and logs live in docs/.
  2. In prose (a block of consecutive comment lines, or one blank-line-separated paragraph of a
     docstring or other bare string, its lines joined) a measured quantity fails:
     a. a number with a speed unit (ms, s/step, s per step, img/s, images/s, GB/s, MB/s,
        GFLOP/s, TFLOP/s), which nothing but a measurement has; or
     b. a number with a unit of time, size or share (s, min, h, KB, MB, GB, KiB, MiB, GiB, %, a
        ratio like 1.9x, "6x faster") in a sentence of the paragraph holding a word that reports
        a measurement (measured, took, timed, clocked, benchmarked). A sentence ends at '.',
        '!' or '?' and a space, except after e.g., i.e., et al., cf. and vs.
  3. ALLOWED names the deliberate exceptions, each with its reason: text of one file that is
     taken out of its paragraph before rule 2 reads it (a paper's figure, a target, a constant).

What passes: computed facts (4.3 GFLOP per image, 196,608 bytes, ~10,000 steps an epoch),
the paper's numbers (60,965,224 parameters, beta 0.75, "about +2 % top-1 error"), targets and
constants (TARGET_END_TO_END = 0.9, a 300 s timeout), rough run times a command's usage line
gives (~5 min), and "measured" without a number. Strings the code prints are not prose:
a format string like f'{x:.1f} ms' is not read by rule 2.
"""
import ast
import io
import os
import re
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ('alexnet_jax', 'configs')

# (file relative to the repository, text in it) -> why that text is not a measurement.
ALLOWED = {
    ('alexnet_jax/tools/huge_pages.py', 'transparent huge pages (2 MiB)'):
        "x86's huge page size, a constant of the hardware",
    ('configs/sweeps/ablations.py', 'ReLU trains 6x faster'):
        "the paper's Figure 1 claim (section 3.1), not a measurement here",
    ('configs/sweeps/ablations.py', 'tanh trains 6x slower'):
        "the paper's Figure 1 claim (section 3.1), not a measurement here",
}

_MONTH = (r'(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|'
          r'Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?')
DATE = re.compile(r'\b20\d\d([-/])\d\d\1\d\d\b'  # 2026-11-30, 2026/11/30
                  rf'|\b(?:\d{{1,2}}\s+)?{_MONTH}\s+(?:\d{{1,2}},?\s+)?20\d\d\b')  # Nov (30,) 2026
_NUMBER = r'(?<![\w.])~?\d[\d,]*(?:\.\d+)?[kM]?(?:\s*(?:-|to)\s*~?\d[\d,]*(?:\.\d+)?[kM]?)?'
SPEED = re.compile(_NUMBER + r'\s*(?:ms|s/step|s per step|img/s|images?/s|[KMGT]i?B/s|'
                   r'[GT]FLOP/s)(?![\w/])')
QUANTITY = re.compile(_NUMBER + r'(?:\s*(?:%|s|sec|seconds?|min|minutes?|h|hours?|[KMGT]i?B)'
                      r'(?![\w/])|x(?![\w])|\s*x\s+(?:faster|slower))')
MEASURED = re.compile(r'\b(?:[Mm]easured|[Tt]ook|[Tt]imed|[Cc]locked|[Bb]enchmarked)\b')
SENTENCE_END = re.compile(r'(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bal\.)(?<!\bcf\.)(?<!\bvs\.)'
                          r'(?<=[.!?])\s+')


def prose(source: str) -> list[tuple[int, str]]:
  """(first line, text) of every comment block and every paragraph of every bare string
  (docstrings included) of a Python source, each paragraph's lines joined by spaces."""
  out = []
  comments = [(t.start[0], t.string.lstrip('#').strip())
              for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.COMMENT]
  for i, (line, text) in enumerate(comments):
    if i and comments[i - 1][0] == line - 1:  # the block above goes on
      out[-1] = (out[-1][0], f'{out[-1][1]} {text}')
    else:
      out.append((line, text))
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)):
      line = node.lineno
      for paragraph in re.split(r'\n\s*\n', node.value.value):
        out.append((line, ' '.join(paragraph.split())))
        line += paragraph.count('\n') + 2
  return out


def findings(source: str, path: str = '<sample>') -> list[str]:
  """'path:line: why: text' for every place the rule (module docstring) fails in a source."""
  found = []
  for number, line in enumerate(source.splitlines(), 1):
    if DATE.search(line):
      found.append(f'{path}:{number}: a date: {line.strip()}')
  for number, text in prose(source):
    for (allowed_path, allowed), _ in ALLOWED.items():
      if allowed_path == path:
        text = text.replace(allowed, ' ')
    speed = SPEED.search(text)
    if speed:
      found.append(f'{path}:{number}: a speed ({speed.group().strip()}): {text}')
      continue
    for sentence in SENTENCE_END.split(text):
      quantity = QUANTITY.search(sentence)
      if quantity and MEASURED.search(sentence):
        found.append(f'{path}:{number}: a measured quantity ({quantity.group().strip()}): '
                     f'{sentence}')
  return found


def scanned_files() -> list[str]:
  """Every .py file under SCANNED, relative to the repository, '/'-separated."""
  files = []
  for top in SCANNED:
    for root, _, names in os.walk(os.path.join(ROOT, top)):
      files += [os.path.relpath(os.path.join(root, n), ROOT).replace(os.sep, '/')
                for n in names if n.endswith('.py')]
  return sorted(files)


def test_no_dated_measurements_in_the_code():
  files = scanned_files()
  assert 'alexnet_jax/model/pooling.py' in files and 'configs/alexnet.py' in files
  found = []
  for path in files:
    with open(os.path.join(ROOT, path)) as f:
      found += findings(f.read(), path)
  assert not found, ('measured numbers belong in docs/ (dated there); say why here and name '
                     'the page, or add a deliberate exception to ALLOWED:\n' + '\n'.join(found))


def test_every_allowed_exception_is_still_there():
  """An exception whose text is gone would silently allow the next measurement to match it."""
  for path, text in ALLOWED:
    with open(os.path.join(ROOT, path)) as f:
      assert any(text in paragraph for _, paragraph in prose(f.read())), (path, text)


def test_the_checker_fails_on_measurements():
  dated = [
      '# Measured 2026-11-30 on the 2-core VM.\n',
      'x = 1  # as of 2026/12/06\n',
      '"""The demo, Nov 2026."""\n',
      '"""Rerun 6 Dec 2026."""\n',
      '"""Rerun December 6, 2026."""\n',
  ]
  for source in dated:
    assert [f for f in findings(source) if 'a date' in f], source
  measured = [
      # a speed needs no other word
      '"""The step took 1604 ms against 2056 ms with the defaults."""\n',
      '# one process caps near 20k img/s\n',
      '"""YNNPACK ran at 30-60 GFLOP/s here."""\n',
      # a share, a time or a ratio with a measurement word, across a wrapped comment block
      '# conv gradients came out 20-70 % wrong that way (model.norm=batchnorm_all,\n'
      '# measured on a mesh)\n',
      'def f():\n  """What it does.\n\n  Two threads timed 1.3-2.6x the rate of one."""\n',
      '"""A 4-D normal took ~3 s to compile, a flat one ~0.5 s."""\n',
      '"""Measured: about 1,000 faults and 1.33-1.37 s per step."""\n',
      '"""The loader was measured at 40 MB; dropout 6x slower."""\n',
  ]
  for source in measured:
    assert findings(source), source


def test_the_checker_passes_what_is_not_a_measurement():
  fine = [
      '"""Krizhevsky, Sutskever, Hinton (NIPS 2012): 60,965,224 parameters, beta 0.75."""\n',
      '# paper section 6: removing any middle conv layer costs ~2 % top-1\n',
      'TARGET_END_TO_END = 0.9  # the loader feeding >= 90 % of the synthetic-batch rate\n',
      '"""4.3 GFLOP per 227 px image; 196,608 bytes per image; G x kh x kw x 3 x O."""\n',
      '# a 3x3 stride-2 pool, 2 x MACs, x3 for the backward\n',
      '"""The others wait there (300 s) instead."""\n',
      '"""Measured faster on the CPU: docs/performance.md."""\n',
      "line = f'{ms:.1f} ms, measured {pct:.1f} %'  # a format string is not prose\n",
      '"""Orbax 0.12.8, tensorstore 0.1.86, Goyal et al. 2017."""\n',
  ]
  for source in fine:
    assert not findings(source), (source, findings(source))


def test_an_allowed_text_is_taken_out_of_its_paragraph_only():
  path = 'configs/sweeps/ablations.py'
  allowed = '# paper Figure 1: ReLU trains 6x faster\n'
  assert findings(allowed.replace('trains', 'measured'), path)
  assert not findings('# measured: ReLU trains 6x faster\n', path)
  assert findings('# measured: ReLU trains 6x faster, ours 5x\n', path)
  assert findings('# measured: ReLU trains 6x faster\n', 'configs/alexnet.py')
