"""What crosses the 'model' axis in one training step: read from the compiled HLO, and derived
from the paper's architecture (section 3.2: the GPUs talk at conv3's input and at the FC layers).

`collectives(hlo_text)` lists a compiled program's collectives with their sizes;
`paper_exchange` / `expected_model_collectives` give what the paper's split needs in theory.
The command `python -m alexnet_jax.tools.communication` prints both for the train step.
"""
import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp

_COLLECTIVE = re.compile(
    r'=\s*(?P<shapes>\(.*?\)|\S+)\s+(?P<kind>all-gather|all-reduce|reduce-scatter|'
    r'collective-permute|all-to-all)(?:-start)?\(')
_SHAPE = re.compile(r'(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]')
_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'f64': 8, 'pred': 1}


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str  # all-gather, all-reduce, ...
  operands: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, shape) of each result
  group_size: int  # devices that exchange data; 1 = no communication
  op_name: str

  def elements(self) -> list[int]:
    return [math.prod(shape) for _, shape in self.operands]

  def input_elements(self) -> list[int]:
    """Elements of each input: a reduce-scatter's is group_size of its results."""
    scale = self.group_size if self.kind == 'reduce-scatter' else 1
    return [n * scale for n in self.elements()]

  def bytes_sent_per_device(self) -> float:
    """Ring algorithms, from the result's bytes: an all-gather sends (n-1)/n of its result;
    a reduce-scatter (n-1)/n of its input, which is n results, so n-1 results; an all-reduce
    is both, 2(n-1)/n of its result. A permute or all-to-all: (n-1)/n of the result."""
    n = self.group_size
    result = sum(math.prod(s) * _BYTES.get(d, 4) for d, s in self.operands)
    factor = {'all-reduce': 2 * (n - 1) / n, 'reduce-scatter': n - 1}.get(self.kind,
                                                                          (n - 1) / n)
    return result * factor


def _group_size(line: str) -> int:
  explicit = re.search(r'replica_groups=\{\{([\d,]*)\}', line)
  if explicit:
    return len(explicit.group(1).split(','))
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', line)
  if iota:
    return int(iota.group(2))
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
  if mesh:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
    axes = re.findall(r"'(\w+)'", mesh.group(2))
    return math.prod(int(sizes[a]) for a in axes)
  return 1


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective op in an optimized HLO module's text."""
  found = []
  for line in hlo_text.splitlines():
    match = _COLLECTIVE.search(line)
    if not match or '-done' in line.split('=')[1][:40]:
      continue
    operands = tuple((m.group('dtype'), tuple(int(d) for d in m.group('dims').split(',') if d))
                     for m in _SHAPE.finditer(match.group('shapes')))
    op_name = re.search(r'op_name="([^"]*)"', line)
    found.append(Collective(match.group('kind'), operands, _group_size(line),
                            op_name.group(1) if op_name else ''))
  return found


def paper_exchange(model, batch: int, image_size: int) -> dict[str, int]:
  """Elements of each activation the paper's GPUs exchange, from the model's own shapes.

  Forward, each device needs the other's half of: conv3's input (pool2), fc6's input (pool5),
  fc7's and fc8's inputs (the units of fc6 / fc7), and the logits (fc8's units) for the softmax.
  Backward, the gradients of the same inputs flow the other way (the logits' gradient is
  already split, so it needs none).
  """
  params = jax.eval_shape(functools.partial(model.init, train=False),
                          {'params': jax.random.PRNGKey(0)},
                          jnp.zeros((1, image_size, image_size, 3)))
  x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']), params, x)
  inter = {k: math.prod(v[0].shape) for k, v in state['intermediates'].items()}
  return {'conv3 input (pool2)': inter['pool2'], 'fc6 input (pool5)': inter['pool5'],
          'fc7 input (fc6 units)': inter['fc6_out'], 'fc8 input (fc7 units)': inter['fc7_out'],
          'logits (fc8 units)': math.prod(logits.shape)}


def expected_model_collectives(model, batch: int, image_size: int) -> dict[str, list[int]]:
  """Element counts of the collectives the split needs: the inputs of conv3 and the FC layers
  and the logits gathered forward; the same inputs' gradients reduce-scattered backward (each
  device keeps its half's sum; the logits' gradient is already split)."""
  exchange = paper_exchange(model, batch, image_size)
  forward = sorted(exchange.values())
  backward = sorted(v for k, v in exchange.items() if not k.startswith('logits'))
  return {'gather': forward, 'reduce_scatter': backward}
