"""Shared pytest fixtures.

Service fixtures
----------------
The test-suite runs against *real* Redis and MQTT servers. ``make test``
(scripts/test.sh -> scripts/services.sh) makes sure they are running and exports
their URLs in ``TALICADA_TEST_REDIS_URL`` / ``TALICADA_TEST_MQTT_URL``. When a
service is unreachable the dependent tests FAIL (never skip), pointing at
``make test``, so a missing service cannot silently hide tests.

* ``redis_url``        (session)  URL of a Redis that answers PING.
* ``redis_key_prefix`` (function) unique ``talicada-test-<hex>:`` key prefix; every
                                  key under it is deleted after the test.
* ``mqtt_url``         (session)  URL of an MQTT broker that accepts TCP connections.

Add further shared fixtures below, in their own clearly-headed section.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import msgspec
import pytest
import pytest_asyncio
import redis
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import create_app
from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.broker.store.redis import RedisStore
from talicada.settings import PlatformSettings, SkahaSettings, load

if TYPE_CHECKING:
    from tests.standins.skaha import SkahaState

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
_CONNECT_TIMEOUT = 2.0  # seconds; reachability checks must never hang a test run

# --------------------------------------------------------------------------- services


def _service_missing(what: str, url: str, error: BaseException) -> NoReturn:
    pytest.fail(
        f"{what} is not reachable at {url} ({type(error).__name__}: {error}). "
        "Run the tests with `make test`, which starts the services and sets "
        "TALICADA_TEST_REDIS_URL / TALICADA_TEST_MQTT_URL.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a live Redis (``TALICADA_TEST_REDIS_URL``); fails the test if unreachable."""
    url = os.environ.get("TALICADA_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(
        url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_CONNECT_TIMEOUT
    )
    error: Exception | None = None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        error = exc
    finally:
        client.close()
    if error is not None:  # fail outside `except` to keep the report short
        _service_missing("Redis", url, error)
    return url


@pytest_asyncio.fixture
async def redis_key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix for one test; all keys under it are UNLINKed afterwards."""
    prefix = f"talicada-test-{uuid.uuid4().hex}:"  # hex only: no glob metacharacters
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """URL of a live MQTT broker (``TALICADA_TEST_MQTT_URL``); fails the test if unreachable."""
    url = os.environ.get("TALICADA_TEST_MQTT_URL", DEFAULT_MQTT_URL)
    parts = urlsplit(url)
    error: OSError | None = None
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 1883), timeout=_CONNECT_TIMEOUT
        ):
            pass
    except OSError as exc:
        error = exc
    if error is not None:  # fail outside `except` to keep the report short
        _service_missing("MQTT broker", url, error)
    return url


# --------------------------------------------------------------------------- broker

#: The requests real clients send (copied from the project's shared examples).
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: A platform that runs containers and notebooks and reaches SRCNet data, like Skaha
#: (its Skaha is nowhere: for pure tests; ``skaha_platform`` has a live stand-in).
SKAHA = PlatformSettings(
    name="skaha",
    launcher="skaha",
    executables=["docker-container", "jupyter-notebook", "ping", "delay", "checksum"],
    data=["skao-data-resource", "simple-data-resource"],
    cores=16,
    memory=64,
    skaha=SkahaSettings(url="http://127.0.0.1:9/skaha"),
)


@pytest_asyncio.fixture
async def skaha_standin() -> AsyncIterator[tuple[SkahaState, str]]:
    """A Skaha stand-in on loopback, and its base URL (``…/skaha``)."""
    from tests.standins.skaha import SkahaState, create_app

    state = SkahaState()
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/skaha"))
    await server.close()


@pytest_asyncio.fixture
async def skaha_platform(skaha_standin: tuple[SkahaState, str], tmp_path: Path) -> PlatformSettings:
    """:data:`SKAHA` launching on the ``skaha_standin``."""
    from tests.standins.skaha import DEFAULT_TOKEN

    token = tmp_path / "skaha.token"
    token.write_text(DEFAULT_TOKEN)
    live = SkahaSettings(url=skaha_standin[1], token_file=str(token))
    return msgspec.structs.replace(SKAHA, skaha=live)


STORES = ["memory", "redis"]


@pytest_asyncio.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Store]:
    """Each store implementation in turn: the same behaviour is expected of both."""
    if request.param == "memory":
        yield MemoryStore()
        return
    prefix = f"talicada-test-{uuid.uuid4().hex}"
    redis_store = await RedisStore.connect(redis_url, prefix=prefix)
    try:
        yield redis_store
    finally:
        keys = [key async for key in redis_store.client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis_store.client.unlink(*keys)
        await redis_store.close()


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest_asyncio.fixture
async def make_client(store: Store) -> AsyncIterator[ClientFactory]:
    """Start a broker on loopback over ``store``; keyword arguments override settings.

    ``platforms=[...]`` replaces the default ``local`` platform; ``clock=`` and
    ``timers=`` pass through to :func:`create_app`.
    """
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        *,
        platforms: list[PlatformSettings] | None = None,
        timers: bool = True,
        **overrides: Any,
    ) -> TestClient[web.Request, web.Application]:
        clock = overrides.pop("clock", None)
        settings = load(environ={}, **overrides)
        if platforms is not None:
            settings = msgspec.structs.replace(settings, platforms=platforms)
        extra: dict[str, Any] = {"clock": clock} if clock else {}
        app = create_app(settings, store=store, timers=timers, **extra)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def client(make_client: ClientFactory) -> TestClient[web.Request, web.Application]:
    """A default embedded-style broker (``local`` platform) over each store."""
    return await make_client()


# --------------------------------------------------------------------------- lifecycle


@pytest_asyncio.fixture
async def file_server() -> AsyncIterator[str]:
    """A loopback HTTP server with the two files the checksum example stages."""
    from tests.lifecycle_support import FILES

    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(body=FILES[name])

    app.router.add_get("/{name}", serve)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


BrokerFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest_asyncio.fixture
async def start_broker(make_client: ClientFactory, tmp_path: Path) -> AsyncIterator[BrokerFactory]:
    """Start a broker with every worker running in-process, calling back over HTTP."""
    from talicada.broker.app import run_embedded_workers

    stop = asyncio.Event()
    running: list[asyncio.Task[None]] = []

    async def start(**overrides: Any) -> TestClient[web.Request, web.Application]:
        overrides.setdefault("work_dir", str(tmp_path / "work"))
        client = await make_client(**overrides)
        url = str(client.make_url("")).rstrip("/")
        running.append(asyncio.create_task(run_embedded_workers(client.app, url, stop)))
        return client

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*running), timeout=15)


@pytest_asyncio.fixture
async def broker(start_broker: BrokerFactory) -> TestClient[web.Request, web.Application]:
    """A broker on the local platform with every worker running in-process."""
    return await start_broker()
