"""The service fixtures in conftest.py work against the real Redis and MQTT servers."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import aiomqtt
import redis.asyncio


async def test_redis_ping_and_prefixed_key(redis_url: str, redis_key_prefix: str) -> None:
    assert redis_key_prefix.startswith("talicada-test-")
    assert redis_key_prefix.endswith(":")
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.ping()
        key = f"{redis_key_prefix}probe"
        await client.set(key, b"hello", ex=60)
        assert await client.get(key) == b"hello"
        assert [k async for k in client.scan_iter(match=f"{redis_key_prefix}*")] == [key.encode()]
    finally:
        await client.aclose()


def _mqtt_client(mqtt_url: str) -> aiomqtt.Client:
    parts = urlsplit(mqtt_url)
    return aiomqtt.Client(
        hostname=parts.hostname or "127.0.0.1",
        port=parts.port or 1883,
        username=parts.username,
        password=parts.password,
        timeout=5,
    )


async def test_mqtt_retained_roundtrip(mqtt_url: str) -> None:
    topic = f"talicada-test/{uuid.uuid4().hex}"
    payload = b"retained-probe"
    async with _mqtt_client(mqtt_url) as publisher:
        await publisher.publish(topic, payload, qos=1, retain=True)
    try:
        async with asyncio.timeout(5), _mqtt_client(mqtt_url) as subscriber:
            await subscriber.subscribe(topic, qos=1)
            message = await anext(aiter(subscriber.messages))
        assert message.topic.matches(topic)
        assert message.retain
        assert message.payload == payload
    finally:
        # An empty retained payload deletes the retained message from the broker.
        async with _mqtt_client(mqtt_url) as cleaner:
            await cleaner.publish(topic, b"", qos=1, retain=True)
