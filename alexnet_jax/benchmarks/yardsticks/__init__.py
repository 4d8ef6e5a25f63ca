"""Yardsticks: plain, unoptimised implementations of the 2012 AlexNet training step.

The benchmark (alexnet_jax/tools/benchmark.py) times one of these in the same process and on the
same device as the project's own step, and reports ours / yardstick: ratios, not absolute times,
are what carry across machines and runs. `plain_jax` is the network as anyone would first write
it in JAX (no flax, XLA's own gradients); `pytorch` is the same network and update in PyTorch
(optional, needs requirements-torch.txt). Both are tested to be the same network
(tests/benchmarks/test_yardsticks.py), so a ratio compares implementations, not models.
"""
