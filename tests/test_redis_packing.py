"""Commands packed by hiredis are the bytes redis-py would send, and reach Redis intact."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from talicada.redis_packing import fast_packing

ARGUMENTS = [
    ("EVALSHA", "a" * 40, 2, "k:{1}", "k:{2}", b"\x00\xffbinary", 17, -3, 2.5, "ünïcode"),
    ("SET", "key", "x" * 100_000),  # larger than redis-py's buffer cutoff
    ("CONFIG GET", "maxmemory"),  # words in the command name go separately
    (b"CLIENT LIST",),
]


def _packer() -> Any:
    client = fast_packing(aioredis.Redis())
    connection = client.connection_pool.connection_class()
    assert type(connection).__name__ == "HiredisConnection"
    return connection


@pytest.mark.parametrize("args", ARGUMENTS)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    expected = b"".join(Connection().pack_command(*args))
    assert b"".join(_packer().pack_command(*args)) == expected


@pytest.mark.parametrize("bad", [None, True])
def test_refusals_are_redis_pys(bad: Any) -> None:
    with pytest.raises(DataError):
        _packer().pack_command("SET", "key", bad)


def test_applying_twice_keeps_one_subclass() -> None:
    client = fast_packing(fast_packing(aioredis.Redis()))
    assert client.connection_pool.connection_class.__mro__[1] is Connection


async def test_round_trip_through_redis(redis_url: str) -> None:
    client = fast_packing(aioredis.Redis.from_url(redis_url))
    key = f"test-packing:{os.getpid()}"
    value = b"\x00\xff" + "ü".encode() * 1000
    try:
        await client.set(key, value, px=10_000)
        assert await client.get(key) == value
        assert await client.eval("return ARGV[1] .. ARGV[2]", 0, 12, "ä") == "12ä".encode()
    finally:
        await client.delete(key)
        await client.aclose()
