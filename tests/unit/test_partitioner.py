"""Keyed outputs land where Kafka's default partitioner puts them, with or without the cache."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from streams.partitioner import KeyHashPartitioner


def test_same_partition_as_the_default_partitioner_for_any_key_and_count() -> None:
    rng = random.Random(5)
    ours, theirs = KeyHashPartitioner(max_keys=50), DefaultPartitioner()
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(400)] + [b"user-42", "é".encode()]
    for count in (1, 2, 3, 4, 7, 12, 100):
        partitions = list(range(count))
        for key in keys + keys:  # the second pass is answered from the cache
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)


def test_java_reference_values() -> None:
    # org.apache.kafka.common.utils.Utils.toPositive(Utils.murmur2(key)) % 1000
    partitions = list(range(1000))
    partition = KeyHashPartitioner()
    assert partition(b"21", partitions, partitions) == (-973932308 & 0x7FFFFFFF) % 1000


def test_the_cache_is_bounded() -> None:
    partition = KeyHashPartitioner(max_keys=10)
    for i in range(1000):
        partition(str(i).encode(), [0, 1], [0, 1])
    assert len(partition._hashes) <= 10


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    partition = KeyHashPartitioner()
    assert {partition(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert partition(None, [0, 1, 2], []) in {0, 1, 2}
