"""Waking local watchers when a session changes, whichever replica changed it.

Every transition is on the lifecycle stream (the outbox puts it there). Each
replica tails that stream once and wakes its own long polls and SSE streams
for the session named; they then re-read the session from the store, which
stays the only source of truth. A missed wake-up therefore costs latency,
never correctness (watchers also re-read on a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import structlog

from talicada import constants
from talicada.events.bus import Bus
from talicada.events.streams import LIFECYCLE
from talicada.outage import Outage

log = structlog.get_logger("talicada.notify")


class TooManyWatchers(Exception):
    """This replica already serves as many long polls and event streams as it may."""


class Notifier:
    """Per-replica fan-out of lifecycle events to local waiters."""

    def __init__(self, bus: Bus, *, limit: int = constants.MAX_WATCHERS) -> None:
        self.bus = bus
        self.limit = limit
        self.watching = 0
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.asynccontextmanager
    async def watch(self, session: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``session`` changes while the block runs.

        Raises TooManyWatchers when this replica is at its limit, so open
        connections cannot exhaust it.
        """
        if self.watching >= self.limit:
            raise TooManyWatchers(f"{self.limit} watchers already")
        self.watching += 1
        try:
            async with self._watch(session) as changed:
                yield changed
        finally:
            self.watching -= 1

    @contextlib.asynccontextmanager
    async def _watch(self, session: str) -> AsyncIterator[asyncio.Event]:
        changed = asyncio.Event()
        self._waiters[session].add(changed)
        try:
            yield changed
        finally:
            waiters = self._waiters.get(session)
            if waiters is not None:
                waiters.discard(changed)
                if not waiters:
                    del self._waiters[session]

    def wake(self, session: str) -> None:
        """Wake everyone watching ``session``."""
        for changed in self._waiters.get(session, ()):
            changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Tail the lifecycle stream until ``stop`` is set."""
        last = "$"
        outage = Outage("redis", log.bind(loop="notify"))
        while not stop.is_set():
            try:
                last, events = await self.bus.tail(LIFECYCLE, last, block_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage must not end notifications
                pause = outage.failed(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                continue
            if outage.down:
                # Changes made while the stream was unreadable were missed:
                # wake everyone, they re-read the store.
                outage.recovered()
                self.wake_all()
            for event in events:
                self.wake(event.session)

    def wake_all(self) -> None:
        """Wake every local watcher (after missing events, they re-read)."""
        for waiters in self._waiters.values():
            for changed in waiters:
                changed.set()
