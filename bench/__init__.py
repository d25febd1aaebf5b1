"""End-to-end benchmarks of streamscore against a relay ceiling and a naive baseline.

Run ``.venv/bin/python -m bench.run`` (``make bench``); see :mod:`bench.run` for the flags.
"""
