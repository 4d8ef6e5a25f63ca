"""alexnet_jax/tools/predict.py, the command, on the session's tiny training runs (conftest.py;
one with batch norm, whose running statistics it restores): one line per image naming it and
its five most probable class names (the run's classes), and an unreadable file is one error
line with exit status 2, no traceback."""
import glob
import os

import pytest

from tests import helpers


@pytest.mark.parametrize('run', ['tiny_run', 'tiny_batchnorm_run'])
def test_predict_command_prints_class_names(run, request):
  tiny_run = request.getfixturevalue(run)
  images = sorted(glob.glob(os.path.join(helpers.VAL, 'hat', '*.jpg')))[:2]
  proc = helpers.run_tool('predict', f'--workdir={tiny_run}', *images)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2 and lines[0].startswith(images[0])
  assert len(lines[0].split(': ')[1].split(', ')) == 5
  bad = helpers.run_tool('predict', f'--workdir={tiny_run}',
                         os.path.join(helpers.ROOT, 'README.md'))
  assert bad.returncode == 2 and 'cannot read image' in bad.stderr
  assert 'Traceback' not in bad.stderr
