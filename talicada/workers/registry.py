"""Every worker by name: the stream it consumes and its handler (DESIGN §7)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from talicada.broker.engine import IMAGE_CACHE, LAUNCH, PREPARE_DATA, RELEASE
from talicada.events.bus import Bus
from talicada.settings import Settings
from talicada.workers import image_cache, launch, prepare_data, release
from talicada.workers.runtime import HandlerFactory, run_worker


@dataclass(frozen=True, slots=True)
class WorkerKind:
    """A worker: the stream it consumes and the handler for each implementation."""

    stream: str
    implementations: dict[str, HandlerFactory]
    default: str


WORKERS: Final[dict[str, WorkerKind]] = {
    "prepare-data": WorkerKind(PREPARE_DATA, {"local": prepare_data.local}, "local"),
    "image-cache": WorkerKind(IMAGE_CACHE, {"none": image_cache.none}, "none"),
    "launch": WorkerKind(LAUNCH, {"local": launch.local}, "local"),
    "release": WorkerKind(RELEASE, {"local": release.release}, "local"),
}


async def run_named(
    name: str,
    *,
    bus: Bus,
    settings: Settings,
    broker_url: str,
    secret: bytes,
    stop: asyncio.Event,
    implementation: str | None = None,
) -> None:
    """Run worker ``name`` (with ``implementation``, or its default) until ``stop``."""
    kind = WORKERS[name]
    factory = kind.implementations[implementation or kind.default]
    await run_worker(
        name,
        kind.stream,
        factory,
        bus=bus,
        settings=settings,
        broker_url=broker_url,
        secret=secret,
        stop=stop,
    )


async def run_all(
    *, bus: Bus, settings: Settings, broker_url: str, secret: bytes, stop: asyncio.Event
) -> None:
    """Run every worker in this process (embedded mode)."""
    await asyncio.gather(
        *(
            run_named(
                name, bus=bus, settings=settings, broker_url=broker_url, secret=secret, stop=stop
            )
            for name in WORKERS
        )
    )
