"""A bounded, TTL'd in-process cache of entity features with single-flight loading."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from scoring.errors import EnrichmentUnavailable
from scoring.feature_store import StoredFeatures
from scoring.metrics import ScoringMetrics

Loader = Callable[[Sequence[str]], Awaitable[dict[str, StoredFeatures]]]
Lookup = dict[str, StoredFeatures | None]
"""entity_id -> stored features, or None when the entity has no document (a miss)."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    refreshes: int = 0
    """Entries reloaded ahead of their expiry."""
    refresh_failures: int = 0


class EntityCache:
    """LRU + TTL cache of :data:`Lookup` entries, absent entities included.

    This cache guarantees:
    1. An entry is served for at most ``ttl_s`` seconds after it was read.
    2. It holds at most ``max_entries`` entries (least recently used go first).
    3. Concurrent callers that miss the same entity cause one read, not many: the first
       caller's load is shared through a future; later callers await it. The load runs in a
       task of its own: a caller that goes away (a request past its deadline) does not
       cancel it for the others, and what it reads is cached all the same.
    4. A failed load is never cached; every waiter receives the error.
    5. After :meth:`clear` nothing loaded before it is served: loads still in flight are
       neither joined by later callers nor stored when they finish (a model swap changes
       what a load reads).
    6. Refresh-ahead: an entry read after ``refresh_ahead`` of its TTL has passed is reloaded
       once, in the same query as the call's misses (or, without misses, in one background
       query), so an entity in steady use never misses. The caller is served the cached value
       at once; concurrent readers share one refresh; a failed refresh keeps the old value
       until it expires (then it is a miss as usual). ``refresh_ahead=1`` turns it off.
    """

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: ScoringMetrics | None = None,
        refresh_ahead: float = 0.8,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._refresh_after = ttl_s * refresh_ahead if refresh_ahead < 1 else None
        self._refreshing: set[str] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredFeatures | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[StoredFeatures | None]] = {}
        self._generation = 0
        self.stats = CacheStats()
        self.metrics = metrics
        """Observes lookups and evictions as they happen; a pipeline sets its own here."""

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._inflight = {}
        self._generation += 1

    def _refreshed(self, loaded: dict[str, StoredFeatures], ids: Sequence[str], gen: int) -> None:
        stored_at = self._clock()
        for entity_id in ids:
            self._refreshing.discard(entity_id)
            if gen == self._generation:
                self._store(entity_id, loaded.get(entity_id), stored_at)
        self.stats.refreshes += len(ids)
        if self.metrics is not None:
            self.metrics.cache_refreshes.labels("loaded").inc(len(ids))

    def _refresh_failed(self, ids: Sequence[str]) -> None:
        self._refreshing.difference_update(ids)
        self.stats.refresh_failures += len(ids)
        if self.metrics is not None:
            self.metrics.cache_refreshes.labels("failed").inc(len(ids))

    def _refresh_in_background(self, ids: list[str], load: Loader) -> None:
        generation = self._generation

        async def refresh() -> None:
            try:
                loaded = await load(ids)
            except Exception:
                self._refresh_failed(ids)
            else:
                self._refreshed(loaded, ids, generation)

        task = asyncio.get_running_loop().create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _store(self, entity_id: str, value: StoredFeatures | None, now: float) -> None:
        self._entries[entity_id] = (now + self._ttl, value)
        self._entries.move_to_end(entity_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
            if self.metrics is not None:
                self.metrics.cache_evictions.inc()

    async def get_many(self, entity_ids: Sequence[str], load: Loader) -> Lookup:
        """Look up distinct ``entity_ids``, loading the ones not cached in one call."""
        now = self._clock()
        result: Lookup = {}
        waiting: dict[str, asyncio.Future[StoredFeatures | None]] = {}
        to_load: list[str] = []
        due: list[str] = []
        # Runs on the event loop for every entity of every batch: no calls per entity. An
        # entry is fresh before it expires, and due for a refresh (unless one is under way)
        # once past its refresh point, ``refresh_after`` after it was stored.
        entries, inflight, refreshing = self._entries, self._inflight, self._refreshing
        due_within = None if self._refresh_after is None else self._ttl - self._refresh_after
        for entity_id in dict.fromkeys(entity_ids):
            entry = entries.get(entity_id)
            if entry is not None:
                expires, value = entry
                if expires > now:
                    entries.move_to_end(entity_id)
                    result[entity_id] = value
                    if (
                        due_within is not None
                        and now >= expires - due_within
                        and entity_id not in refreshing
                    ):
                        due.append(entity_id)
                    continue
                del entries[entity_id]
            if entity_id in inflight:
                waiting[entity_id] = inflight[entity_id]
            else:
                to_load.append(entity_id)
        hits = len(result) + len(waiting)
        self.stats.hits += hits
        self.stats.misses += len(to_load)
        if self.metrics is not None:
            self.metrics.cache_lookup(hits, len(to_load))
        self._refreshing.update(due)
        if due and not to_load:
            self._refresh_in_background(due, load)

        if to_load:
            result.update(await self._load(to_load, due, load))

        for entity_id, future in waiting.items():
            result[entity_id] = await asyncio.shield(future)
        return result

    async def _load(self, to_load: list[str], due: list[str], load: Loader) -> Lookup:
        """One query for the misses (shared with concurrent callers) and the due refreshes."""
        loop = asyncio.get_running_loop()
        mine = {entity_id: loop.create_future() for entity_id in to_load}
        inflight = self._inflight
        inflight.update(mine)
        self.stats.loads += 1
        # Refreshes ride along with the misses.
        task = asyncio.ensure_future(load(to_load + due))
        self._background.add(task)
        # Registered before the wait below: the futures are settled before this caller resumes.
        task.add_done_callback(
            partial(self._settle, to_load, due, mine, inflight, self._generation)
        )
        try:
            await asyncio.shield(task)  # this caller may go; the load goes on for the others
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this caller is being cancelled
        except Exception:
            pass  # every future holds it
        return {entity_id: future.result() for entity_id, future in mine.items()}

    def _settle(
        self,
        to_load: list[str],
        due: list[str],
        mine: dict[str, asyncio.Future[StoredFeatures | None]],
        inflight: dict[str, asyncio.Future[StoredFeatures | None]],
        generation: int,
        task: asyncio.Future[dict[str, StoredFeatures]],
    ) -> None:
        """Resolve ``mine`` with the load's values (stored unless :meth:`clear` came in between)
        or its error, however it ended (cancelled before it ran included)."""
        self._background.discard(task)
        try:
            if task.cancelled():
                raise EnrichmentUnavailable("entity load was cancelled")
            failure = task.exception()
            if failure is not None:
                raise failure
            loaded = task.result()
        except Exception as exc:
            self._refresh_failed(due)
            for future in mine.values():
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters still get it
        else:
            self._refreshed(loaded, due, generation)
            stored_at = self._clock()
            current = generation == self._generation
            for entity_id, future in mine.items():
                value = loaded.get(entity_id)
                if current:
                    self._store(entity_id, value, stored_at)
                future.set_result(value)
        finally:
            for entity_id in to_load:
                if inflight.get(entity_id) is mine[entity_id]:
                    del inflight[entity_id]
