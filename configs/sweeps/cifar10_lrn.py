r"""The paper's LRN result on CIFAR-10 (section 3.3: 13 % test error without normalization, 11 %
with it) as one sweep: cuda-convnet's net (configs/cifar10.py) with its response norm on and
off, the same seeds for both.

  python launch.py --config=configs/sweeps/cifar10_lrn.py --workdir=runs/cifar10_lrn
  python launch.py --config=configs/sweeps/cifar10_lrn.py --workdir=runs/cifar10_lrn \
      --config.sweep.base=configs/cifar10.py:folder --config.sweep.common=dataset.folder=DIR
  python launch.py --config=configs/sweeps/cifar10_lrn.py:quick --workdir=/tmp/sweep \
      --config.sweep.common=dataset.folder=DIR,train.num_steps=2   # seconds, on DIR's images

The first reads TFDS's cifar10; the second an image folder (DIR/train, DIR/val with the 10,000
test images). Each run is <workdir>/<variant>/seed<k>; a stopped sweep resumes its unfinished
run and skips the finished ones when run again, so it can run in the background over several
sittings. The report (<workdir>/results.md) gives the paired difference no_lrn - lrn in final
10-view test top-1 over the seeds both variants finished, with its 95 % t-interval; the paper's
sign is '-' (without the norm, top-1 is lower: 87 % against 89 %).

Variants: lrn (model.norm='lrn', cuda-convnet's layers-conv-local-11pct net) and no_lrn
(model.norm='none': the same net without its two norms, cuda-convnet's 13pct file at 3878e8f).
Seeds 1, 2, 3 (paired: each seed's init and data order are the same for both variants up to the
norm). Budget: configs/cifar10.py's 45 epochs per run.
"""
import ml_collections

VARIANTS = ('lrn:', 'no_lrn:model.norm=none')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.sweep = ml_collections.ConfigDict()
  config.sweep.base = 'configs/cifar10.py'
  config.sweep.seeds = (1, 2, 3)
  config.sweep.common = ''  # the budget is the base config's
  config.sweep.variants = VARIANTS
  config.sweep.baseline = 'lrn'
  # The paper's sign of the effect on val top-1 against the baseline: no_lrn lowers it.
  config.sweep.paper_signs = ml_collections.ConfigDict({'no_lrn': '-'})
  # --submit=slurm, as configs/sweeps/ablations.py: one job-array task per run; CPU-sized.
  config.sweep.slurm = ml_collections.ConfigDict(dict(
      partition='', gpus_per_task=1, cpus_per_task=8, time_min=240, array_parallelism=6,
      signal_delay_s=120))
  if arg == 'quick':  # seconds per run: the tiny variant (needs dataset.folder in common)
    config.sweep.base = 'configs/cifar10.py:tiny'
    config.sweep.seeds = (1,)
    config.sweep.common = 'train.num_steps=2'
  elif arg not in (None, ''):
    raise ValueError(f'unknown sweep variant {arg!r}; choose: quick')
  return config
