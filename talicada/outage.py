"""Riding out a dependency's outage: log once, back off with jitter, log the recovery.

A loop that talks to Redis or Mosquitto (the timer loop, the notifier, a
worker's consumer, the MQTT publisher) keeps one :class:`Outage` per
dependency. Each failure calls :meth:`Outage.failed`, which logs only the
first failure of an outage (a warning) and returns how long to pause before
the next try: exponential from ``base`` to ``cap``, jittered (half to all of it) so that
replicas and workers do not all come back at the same instant. The first
success afterwards calls :meth:`Outage.recovered`, which logs how long the
outage lasted, once. So an outage of any length costs two log lines per
loop, not one per attempt or per request.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog

Logger = structlog.typing.FilteringBoundLogger


class Outage:
    """Whether a dependency is away, since when, and the next pause (see module docstring)."""

    def __init__(
        self,
        what: str,
        log: Logger,
        *,
        base: float = 0.2,
        cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.what = what
        self.log = log
        self.base = base
        self.cap = cap
        self.clock = clock
        self.rand = rand
        self.since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        """Note a failure; log it if it starts an outage; seconds to pause before retrying."""
        if self.since is None:
            self.since = self.clock()
            self.log.warning(
                "dependency.unavailable",
                dependency=self.what,
                error=f"{type(error).__name__}: {error}",
            )
        self.failures += 1
        ceiling: float = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 16))
        return ceiling * (0.5 + self.rand() / 2)

    def recovered(self) -> None:
        """Note a success; log the end of an outage, once."""
        if self.since is None:
            return
        self.log.info(
            "dependency.recovered",
            dependency=self.what,
            after_seconds=round(self.clock() - self.since, 3),
            attempts=self.failures,
        )
        self.since = None
        self.failures = 0
