"""Brokers on loopback for federation tests: sites with their own stores and workers,
and aggregators over them, each a real HTTP server on an ephemeral port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import create_app, run_embedded_workers
from talicada.broker.keys import METRICS
from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.federation.config import RemotePlatform
from talicada.settings import PlatformSettings, load

Client = TestClient[web.Request, web.Application]


@dataclass
class Running:
    """One broker serving on loopback (``client`` talks to it)."""

    name: str
    client: Client
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    workers: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def app(self) -> web.Application:
        return self.client.app

    def requests(self, route: str = "/requests", method: str = "POST") -> int:
        """How many ``method route`` calls this broker answered (by its own metrics)."""
        registry = self.app[METRICS].registry
        total = 0.0
        for metric in registry.collect():
            for sample in metric.samples:
                labels = sample.labels
                if (
                    sample.name == "talicada_http_requests_total"
                    and labels.get("route") == route
                    and labels.get("method") == method
                ):
                    total += sample.value
        return int(total)

    def site_outcomes(self, site: str) -> dict[str, int]:
        """An aggregator's count of what became of its requests to ``site``."""
        found: dict[str, int] = {}
        for metric in self.app[METRICS].registry.collect():
            for sample in metric.samples:
                if (
                    sample.name == "talicada_federation_site_requests_total"
                    and sample.labels.get("site") == site
                ):
                    found[sample.labels["outcome"]] = int(sample.value)
        return found


class Federation:
    """Starts sites and aggregators; stops them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[Running] = []

    async def site(
        self,
        name: str,
        *,
        platforms: list[PlatformSettings] | None = None,
        store: Store | None = None,
        **overrides: Any,
    ) -> Running:
        """A broker with its own store, its workers running in-process."""
        overrides.setdefault("work_dir", str(self.tmp_path / name))
        clock = overrides.pop("clock", None)
        settings = load(environ={}, **overrides)
        if platforms is not None:
            settings = msgspec.structs.replace(settings, platforms=platforms)
        extra: dict[str, Any] = {"clock": clock} if clock else {}
        app = create_app(settings, store=store or MemoryStore(), **extra)
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        running = Running(name, client)
        running.workers = asyncio.create_task(run_embedded_workers(app, running.url, running.stop))
        self.running.append(running)
        return running

    async def aggregator(
        self, name: str, sites: Sequence[Running | RemotePlatform], **overrides: Any
    ) -> Running:
        """A broker whose only platforms are ``sites``."""
        remotes = [
            each
            if isinstance(each, RemotePlatform)
            else RemotePlatform(name=each.name, remote=each.url)
            for each in sites
        ]
        return await self.site(name, platforms=[], remote_platforms=remotes, **overrides)

    async def stop(self, running: Running) -> None:
        """Stop one broker: its port then refuses connections."""
        running.stop.set()
        if running.workers is not None:
            await asyncio.wait_for(running.workers, timeout=15)
            running.workers = None
        await running.client.close()

    async def close(self) -> None:
        for running in self.running:
            if running.workers is not None:
                await self.stop(running)


def delay(duration: str = "PT1S") -> dict[str, Any]:
    """A v1.0 request for a delay task."""
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:delay-1.0", "duration": duration},
        "schedule": {"requested": {"duration": "PT2M"}},
    }


def ping() -> dict[str, Any]:
    """A v1.0 request for a ping task."""
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "schedule": {"requested": {"duration": "PT2M"}},
    }


async def sse(client: Client, path: str, into: list[dict[str, Any]]) -> None:
    """Read the Server-Sent Events at ``path`` into ``into`` until the stream ends."""
    async with client.get(path) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                event[key] = value
                continue
            if "data" in event:
                into.append({"id": int(event["id"]), **json.loads(event["data"])})
            event = {}
