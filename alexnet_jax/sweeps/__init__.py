"""Sweeps: a base config x variants x seeds, one ordinary run per workdir.

plan.py turns a sweep config (configs/sweeps/*.py) into runs and refuses stale ones;
executors.py runs them here (N at once, each on its own cores or GPUs) or submits them to
SLURM; report.py turns finished runs into paired effects with t-intervals, tables and plots;
runner.py ties the three together for `python launch.py --config=configs/sweeps/...`.
"""
