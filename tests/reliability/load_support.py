"""Helpers of the load and outage scenarios: private Redis and Mosquitto, a production-mode broker.

The shared Redis and Mosquitto serve every engineer's tests at once and are
never stopped; a scenario that stops one starts its own on a free loopback
port in a temporary directory, and stops it afterwards whatever happens.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import create_app, run_embedded_workers
from talicada.settings import LOCAL, Settings, load
from tests.reliability.support import OwnRedis, free_port

__all__ = ["OwnRedis", "free_port"]  # shared with the crash scenarios, re-exported here

TOKEN = "reliability-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]

#: A local platform with room for every scenario's sessions at once.
ROOMY = msgspec.structs.replace(LOCAL, cores=256, memory=512)


def one_core(kind: str = "ping", **fields: Any) -> dict[str, Any]:
    """A request for one core and 1 GiB, for ten minutes, starting now or within 40 minutes."""
    from datetime import UTC, datetime

    from talicada.schema.iso8601 import format_instant

    start = format_instant(datetime.now(UTC).replace(microsecond=0))
    return {
        "executable": {"kind": f"urn:talicada:kinds:executable:{kind}-1.0", **fields},
        "compute": {"cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT10M", "start": f"{start}/PT40M"}},
    }


@asynccontextmanager
async def own_redis(directory: Path) -> AsyncIterator[OwnRedis]:
    """A private Redis for the block; stopped at the end whatever happened."""
    server = OwnRedis(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class OwnMosquitto:
    """A mosquitto of this test's own, without persistence (a restart loses retained messages)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            "mosquitto", "-c", str(config), stdout=log, stderr=log
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def production_settings(
    tmp_path: Path, redis_url: str, prefix: str | None = None, **overrides: Any
) -> Settings:
    """Settings of a broker in production mode: Redis, token auth, signed callbacks."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} alice\n")
    settings = load(
        environ={},
        redis_url=redis_url,
        key_prefix=prefix or f"talicada-test-{uuidlib.uuid4().hex}",
        auth_tokens_file=str(tokens),
        callback_secret=secrets.token_hex(16),
        work_dir=str(tmp_path / "work"),
        **overrides,
    )
    return msgspec.structs.replace(settings, platforms=[ROOMY])


@asynccontextmanager
async def production_broker(settings: Settings, *, workers: bool = False) -> AsyncIterator[Client]:
    """A broker that opens its own store from ``settings`` (the configured pool), on loopback.

    With ``workers`` every worker runs in this process on the broker's bus,
    calling back over HTTP, as in embedded mode but against Redis.
    """
    app = create_app(settings)
    client: Client = TestClient(TestServer(app), headers=HEADERS)
    await client.start_server()
    stop = asyncio.Event()
    running = None
    if workers:
        url = str(client.make_url("")).rstrip("/")
        running = asyncio.create_task(run_embedded_workers(client.app, url, stop))
    try:
        yield client
    finally:
        stop.set()
        if running is not None:
            await asyncio.wait_for(running, timeout=30)
        await client.close()


async def unlink_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (the shared Redis is never flushed)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()


def http_session(limit: int = 0) -> aiohttp.ClientSession:
    """A client session without aiohttp's default cap of 100 connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        headers=HEADERS,
        timeout=aiohttp.ClientTimeout(total=60),
    )
