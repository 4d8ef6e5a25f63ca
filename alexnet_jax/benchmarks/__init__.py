"""The benchmarks' measurements, without flags: timers and MFU accounting (measure.py), the
training step against its yardsticks (step_timing.py, yardsticks/), each in a worker process of
its own, timed in turn (isolated.py; worker.py, jax_worker.py, torch_worker.py), and the input
pipeline against the step (loader_timing.py). The commands over them are in alexnet_jax/tools/
(benchmark, loader_benchmark, device_check); the results are in docs/performance.md.
"""
