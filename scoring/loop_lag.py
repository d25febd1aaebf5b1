"""Moved to :mod:`telemetry.loop_lag` and :mod:`telemetry.gc_tuning`; these names stay until
the stream door and the benchmark import them from there."""

from telemetry.gc_tuning import tune_gc
from telemetry.loop_lag import LoopLagMonitor

__all__ = ["LoopLagMonitor", "tune_gc"]
