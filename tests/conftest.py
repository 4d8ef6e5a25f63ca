"""8 fake CPU devices for the sharding tests; set before JAX is imported anywhere.

The tests start many small training runs (launch.py in subprocesses) of the same few configs;
JAX's persistent compilation cache, shared through the environment with those processes, lets
all but the first of each skip XLA compilation (on 2 CPU cores: ~20 s -> ~2 s per run).
"""
import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'alexnet_jax_tests_jit_cache'))
