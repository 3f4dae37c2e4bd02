"""Broker replicas for concurrency tests: one over memory, two sharing one Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import create_app
from talicada.broker.store import Store
from talicada.broker.store.redis import RedisStore
from talicada.settings import PlatformSettings, load
from tests.conftest import ClientFactory

Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def replicas_of(
    platform: PlatformSettings, store: Store, make_client: ClientFactory, redis_url: str
) -> AsyncIterator[list[Client]]:
    """One broker over ``store``; over Redis, a second replica on its own connection,
    as in production."""
    first = await make_client(platforms=[platform], timers=False)
    if not isinstance(store, RedisStore):
        yield [first]
        return
    other = await RedisStore.connect(redis_url, prefix=store.keys.prefix)
    settings = msgspec.structs.replace(load(environ={}), platforms=[platform])
    second: Client = TestClient(TestServer(create_app(settings, store=other, timers=False)))
    await second.start_server()
    try:
        yield [first, second]
    finally:
        await second.close()
        await other.close()
