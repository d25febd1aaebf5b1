"""The consumers the bench compares, each run in its own process by :mod:`bench.workers`."""
