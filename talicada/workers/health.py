"""Each worker's health, published where the broker and operators read it.

Every worker process writes one record (:class:`WorkerHealth`) under its
consumer name in the ledger map ``health`` (a Redis hash in production, beside
the streams) every :data:`PERIOD` seconds, and drops it when it stops cleanly.
A record not renewed for :data:`STALE_AFTER` seconds belongs to a worker that
died or hangs. ``GET /readyz`` lists them; ``redis-cli HGETALL
<prefix>:ledger:health`` shows the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import structlog

from talicada.events.consumer import ConsumerStats
from talicada.workers.backends._shared import Ledger

log = structlog.get_logger("talicada.worker")

#: The ledger map the records live in.
HEALTH = "health"
#: Seconds between two records of one worker.
PERIOD = 5.0
#: A record older than this, seconds, is of a worker that is gone or stuck.
STALE_AFTER = 3 * PERIOD


class WorkerHealth(msgspec.Struct, kw_only=True):
    """What one worker says of itself (schema-evolution rules apply: new fields get defaults)."""

    worker: str
    stream: str
    consumer: str
    host: str
    pid: int
    #: Unix seconds: when the worker started, and when it wrote this record.
    started: float
    seen: float
    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    overdue: int = 0
    in_flight: int = 0
    #: Background tasks (task watchers, orphan adoption) that failed, and the last reason.
    background_failed: int = 0
    last_failure: str = ""
    #: Filled in by readers: whether the record is recent enough to trust.
    alive: bool = True


@dataclass
class BackgroundFailures:
    """Failures of a worker's background tasks, counted for its health record."""

    count: int = 0
    last: str | None = None

    def add(self, reason: str) -> None:
        """Count one failure."""
        self.count += 1
        self.last = reason[:500]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerHealth)


def snapshot(
    worker: str,
    stream: str,
    consumer: str,
    started: float,
    stats: ConsumerStats,
    failures: BackgroundFailures,
) -> WorkerHealth:
    """The record of a worker now."""
    return WorkerHealth(
        worker=worker,
        stream=stream,
        consumer=consumer,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=started,
        seen=time.time(),
        processed=stats.processed,
        retried=stats.retried,
        dead_lettered=stats.dead_lettered,
        overdue=stats.overdue,
        in_flight=stats.in_flight,
        background_failed=failures.count,
        last_failure=failures.last or "",
    )


async def publish(ledger: Ledger, record: WorkerHealth) -> None:
    """Write one record (a failure is logged: health must never stop work)."""
    try:
        await ledger.put(HEALTH, record.consumer, _encoder.encode(record))
    except Exception as error:
        log.warning("health.unpublished", consumer=record.consumer, reason=str(error))


async def keep_publishing(
    ledger: Ledger,
    make: Callable[[], WorkerHealth],
    stop: asyncio.Event,
    period: float = PERIOD,
) -> None:
    """Publish ``make()`` every ``period`` seconds until ``stop``, then drop the record."""
    consumer = ""
    while not stop.is_set():
        record = make()
        consumer = record.consumer
        await publish(ledger, record)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
    if consumer:
        with contextlib.suppress(Exception):
            await ledger.drop(HEALTH, consumer)


async def workers(ledger: Ledger, now: float | None = None) -> list[WorkerHealth]:
    """Every worker's last record, oldest name first, each marked ``alive`` or not."""
    now = time.time() if now is None else now
    found = []
    for _, raw in sorted((await ledger.all(HEALTH)).items()):
        try:
            record = _decoder.decode(raw)
        except msgspec.DecodeError:
            continue
        record.alive = now - record.seen <= STALE_AFTER
        found.append(record)
    return found
