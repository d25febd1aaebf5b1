"""Logging moved to :mod:`telemetry.logs`; this name stays for the CLI's imports."""

from telemetry.logs import JsonLines, configure

__all__ = ["JsonLines", "configure"]
