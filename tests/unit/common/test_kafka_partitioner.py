"""services.common.kafka's murmur2 and key partitioner choose what aiokafka's (and the Java client's) do."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from services.common.kafka import key_partitioner, murmur2_fast


def test_murmur2_fast_is_aiokafkas_murmur2_on_random_keys_of_every_length() -> None:
    rng = random.Random(14)
    for length in range(0, 80):
        for _ in range(200):
            key = rng.randbytes(length)
            assert murmur2_fast(key) == murmur2(key), key
    for key in (b"", b"a", b"\xff" * 33, "conversation-é-漢字".encode(), b"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"):
        assert murmur2_fast(key) == murmur2(key)


def test_key_partitioner_is_the_default_partitioner_for_keys() -> None:
    rng = random.Random(5)
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        for _ in range(500):
            key = rng.randbytes(rng.randint(1, 40))
            assert key_partitioner(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_key_less_record_goes_to_an_available_partition() -> None:
    assert key_partitioner(None, [0, 1, 2], [2]) == 2
    assert key_partitioner(None, [0, 1, 2], []) in (0, 1, 2)
