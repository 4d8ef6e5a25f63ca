"""alexnet_jax/tools/prepare_data.py, the command: imagenet2012 without its archives is one
'error:' line (exit status 2) naming the missing archive and the directory to put it in."""
import os

from tests import helpers


def test_prepare_data_cli_error_line(tmp_path):
  proc = helpers.run_tool('prepare_data', '--dataset=imagenet2012', f'--data_dir={tmp_path}',
                          timeout=120)
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'ILSVRC2012_img_train.tar' in errors[0]
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in errors[0]
