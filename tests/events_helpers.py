"""Helpers for tests/test_events.py: bounded waits and a consumer running in the background."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from talicada.constants import MAX_DELIVERIES
from talicada.events import Bus, Consumer, Delivery, Event
from talicada.events.consumer import Handler, OnDeadLetter
from talicada.events.envelope import SessionChanged, TransitionBody

#: Reclaim idle time of the buses under test: short, so the suite stays fast.
RECLAIM_MS = 200
#: Longest any single wait in the suite may take before the test fails.
TIMEOUT = 5.0


def event(n: int = 0, **flags: bool) -> Event:
    """A test event numbered ``n`` (its session is ``session-<n>``); ``flags`` ride in its cause."""
    cause = ",".join(name for name, on in flags.items() if on) or "test"
    body = TransitionBody(source="RUNNING", target="RELEASING", cause=cause, time=str(n))
    return SessionChanged.new(f"session-{n}", component="exe", body=body)


def number(event: Event) -> int:
    """The number ``event`` was made with."""
    return int(event.session.removeprefix("session-"))


def flagged(event: Event, flag: str) -> bool:
    """Whether ``event`` was made with ``flag`` set."""
    return isinstance(event, SessionChanged) and flag in event.body.cause.split(",")


async def receive_until(
    bus: Bus, stream: str, group: str, consumer: str, *, count: int = 10
) -> list[Delivery]:
    """The first non-empty receive, polling for at most TIMEOUT seconds."""

    async def poll() -> list[Delivery]:
        while True:
            found = await bus.receive(stream, group, consumer, count=count, block_ms=50)
            if found:
                return found

    return await asyncio.wait_for(poll(), TIMEOUT)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; fail after TIMEOUT seconds."""

    async def poll() -> None:
        # Polling is the point: the conditions read plain counters, not events.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), TIMEOUT)


@asynccontextmanager
async def running(
    consumer: Consumer, *, grace: timedelta | None = None
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """Run ``consumer`` in the background; stop it (bounded) on leaving the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, grace=grace))
    try:
        yield stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


def fast_consumer(
    bus: Bus,
    handler: Handler,
    *,
    concurrency: int = 4,
    max_deliveries: int = MAX_DELIVERIES,
    on_dead_letter: OnDeadLetter | None = None,
    name: str = "c1",
) -> Consumer:
    """A consumer of stream ``work`` in group ``workers`` with test-sized timings."""
    return Consumer(
        bus,
        "work",
        "workers",
        name,
        handler,
        concurrency=concurrency,
        max_deliveries=max_deliveries,
        on_dead_letter=on_dead_letter,
        block_ms=50,
        retry_base=timedelta(milliseconds=20),
        heartbeat=timedelta(milliseconds=RECLAIM_MS / 3),
    )
