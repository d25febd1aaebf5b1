"""Garbage-collector settings for a long-running scoring process."""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int = 20_000) -> None:
    """Keep garbage collection from stalling the event loop.

    Called once a process has started (model loaded, clients created):
    1. ``gc.freeze()`` moves every object alive now to a permanent generation, so full
       collections no longer walk the libraries' and the model's objects.
    2. A higher first-generation threshold makes collections rarer; each batch allocates
       thousands of short-lived objects that reference counting frees anyway.
    Measured with ``python -m bench.loop_lag`` (batches of 5,000): event-loop lag p99 fell from
    about 25 ms to under 8 ms.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
