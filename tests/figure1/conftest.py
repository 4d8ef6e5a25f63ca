"""`images`: 20 embedded photos (2 of each class) at 16 px, loaded once per test file."""
import pytest

from alexnet_jax.figure1 import data
from tests import helpers
from tests.figure1 import helpers as figure1_helpers


@pytest.fixture(scope='module')
def images():
  return data.load_images(helpers.DATA, 'train', figure1_helpers.SIZE, num_images=20)
