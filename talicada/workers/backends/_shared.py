"""What back ends that follow an outside service share.

* :class:`Ledger` — what a back end must remember across restarts (the Skaha
  sessions it follows, the staging jobs in flight), kept in Redis beside the
  streams in production and in memory when embedded. The broker's record is
  the authority on a component (its handle); the ledger only lets a restarted
  worker resume following without asking the broker.
* :class:`CallbackListener` — a small HTTP server a worker runs when a service
  offers callbacks (docs/service-callbacks.md): it checks each delivery's
  signature and hands the verified change to the back end, so nothing polls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from aiohttp import web

from talicada import constants
from talicada.events.bus import Bus
from talicada.services.callbacks import (
    CallbackError,
    CallbackEvent,
    decode_callback,
    verify_callback,
)

log = structlog.get_logger("talicada.worker.backends")


class Ledger(Protocol):
    """A durable map per name (one per back end and platform) of small records."""

    async def put(self, name: str, key: str, value: bytes) -> None:
        """Remember ``value`` under ``key`` in map ``name``."""
        ...

    async def drop(self, name: str, key: str) -> None:
        """Forget ``key`` in map ``name`` (nothing when absent)."""
        ...

    async def all(self, name: str) -> dict[str, bytes]:
        """Everything map ``name`` holds."""
        ...


class MemoryLedger:
    """The ledger of embedded mode: gone with the process, like everything embedded."""

    def __init__(self) -> None:
        self._maps: dict[str, dict[str, bytes]] = {}

    async def put(self, name: str, key: str, value: bytes) -> None:
        self._maps.setdefault(name, {})[key] = value

    async def drop(self, name: str, key: str) -> None:
        self._maps.get(name, {}).pop(key, None)

    async def all(self, name: str) -> dict[str, bytes]:
        return dict(self._maps.get(name, {}))


class RedisLedger:
    """The ledger in one Redis hash per map, under the deployment's key prefix."""

    def __init__(self, client: object, keys: constants.Keys) -> None:
        import redis.asyncio as aioredis

        assert isinstance(client, aioredis.Redis)
        self.client = client
        self.keys = keys

    async def put(self, name: str, key: str, value: bytes) -> None:
        await self.client.hset(self.keys.ledger(name), key, value)

    async def drop(self, name: str, key: str) -> None:
        await self.client.hdel(self.keys.ledger(name), key)

    async def all(self, name: str) -> dict[str, bytes]:
        found = await self.client.hgetall(self.keys.ledger(name))
        return {_text(key): _bytes(value) for key, value in found.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


#: One ledger per in-memory bus, so embedded workers of one process share it.
_MEMORY_LEDGERS: dict[int, MemoryLedger] = {}


def ledger_for(bus: Bus) -> Ledger:
    """The ledger that lives where ``bus`` lives (Redis, or this process's memory)."""
    from talicada.events.redis_bus import RedisBus

    if isinstance(bus, RedisBus):
        return RedisLedger(bus.client, bus.keys)
    return _MEMORY_LEDGERS.setdefault(id(bus), MemoryLedger())


OnChange = Callable[[CallbackEvent], Awaitable[None]]


class CallbackListener:
    """Receives a service's signed callbacks on ``listen`` (``host:port``).

    Each listener makes its own secret and gives it to the service when it
    registers (:attr:`secret`), so no secret needs configuring; a delivery
    that is unsigned, wrongly signed or stale is answered 401 and ignored.
    """

    def __init__(self, listen: str, on_change: OnChange) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.on_change = on_change
        self.secret = secrets.token_hex(32)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen until :meth:`stop`."""
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("callbacks.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_callback(self.secret.encode(), request.headers, body, time.time())
        except CallbackError as error:
            log.warning("callbacks.refused", reason=str(error))
            return web.Response(status=401, text=str(error))
        try:
            change = decode_callback(body)
        except CallbackError as error:  # signed but unreadable: retrying will not help
            log.warning("callbacks.malformed", reason=str(error))
            return web.Response(status=400, text=str(error))
        try:
            await self.on_change(change)
        except Exception as error:  # the service retries: tell it this one did not land
            log.exception("callbacks.failed", id=change.id)
            return web.Response(status=503, text=f"{type(error).__name__}")
        return web.Response(status=204)


async def sleep_until(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
