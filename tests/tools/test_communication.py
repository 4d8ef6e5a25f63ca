"""alexnet_jax/tools/communication.py, a smoke test: on two fake CPU devices it compiles a narrow
net's train step on the (data=1, model=2) mesh and prints the collectives of the optimized HLO
and the paper's split in theory, both totals positive and their ratio 1 within 5 %. (That the
collectives are the paper's is tests/test_collectives.py's, against the layer shapes.)"""
import re

from tests import helpers


def test_communication_command_prints_the_compiled_step_and_the_theory():
  proc = helpers.run_tool('communication', '--batch=4', '--image_size=67', '--width=0.125',
                          '--num_classes=10', env=helpers.cpu_env(2))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'compiled step:' in proc.stdout and 'theory:' in proc.stdout
  total = re.search(r'compiled step: ([\d.]+) MB sent per device per step; theory: ([\d.]+) MB',
                    proc.stdout)
  assert total and float(total.group(1)) > 0 and float(total.group(2)) > 0, proc.stdout
  assert 'all-gather' in proc.stdout  # the activations crossing the split are listed
  # The input gradients are reduce-scattered, so the step sends the paper's exchange.
  assert 'reduce-scatter' in proc.stdout
  ratio = float(re.search(r'ratio ([\d.]+)', proc.stdout).group(1))
  assert 0.95 <= ratio <= 1.05, proc.stdout
