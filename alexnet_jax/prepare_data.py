r"""Prepares a TFDS dataset in the array_record format that the Grain input pipeline reads.

  python -m alexnet_jax.prepare_data --dataset=imagenet2012 [--data_dir=DIR] [--manual_dir=DIR]

imagenet2012 cannot be downloaded by TFDS: register at image-net.org, put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual dir (--manual_dir, default
<data_dir>/downloads/manual) and run the command above (hours; ~150 GB of disk while it runs).
Other TFDS datasets (e.g. imagenette) are downloaded by TFDS, which needs internet.
array_record is required: tfds.data_source gives Grain random access only in that format.
"""
import os
import sys

from alexnet_jax import data_sources
from alexnet_jax.errors import UserError


def prepare(name: str, data_dir: str = '', manual_dir: str = '') -> str:
  """download_and_prepare(file_format='array_record'); returns the prepared dataset's folder."""
  tfds = data_sources.import_tfds()
  import ml_collections  # pylint: disable=g-import-not-at-top
  dataset_config = ml_collections.ConfigDict(
      {'name': name, 'data_dir': data_dir, 'manual_dir': manual_dir})
  try:
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown TFDS dataset {name!r}') from None
  if builder.is_prepared():
    print(f'{name} is already prepared in {builder.data_dir}')
    return os.fspath(builder.data_dir)
  if builder.name == 'imagenet2012':
    manual = data_sources.imagenet_manual_dir(dataset_config)
    missing = [f for f in data_sources.IMAGENET_FILES
               if not os.path.isfile(os.path.join(manual, f))]
    if missing:
      raise UserError(f'missing {" and ".join(missing)} in {manual}: download them from '
                      'image-net.org (registration needed), put them there (or pass '
                      '--manual_dir) and run this again')
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(file_format='array_record', download_config=download_config)
  print(f'prepared {name} in {builder.data_dir}')
  return os.fspath(builder.data_dir)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  try:
    prepare(f.dataset, f.data_dir, f.manual_dir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('dataset', 'imagenet2012', 'TFDS dataset name.')
  flags.DEFINE_string('data_dir', '', "TFDS data dir; '' = TFDS's default (~/tensorflow_datasets).")
  flags.DEFINE_string('manual_dir', '', "imagenet2012 archives; '' = <data_dir>/downloads/manual.")
  app.run(main)
