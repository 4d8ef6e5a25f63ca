"""alexnet_jax/tools/evaluate.py, the command, on the session's tiny training runs (conftest.py;
one with batch norm): it prints the centre-crop evaluation of the run's latest checkpoint with
the numbers of evaluation.evaluate_run (the library, called here in the test's own process) and
of the training run's own last evaluation, and a workdir that holds no run is one 'error:' line
with exit status 2."""
import re

import pytest

from alexnet_jax import evaluation
from tests import helpers

LINE = re.compile(r'^centre eval at step (\d+): top1 ([\d.]+) top5 ([\d.]+) loss ([\d.]+) '
                  r'on (\d+) images \(crops on the host\)$')


@pytest.mark.parametrize('run', ['tiny_run', 'tiny_batchnorm_run'])
def test_evaluate_command_prints_the_runs_centre_evaluation(run, request):
  tiny_run = request.getfixturevalue(run)
  proc = helpers.run_tool('evaluate', f'--workdir={tiny_run}')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  printed = [m for m in map(LINE.match, proc.stdout.splitlines()) if m]
  assert len(printed) == 1, proc.stdout
  step, top1, top5, loss, count = printed[0].groups()
  expected = evaluation.evaluate_run(tiny_run, ten_crop=False)
  assert (int(step), int(count)) == (expected['step'], expected['count']) == (30, 240)
  for value, key in ((top1, 'top1'), (top5, 'top5'), (loss, 'loss')):
    assert abs(float(value) - expected[key]) <= 0.5e-4 + 1e-9, (key, value, expected[key])
  # And the training run's own last evaluation (with batch norm: its running statistics).
  logged = helpers.read_summary(tiny_run)['eval']
  for value, key in ((top1, 'top1'), (top5, 'top5')):
    assert abs(float(value) - logged[key]) <= 0.5e-4 + 1e-9, (key, value, logged[key])


def test_missing_workdir_is_one_error_line(tmp_path):
  proc = helpers.run_tool('evaluate', f'--workdir={tmp_path / "no_run"}')
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
  assert 'holds no training run' in lines[0] and 'Traceback' not in proc.stderr
