r"""Prepares a dataset in array_record, or writes a copy of every image's central 256 x 256.

  python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 [--data_dir=DIR] [--manual_dir=DIR]
  python -m alexnet_jax.tools.prepare_data --dataset=folder --folder=data/clothing10-128 --out_dir=DIR
  python -m alexnet_jax.tools.prepare_data --dataset=imagenet2012 --out_dir=DIR [--data_dir=...]

The first prepares a TFDS dataset (imagenet2012 from ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in its manual dir; others are downloaded by TFDS, which needs internet).
With --out_dir every image is re-encoded as a JPEG of its central --resize_size square after
the shorter side is scaled to that size (the paper's down-sampling, section 2); train on it
with --config.dataset.name=prepared --config.dataset.folder=DIR. See alexnet_jax/data/prepare.py.

After a kill, run the same command again. With --out_dir it resumes: the shards written
completely are kept (DIR/progress.json records them) and the others written; metadata.json,
written last, marks the finished copy. The TFDS step does not resume: TFDS prepares the dataset
again from the start, in a new <data_dir>/<name>/incomplete.* folder (the command names the one
the kill left: delete it); what TFDS downloaded is kept.
"""
import os

from absl import app
from absl import flags
import ml_collections

from alexnet_jax.data import prepare
from alexnet_jax.errors import UserError
from alexnet_jax.tools import cli

_DATASET = flags.DEFINE_string(
    'dataset', 'imagenet2012', "TFDS dataset name; with --out_dir also 'folder' (--folder) or "
    "'prepared'.")
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data dir; '' = TFDS's default "
                                '(~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '', "imagenet2012 archives; '' = "
                                  '<data_dir>/downloads/manual.')
_OUT_DIR = flags.DEFINE_string('out_dir', '', 'Write a prepared copy here (the central '
                               '--resize_size square, array_record) instead of preparing the '
                               'TFDS dataset; rerun after a kill to resume it.')
_FOLDER = flags.DEFINE_string('folder', '', '--dataset=folder: the root of '
                              '<split>/<class>/<images>.')
_SPLITS = flags.DEFINE_list('splits', [], "Splits to copy; '' = all of the source's.")
_RESIZE_SIZE = flags.DEFINE_integer('resize_size', 256, 'Shorter side of the stored images '
                                    '(= config.input.resize_size).')
_QUALITY = flags.DEFINE_integer('quality', 95, 'JPEG quality of the re-encoded images.')
_WORKERS = flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Re-encoding processes; '
                                '0 = this one.')
_RECORDS_PER_SHARD = flags.DEFINE_integer('records_per_shard', 10000,
                                          'Images per array_record file.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _OUT_DIR.value:
    dataset_config = ml_collections.ConfigDict(
        {'name': _DATASET.value, 'folder': _FOLDER.value, 'data_dir': _DATA_DIR.value,
         'manual_dir': _MANUAL_DIR.value})
    prepare.prepare_resized(dataset_config, _OUT_DIR.value, splits=_SPLITS.value,
                            resize_size=_RESIZE_SIZE.value, quality=_QUALITY.value,
                            workers=_WORKERS.value,
                            records_per_shard=_RECORDS_PER_SHARD.value)
  elif _DATASET.value in ('folder', 'prepared'):
    raise UserError(f'--dataset={_DATASET.value} is read as it is; --out_dir=DIR writes a '
                    'prepared copy of it')
  else:
    prepare.prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)


if __name__ == '__main__':
  cli.run(main)
