"""alexnet_jax/tools/dataset_stats.py, the command: on the tiny config it prints the channel
statistics of the images it read and writes an .npz that dataset_stats.load_stats reads back with
the mean image at the config's resize size."""
from alexnet_jax.data import dataset_stats
from tests import helpers


def test_dataset_stats_cli(tmp_path):
  out = tmp_path / 'stats.npz'
  proc = helpers.run_tool('dataset_stats', '--config=configs/alexnet.py:tiny', f'--out={out}',
                          '--max_images=4', timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert 'mean (RGB)' in proc.stdout and '4/4 images' in proc.stdout
  assert dataset_stats.load_stats(str(out), 72)['mean_image'].shape == (72, 72, 3)


def test_a_write_that_fails_is_one_error_line_exit_3(tmp_path):
  """The commands turn a RunFailure (here the statistics file cannot be written: its folder is
  a file) into one `error:` line and exit status 3, as launch.py does, not a traceback."""
  (tmp_path / 'afile').write_text('x')
  proc = helpers.run_tool('dataset_stats', '--config=configs/alexnet.py:tiny',
                          f'--out={tmp_path}/afile/stats.npz', '--max_images=2', timeout=120)
  assert proc.returncode == 3, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'error: could not write {tmp_path}/afile/')
