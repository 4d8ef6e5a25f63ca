r"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) configs.

  python launch.py --config=configs/alexnet.py --workdir=runs/imagenet      # the paper's recipe
  python launch.py --config=configs/alexnet.py:demo --workdir=runs/demo     # embedded data, CPU

Variants (the part after ':'):
  (none)  The paper's recipe on imagenet2012 from its TFDS manual dir: batch 128, SGD momentum
          0.9, weight decay 5e-4, lr 0.01 divided by 10 when validation error stops improving
          (at most 3 times), ~90 epochs, N(0, 0.01) init with biases 1 (paper section 5).
  two_gpu The paper's setup: the default recipe on a mesh of data=N/2 x model=2 devices, each
          of a pair holding one channel group (section 3.2). On 8 GPUs this is data=4 x
          model=2 (global batch 128 = 32 per data shard); add --config.train.batch_size=512
          --config.optimizer.lr_scaling=linear to keep 128 per shard and scale the lr.
  demo    The full-size AlexNet on the embedded clothing10-128 photos (1000 train / 240 val,
          10 classes), sized to finish in <= 10 minutes on 2 CPU cores. It departs from the paper
          in three switches, because the paper's recipe sits at chance for thousands of steps
          (measured on these photos: docs/experiments.md):
          init='he' (fan-in normal, zero biases), optimizer AdamW 1e-4, standardised pixels.
          What it reaches, and in how long: docs/experiments.md.
  tiny    A narrow net on small crops of the embedded data, for tests (seconds per step).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data. name: 'folder' (config.dataset.folder holds train/ and val/ with one sub-folder per
  # class), 'prepared' (config.dataset.folder is a copy written by `python -m
  # alexnet_jax.tools.prepare_data ... --out_dir=DIR`: JPEGs already at input.resize_size on the
  # shorter side, in array_record, so training neither decodes full-size images nor resizes),
  # or any TFDS image-classification dataset ('imagenet2012', 'imagenette', ...) read with
  # tfds.data_source (array_record) from data_dir.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'imagenet2012'
  config.dataset.folder = ''  # 'folder': the image folder; 'prepared': the prepared copy.
  config.dataset.data_dir = ''  # TFDS data dir; '' = TFDS's default (~/tensorflow_datasets).
  config.dataset.manual_dir = ''  # imagenet2012 archives; '' = <data_dir>/downloads/manual.
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'

  # Preprocessing (paper section 2 and 4.1), all numpy inside the Grain workers.
  config.input = ml_collections.ConfigDict()
  config.input.resize_size = 256  # shorter side to 256, then the central 256x256 crop.
  config.input.image_size = 227  # random 227 crops for training, centre 227 crop for eval.
  config.input.random_crop = True  # False: the centre crop in training too (an ablation).
  config.input.random_flip = True
  config.input.pca_lighting = True  # paper 4.1: alpha_i ~ N(0, 0.1) per image per presentation.
  config.input.lighting_std = 0.1
  config.input.mean = 'pixel'  # 'pixel': the per-pixel mean image (paper); 'channel': RGB mean.
  config.input.standardize = False  # divide by the per-channel std (not in the paper).
  # Mean image, RGB std and eigenvalues: a .npz written by `python -m
  # alexnet_jax.tools.dataset_stats`, or '' = computed from the training set at the first start
  # (a seeded sample of stats_images images, one pass) and cached as <workdir>/dataset_stats.npz.
  config.input.stats_file = ''
  config.input.stats_images = 10000
  # PCA lighting's RGB eigenvalues/vectors: 'dataset' (those of the stats above, as the paper
  # computed them from its training set) or 'imagenet' (the well-known fb.resnet.torch numbers,
  # [55.46, 4.794, 1.148]; see docs/faithfulness.md).
  config.input.lighting_eigen = 'dataset'
  # Where the augmentation (crop, flip, lighting, mean, std) and eval's crops run: 'host' (numpy
  # in the Grain workers), 'device' (JAX inside the jitted step; the workers only decode and the
  # transfer is uint8 R x R), 'auto' = device on GPU/TPU, host on a CPU.
  config.input.augment_on = 'auto'
  # Grain worker processes; 0 = decode in the main process; -1 = from the machine
  # (pipeline.loader_size: on a CPU backend 0, the step needs the cores; on a GPU/TPU every
  # core of this process's share but one decodes, up to 8 threads per process, past that in
  # workers). The run's start-up line says what was chosen.
  config.input.workers = -1
  # Read threads per process, each reading and decoding one batch at a time (so also the
  # batches read ahead). With workers=0 and augment_on='device' they decode side by side in the
  # main process (simplejpeg lets go of the GIL) and no batch crosses shared memory: see
  # docs/input_pipeline.md for what each way costs per image. -1 = from the machine (2 on a CPU
  # backend; on a GPU/TPU the decoding cores over the processes).
  config.input.prefetch = -1
  # Unreadable images (gone since the run's file index was built, truncated, not images) are
  # skipped and counted; past this fraction of the training images read since the last check
  # (at log steps, >= 1000 images) or of an evaluation's images, the run stops with one line:
  # a lost mount or a moved folder, not a few bad files. 1 = never stop.
  config.input.max_unreadable_frac = 0.01

  config.model = ml_collections.ConfigDict()
  # The net: 'alexnet' (the paper's); 'cuda_convnet_cifar10' (cuda-convnet's CIFAR-10 net of
  # the paper's LRN claim, section 3.3; configs/cifar10.py): model.norm 'lrn' or 'none', the
  # AlexNet's other switches at their defaults (dropout 0).
  config.model.arch = 'alexnet'
  config.model.num_classes = 1000
  # Normalisation (paper 3.3 has LRN): 'lrn'; 'batchnorm' (batch norm where the LRNs sit, in
  # lrn_order's place); 'batchnorm_all' (conv -> batch norm -> ReLU in every conv layer, the
  # later practice); 'none' (no normalisation: the no-LRN ablation). Batch norm postdates the
  # paper (2015).
  config.model.norm = 'lrn'
  config.model.lrn_order = 'paper'  # 'paper': ReLU -> LRN -> pool; 'caffe': ReLU -> pool -> LRN.
  config.model.pool = 'overlap'  # 'overlap': 3x3 stride 2 (paper 3.4); 'disjoint': 2x2 stride 2.
  config.model.dropout = 0.5  # rate; 0 turns it off.
  # 'paper': the outputs of fc6 and fc7 (after their ReLUs; section 4.2, Caffe's drop6/drop7);
  # 'torchvision': the inputs of fc6 and fc7 (pool5's and fc6's outputs).
  config.model.dropout_placement = 'paper'
  config.model.activation = 'relu'  # 'relu' or 'tanh' (paper 3.1, Figure 1).
  # Depth ablation (paper section 6: removing any middle conv layer costs ~2 % top-1): a
  # comma-separated subset of conv3, conv4, conv5 to leave out; the rest of the net adapts.
  config.model.remove_convs = ''
  config.model.dtype = 'float32'  # compute dtype; params are always float32.
  config.model.init = 'paper'  # 'paper': N(0, 0.01), biases 1 in conv2/4/5, fc6/7; 'he'.
  config.model.width = 1.0  # channel multiplier; 1.0 is the paper's net (tests use less).
  # Implementation choices with identical results (measured by
  # `python -m alexnet_jax.tools.benchmark`):
  # LRN 'fast' (custom_vjp), 'autodiff' or 'reduce_window'; grouped convs 'halves' (one conv
  # per group), 'feature_group' (XLA's feature_group_count) or 'im2col'; max pooling 'fast'
  # (custom_vjp) or 'xla' (reduce_window's own gradient). 'auto' is each one's fastest where it
  # was measured, CPU (fast, halves, fast), and the plain XLA form (reduce_window,
  # feature_group, xla) on GPU/TPU, where none was measured yet.
  config.model.lrn_impl = 'auto'
  config.model.conv_impl = 'auto'
  config.model.pool_impl = 'auto'

  # Optimizer: 'sgd' is the paper's update v <- 0.9 v - wd*lr*w - lr*g; w <- w + v.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'  # 'sgd' or 'adamw'.
  config.optimizer.lr = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  # 'linear': lr x batch_size / 128 (Goyal et al. 2017) when the global batch departs from the
  # paper's 128; 'none': lr as given.
  config.optimizer.lr_scaling = 'none'
  config.optimizer.schedule = 'plateau'  # 'plateau' (paper), 'step', 'cosine', 'constant'.
  # 'plateau' (section 5: lr / 10 "when the validation error rate stopped improving", three
  # times): a decay when the last plateau_patience evaluations brought no new best that is at
  # least plateau_threshold (relative) below the best before them. Never while the validation
  # top-1 is within 3 standard deviations of chance (the paper's init sits there for thousands
  # of steps) nor before plateau_min_epochs. Defaults: one evaluation per epoch, so a decay
  # needs 5 epochs with less than a 1 % relative gain (e.g. 40.0 % -> 39.6 % error); the
  # paper's ~3 decays in 90 epochs leave ~20-30 epochs per lr, so 5 is patient without
  # wasting a third of a stage, and 10 epochs is well past the slow start.
  config.optimizer.plateau_factor = 0.1
  config.optimizer.plateau_patience = 5  # evaluations without a significant new best.
  config.optimizer.plateau_threshold = 0.01  # relative: a new best must be 1 % below the best.
  config.optimizer.plateau_min_epochs = 10.0  # no decay before this epoch.
  config.optimizer.plateau_max_decays = 3
  config.optimizer.step_epochs = 30.0  # 'step': divide by 10 every this many epochs.
  # 'step' at given epochs instead: comma-separated, increasing, e.g. '30,35' = lr until epoch
  # 30, lr/10 until 35, lr/100 after (cuda-convnet's stages). '' = every step_epochs.
  config.optimizer.step_at_epochs = ''
  # Per-parameter factors for 'sgd' (Caffe's lr_mult / decay_mult; cuda-convnet's epsB, and wc
  # per layer): biases (every leaf named 'bias') take lr x bias_lr_mult and weight_decay x
  # bias_decay_mult; the weights of a layer named in decay_mults ('LAYER=FACTOR,...', e.g.
  # 'conv1=0,conv2=0') weight_decay x FACTOR. 1, 1, '' = the paper's update (all alike).
  config.optimizer.bias_lr_mult = 1.0
  config.optimizer.bias_decay_mult = 1.0
  config.optimizer.decay_mults = ''
  # Linear warm-up from 0 over this many epochs, under every schedule (Goyal et al. 2017: with
  # lr_scaling='linear' at large batches). 'plateau' makes no decay during the warm-up.
  config.optimizer.warmup_epochs = 0.0

  # Devices: a ('data', 'model') mesh. model=2 is the paper's two-GPU split (each device holds
  # one channel group); data=-1 uses every remaining device for data parallelism.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1

  # Several hosts: every process runs the same command. auto=True starts jax.distributed in a
  # detected cluster (SLURM, Open MPI, multi-host TPU, JAX_COORDINATOR_ADDRESS); or set the
  # coordinator ('host:port'), the number of processes and this process's id explicitly.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.auto = True
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = -1
  config.distributed.process_id = -1

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128  # global batch.
  config.train.num_epochs = 90
  config.train.num_steps = -1  # > 0 overrides num_epochs (total steps, not more).
  config.train.eval_every_epochs = 1.0
  config.train.checkpoint_every_steps = 5000
  config.train.keep_checkpoints = 3
  config.train.log_every_steps = 50
  # A non-finite loss or gradient: 'stop' (one-line error naming the step; the state and the
  # last checkpoint stay the last good ones) or 'skip' (drop that update, count it, go on).
  config.train.on_nonfinite = 'stop'
  # A run whose validation top-1 is still at chance (within 3 standard deviations of 1/classes)
  # after chance_epochs epochs says so in one line: 'warn' goes on, 'stop' ends the run there
  # (its checkpoint saved; exit status 3). 0 = never check. An ImageNet epoch is ~10,000 steps.
  config.train.chance_epochs = 5.0
  config.train.on_chance = 'warn'
  # Resume refuses a changed setting that changes the experiment (docs/resuming.md); name such
  # keys here, comma-separated, to resume anyway, e.g. 'model.dropout'.
  config.train.allow_changed = ''

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 128  # global, as train.batch_size: split over processes, data shards.
  config.eval.ten_crop = False  # paper 4.1: softmax averaged over 4 corners + centre and flips.

  if arg in (None, '', 'imagenet'):
    pass
  elif arg == 'demo':
    _demo(config)
  elif arg == 'two_gpu':
    config.mesh.model = 2  # the paper: each of two devices holds one channel group
  elif arg == 'tiny':
    _demo(config)
    _tiny(config)
  else:
    raise ValueError(f'unknown config variant {arg!r}; choose one of: demo, two_gpu, tiny')
  return config


def _demo(config):
  config.dataset.name = 'folder'
  config.dataset.folder = 'data/clothing10-128'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'
  config.input.stats_file = 'data/clothing10-128/stats.npz'
  config.input.standardize = True
  config.input.workers = 1
  config.model.num_classes = 10
  config.model.init = 'he'
  config.optimizer.name = 'adamw'
  config.optimizer.lr = 1e-4
  config.optimizer.schedule = 'constant'
  config.train.batch_size = 32
  config.train.num_epochs = 6
  config.train.checkpoint_every_steps = 93  # 3 epochs of 31 steps.
  config.train.keep_checkpoints = 1
  config.train.log_every_steps = 5
  config.eval.batch_size = 48


def _tiny(config):
  config.input.resize_size = 72
  config.input.image_size = 67
  config.input.workers = 0
  config.model.width = 0.125
  config.train.batch_size = 8
  config.train.num_epochs = 1
  config.train.log_every_steps = 1
  config.eval.batch_size = 16
