"""The network: AlexNet (alexnet.py), the paper's two-group convolution (grouped_conv.py), Local
Response Normalization (lrn.py) and max pooling with a fast backward (pooling.py); and
cuda-convnet's CIFAR-10 net of the paper's LRN claim (cuda_convnet.py). config.model.arch picks
the net (from_config)."""
from alexnet_jax.errors import UserError
from alexnet_jax.model import alexnet
from alexnet_jax.model import cuda_convnet

ARCHS = ('alexnet', cuda_convnet.ARCH)


def from_config(model_config):
  """The net config.model.arch names, from config.model, every switch checked (each net's own
  from_config). A config stored before model.arch existed is the AlexNet's."""
  arch = model_config.get('arch', 'alexnet')
  if arch == 'alexnet':
    return alexnet.from_config(model_config)
  if arch == cuda_convnet.ARCH:
    return cuda_convnet.from_config(model_config)
  raise UserError(f'config.model.arch={arch!r}; choose one of {", ".join(ARCHS)}')
