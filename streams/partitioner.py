"""Which partition a keyed output goes to: Kafka's default rule, each key hashed once."""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2


class KeyHashPartitioner:
    """The partition of Java's (and aiokafka's) default partitioner: ``murmur2(key)`` modulo
    the partition count, so consumers that rely on a key's partition see the same one from
    either client. aiokafka computes murmur2 in Python for every record; the scorer keys by
    entity id, and the same entities come back, so each key's hash is kept (up to
    ``max_keys`` keys, then forgotten all at once). A record without a key goes to a random
    available partition, as in aiokafka."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
