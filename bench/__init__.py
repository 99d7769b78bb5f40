"""Benchmarks run by hand, not in CI (see bench/README.md).

``python bench/daemon_benchmarks.py`` and ``python bench/train_benchmarks.py`` are the entry
points; they put the repository root on ``sys.path`` so ``bench.*`` imports work as a script.
"""
