"""The entity cache: TTL, size bound, single flight, errors not cached."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from scoring import EnrichmentUnavailable, EntityCache, StoredFeatures
from scoring.metrics import ScoringMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self, data: dict[str, StoredFeatures], delay: float = 0.0) -> None:
        self.data = data
        self.delay = delay
        self.calls: list[list[str]] = []
        self.fail = False

    async def __call__(self, ids: Sequence[str]) -> dict[str, StoredFeatures]:
        self.calls.append(list(ids))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise EnrichmentUnavailable("down")
        return {i: self.data[i] for i in ids if i in self.data}


async def test_hits_misses_and_absent_entities_are_cached() -> None:
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(100, ttl_s=10, clock=Clock())
    first = await cache.get_many(["a", "b"], loader)
    second = await cache.get_many(["a", "b"], loader)
    assert first == second == {"a": {"x": 1.0}, "b": None}
    assert loader.calls == [["a", "b"]]
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)


async def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(100, ttl_s=10, clock=clock, refresh_ahead=1)  # no refresh-ahead
    await cache.get_many(["a"], loader)
    clock.now = 9.9
    await cache.get_many(["a"], loader)
    assert len(loader.calls) == 1
    clock.now = 10.0
    loader.data["a"] = {"x": 2.0}
    assert await cache.get_many(["a"], loader) == {"a": {"x": 2.0}}
    assert len(loader.calls) == 2


async def test_size_is_bounded_least_recently_used_first() -> None:
    loader = Loader({})
    cache = EntityCache(2, ttl_s=100, clock=Clock())
    await cache.get_many(["a", "b"], loader)
    await cache.get_many(["a"], loader)  # a is now more recent than b
    await cache.get_many(["c"], loader)  # evicts b
    assert len(cache) == 2
    await cache.get_many(["a"], loader)
    await cache.get_many(["b"], loader)
    assert loader.calls == [["a", "b"], ["c"], ["b"]]


async def test_concurrent_misses_for_one_entity_cause_one_read() -> None:
    loader = Loader({"a": {"x": 1.0}, "b": {"x": 2.0}}, delay=0.05)
    cache = EntityCache(100, ttl_s=100, clock=Clock())
    results = await asyncio.gather(
        *(cache.get_many(["a", "b"] if i % 2 else ["a"], loader) for i in range(50))
    )
    assert all(r["a"] == {"x": 1.0} for r in results)
    loaded = [entity for call in loader.calls for entity in call]
    assert sorted(loaded) == ["a", "b"], loader.calls


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    loader = Loader({"a": {"x": 1.0}}, delay=0.02)
    loader.fail = True
    cache = EntityCache(100, ttl_s=100, clock=Clock())
    outcomes = await asyncio.gather(
        *(cache.get_many(["a"], loader) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, EnrichmentUnavailable) for o in outcomes)
    assert len(loader.calls) == 1
    loader.fail = False
    assert await cache.get_many(["a"], loader) == {"a": {"x": 1.0}}
    assert len(loader.calls) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_load_of_the_others() -> None:
    loader = Loader({"a": {"x": 1.0}}, delay=0.05)
    cache = EntityCache(100, ttl_s=100, clock=Clock())
    first = asyncio.create_task(cache.get_many(["a"], loader))  # it starts the load
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(cache.get_many(["a"], loader)) for _ in range(3)]
    await asyncio.sleep(0.01)
    first.cancel()  # e.g. its request's deadline passed

    outcomes = await asyncio.gather(first, *others, return_exceptions=True)

    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [{"a": {"x": 1.0}}] * 3
    assert len(loader.calls) == 1
    assert await cache.get_many(["a"], loader) == {"a": {"x": 1.0}}  # cached: no new read
    assert len(loader.calls) == 1


async def test_a_load_cancelled_by_someone_else_fails_its_waiters_and_is_not_kept() -> None:
    loader = Loader({"a": {"x": 1.0}}, delay=0.05)
    cache = EntityCache(100, ttl_s=100, clock=Clock())
    callers = [asyncio.create_task(cache.get_many(["a"], loader)) for _ in range(3)]
    await asyncio.sleep(0)
    (load,) = cache._background  # the shared load, cancelled (e.g. the loop shutting down)
    load.cancel()

    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert all(isinstance(o, EnrichmentUnavailable) for o in outcomes), outcomes
    assert cache._inflight == {}
    assert await asyncio.wait_for(cache.get_many(["a"], loader), timeout=1) == {"a": {"x": 1.0}}


async def test_duplicate_ids_in_one_call_are_read_once() -> None:
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(100, ttl_s=100, clock=Clock())
    assert await cache.get_many(["a", "a", "a"], loader) == {"a": {"x": 1.0}}
    assert loader.calls == [["a"]]


@pytest.mark.parametrize("ttl", [0.001])
async def test_real_clock_default_works(ttl: float) -> None:
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(10, ttl_s=ttl)
    await cache.get_many(["a"], loader)
    await asyncio.sleep(ttl * 5)
    await cache.get_many(["a"], loader)
    assert len(loader.calls) == 2


async def test_a_load_in_flight_at_clear_is_neither_joined_nor_stored() -> None:
    class SnapshotLoader(Loader):
        """Returns the data as it was when the load started (a query's snapshot)."""

        async def __call__(self, ids: Sequence[str]) -> dict[str, StoredFeatures]:
            data = dict(self.data)
            self.calls.append(list(ids))
            await asyncio.sleep(self.delay)
            return {i: data[i] for i in ids if i in data}

    loader = SnapshotLoader({"a": {"x": 1.0}}, delay=0.05)
    cache = EntityCache(100, ttl_s=10, clock=Clock())
    old = asyncio.create_task(cache.get_many(["a"], loader))
    await asyncio.sleep(0.01)
    cache.clear()  # e.g. a model swap: what the old load reads may be wrong now
    loader.data = {"a": {"x": 2.0}}
    new = await cache.get_many(["a"], loader)
    assert await old == {"a": {"x": 1.0}}  # the caller that started it still gets it
    assert new == {"a": {"x": 2.0}}  # a caller after clear() did not join the old load
    assert len(loader.calls) == 2
    assert await cache.get_many(["a"], loader) == {"a": {"x": 2.0}}  # old result not stored
    assert len(loader.calls) == 2


async def test_lookups_and_evictions_are_observed_as_they_happen() -> None:
    metrics = ScoringMetrics()
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(2, ttl_s=100, clock=Clock(), metrics=metrics)

    def seen() -> tuple[float, float, float]:
        return (
            metrics.value("streamscore_cache_lookups_total", result="hit"),
            metrics.value("streamscore_cache_lookups_total", result="miss"),
            metrics.value("streamscore_cache_evictions_total"),
        )

    await cache.get_many(["a", "b"], loader)
    assert seen() == (0, 2, 0)
    await cache.get_many(["a", "b", "c"], loader)  # c evicts a (b was read after a)
    assert seen() == (2, 3, 1)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (2, 3, 1)


async def test_an_entry_read_near_expiry_is_refreshed_once_in_the_background() -> None:
    clock = Clock()
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(100, ttl_s=10, clock=clock, refresh_ahead=0.8)
    await cache.get_many(["a"], loader)
    clock.now = 7.9
    await cache.get_many(["a"], loader)
    assert len(loader.calls) == 1  # before the refresh point: nothing
    clock.now = 8.5
    loader.data["a"] = {"x": 2.0}
    # Many concurrent readers past the refresh point: served the cached value at once...
    results = await asyncio.gather(*(cache.get_many(["a"], loader) for _ in range(20)))
    assert all(r == {"a": {"x": 1.0}} for r in results)
    await asyncio.sleep(0)  # ...and one background refresh loads the new value
    await asyncio.sleep(0)
    assert loader.calls == [["a"], ["a"]]
    assert cache.stats.refreshes == 1
    clock.now = 12.0  # past the first expiry: the refreshed entry serves, no miss
    assert await cache.get_many(["a"], loader) == {"a": {"x": 2.0}}
    assert cache.stats.misses == 1


async def test_refreshes_ride_along_with_the_misses_of_the_same_call() -> None:
    clock = Clock()
    loader = Loader({"a": {"x": 1.0}, "b": {"x": 5.0}})
    cache = EntityCache(100, ttl_s=10, clock=clock, refresh_ahead=0.5)
    await cache.get_many(["a"], loader)
    clock.now = 6.0
    assert await cache.get_many(["a", "b"], loader) == {"a": {"x": 1.0}, "b": {"x": 5.0}}
    assert loader.calls == [["a"], ["b", "a"]]  # one query for the miss and the refresh


async def test_a_failed_refresh_keeps_the_old_value_until_it_expires() -> None:
    clock = Clock()
    loader = Loader({"a": {"x": 1.0}})
    cache = EntityCache(100, ttl_s=10, clock=clock, refresh_ahead=0.8)
    await cache.get_many(["a"], loader)
    clock.now = 9.0
    loader.fail = True
    assert await cache.get_many(["a"], loader) == {"a": {"x": 1.0}}
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.stats.refresh_failures == 1
    assert await cache.get_many(["a"], loader) == {"a": {"x": 1.0}}  # still served
    clock.now = 10.0  # expired: behaves as without refresh-ahead (a miss, the error surfaces)
    with pytest.raises(EnrichmentUnavailable):
        await cache.get_many(["a"], loader)
