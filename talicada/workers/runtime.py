"""The worker runtime: consume a stream, act, call back, ack (docs/ARCHITECTURE.md §7).

``talicada worker NAME`` runs one worker; embedded mode runs them all in the
broker's process. Either way a worker reports through signed HTTP callbacks,
so the broker applies worker results the same way whatever the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
import structlog

from talicada.events.bus import Bus, Delivery, jittered
from talicada.events.consumer import Consumer
from talicada.events.envelope import Event, Release, ReleaseData
from talicada.events.report import Report, encoder
from talicada.events.signing import sign
from talicada.schema.iso8601 import parse_instant
from talicada.schema.model import ComponentPhase
from talicada.settings import PlatformSettings, Settings
from talicada.workers.backends._shared import Ledger, MemoryLedger, ledger_for
from talicada.workers.health import BackgroundFailures, keep_publishing, snapshot
from talicada.workers.redact import Redactor

log = structlog.get_logger("talicada.worker")

#: Attempts to deliver one callback before the event is retried as a whole.
CALLBACK_ATTEMPTS = 3
#: Seconds background work may go on after the worker stopped consuming.
BACKGROUND_GRACE = 10.0


class CallbackFailed(Exception):
    """The broker did not take a report; the event will be retried."""


class Reporter:
    """Signs reports and posts them to the broker's ``/callbacks/{session}``."""

    def __init__(
        self,
        broker_url: str,
        secret: bytes,
        client: aiohttp.ClientSession,
        stop: asyncio.Event | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.broker_url = broker_url.rstrip("/")
        self.secret = secret
        self.client = client
        #: Set when the worker stops: a report waiting for the broker gives up, so
        #: its event is retried by whoever consumes the stream next.
        self.stop = stop or asyncio.Event()
        #: Rewrites what a client will read (no tracebacks, no work-dir paths);
        #: None: nothing to hide (a worker with no local files).
        self.redactor = redactor

    async def send(self, session: str, report: Report) -> None:
        """Deliver ``report``; CallbackFailed when the broker cannot take it now.

        404 (the session is gone) and 409 (the report no longer applies) are
        final answers: retrying would not change them, so they are logged.
        Every report is redacted here, the one way out of the worker.
        """
        if self.redactor is not None:
            report = self.redactor.report(session, report)
        body = encoder.encode(report)
        url = f"{self.broker_url}/callbacks/{session}"
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            headers = {
                "Content-Type": "application/json",
                **sign(self.secret, session, body, time.time()),
            }
            try:
                async with self.client.post(url, data=body, headers=headers) as response:
                    if response.status in (200, 404, 409):
                        if response.status != 200:
                            log.warning(
                                "callback.refused",
                                session=session,
                                status=response.status,
                                delivery=report.delivery,
                            )
                        return
                    reason = f"HTTP {response.status}: {(await response.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}"
            log.warning("callback.failed", session=session, attempt=attempt, reason=reason)
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(jittered(0.2 * 2**attempt))
        raise CallbackFailed(f"the broker did not take the report: {reason}")

    async def report(
        self,
        event: Event,
        component: str,
        phase: ComponentPhase,
        *,
        suffix: str = "",
        **details: object,
    ) -> None:
        """Report that ``component`` of ``event``'s session reached ``phase``.

        The delivery id is derived from the event, component and phase, so a
        redelivered event reports with the same ids and changes nothing twice.
        While the broker cannot take it (away, restarting, 5xx) the report is
        retried with jittered backoff until the event's deadline, so a broker
        away for minutes costs neither the work already done nor the event's
        deliveries; the consumer cancels it at the deadline. An event without a
        deadline, or a stopping worker, gives up after one round of attempts.
        """
        delivery = f"{event.id}:{component}:{phase}{suffix}"
        report = Report(
            delivery=delivery,
            event=event.id,
            attempt=event.attempt,
            component=component,
            phase=phase,
            **details,  # type: ignore[arg-type]
        )
        until = _deadline(event)
        rounds = 0
        while True:
            try:
                await self.send(event.session, report)
                return
            except CallbackFailed:
                rounds += 1
                if until is None or time.time() >= until or self.stop.is_set():
                    raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), jittered(min(2.0**rounds, 30.0)))


def _deadline(event: Event) -> float | None:
    """The event's deadline in Unix seconds (None: it has none)."""
    if event.deadline is None:
        return None
    try:
        return parse_instant(event.deadline).timestamp()
    except ValueError:
        return None


class UnknownPlatform(Exception):
    """An event names a platform this worker's settings do not know."""


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every worker handler may use.

    ``ledger`` keeps what a back end follows across restarts; ``stopping`` is
    set when the worker stops, so background loops (followers) end;
    ``failures`` counts background work that failed, for the worker's health.
    """

    settings: Settings
    reporter: Reporter
    background: set[asyncio.Task[None]]
    ledger: Ledger = field(default_factory=MemoryLedger)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    failures: BackgroundFailures = field(default_factory=BackgroundFailures)

    def spawn(self, work: Awaitable[None], *, about: tuple[Event, str] | None = None) -> None:
        """Run ``work`` after the handler returns (e.g. watching a process).

        Its failure is logged and counted, never lost (a background task's
        exception would otherwise go unread), and with ``about`` = (event,
        component) that component is reported FAILED with the reason, so its
        session does not wait for news that will never come.
        """
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        task.add_done_callback(lambda done: self._failed(done, about))

    def _failed(self, task: asyncio.Task[None], about: tuple[Event, str] | None) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}"
        self.failures.add(reason)
        log.error("background.failed", error=repr(error), exc_info=error)
        if about is not None and not self.stopping.is_set():
            event, component = about
            self.spawn(
                self.reporter.report(
                    event,
                    component,
                    "FAILED",
                    suffix=":background",
                    message=f"the worker's background work failed: {reason}"[:500],
                )
            )

    def platform(self, event: Event) -> PlatformSettings:
        """The settings of ``event``'s platform: each platform's settings apply to
        its own sessions. Events from before platforms were named go to the first."""
        if event.platform is None:
            return self.settings.platforms[0]
        for platform in self.settings.platforms:
            if platform.name == event.platform:
                return platform
        raise UnknownPlatform(f"no platform {event.platform!r} in this worker's settings")


def about(event: Event) -> list[str]:
    """The components an event is about: its own, or those a release lists."""
    if event.component:
        return [event.component]
    match event:
        case Release(body=body) | ReleaseData(body=body):
            return list(body.components)
    return []


Handler = Callable[[Delivery], Awaitable[None]]
HandlerFactory = Callable[[WorkerContext], Handler]


def consumer_name(worker: str) -> str:
    """A name unique to this process, so a dead process's messages can be reclaimed."""
    return f"{worker}@{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    name: str,
    stream: str,
    factory: HandlerFactory,
    *,
    bus: Bus,
    settings: Settings,
    broker_url: str,
    secret: bytes,
    stop: asyncio.Event,
) -> None:
    """Consume ``stream`` as worker ``name`` until ``stop`` is set, then finish in-flight work.

    Background work still running :data:`BACKGROUND_GRACE` seconds after the
    consumer stopped is cancelled before the HTTP session it reports through
    closes; what it had to report stays where a successor finds it (the ledger,
    a kept report, the stream).
    """
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        context = WorkerContext(
            settings,
            Reporter(broker_url, secret, client, stop, Redactor.for_work_dir(settings.work_dir)),
            set(),
            ledger_for(bus),
        )
        handler = factory(context)
        me = consumer_name(name)

        async def dead_letter(delivery: Delivery, reason: str) -> None:
            # The message will never be handled: the components it was about failed.
            event = delivery.event
            for component in about(event):
                await context.reporter.report(
                    event,
                    str(component),
                    "FAILED",
                    suffix=":dead-letter",
                    message=f"{name} gave up after {delivery.deliveries} deliveries: {reason}",
                )

        consumer = Consumer(
            bus,
            stream,
            name,
            consumer_name(name),
            handler,
            concurrency=settings.worker_concurrency,
            max_deliveries=settings.max_deliveries,
            retry_base=timedelta(seconds=settings.retry_base),
            heartbeat=timedelta(seconds=settings.reclaim_idle / 3),
            on_dead_letter=dead_letter,
        )
        started = time.time()
        health = asyncio.create_task(
            keep_publishing(
                context.ledger,
                lambda: snapshot(name, stream, me, started, consumer.stats, context.failures),
                context.stopping,
            )
        )
        log.info("worker.started", worker=name, stream=stream, consumer=me)
        try:
            await consumer.run(stop)
        finally:
            context.stopping.set()
            if context.background:
                await asyncio.wait(context.background, timeout=BACKGROUND_GRACE)
            await _cancel(context.background)
            await asyncio.gather(health, return_exceptions=True)
        log.info("worker.stopped", worker=name)


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` (and what they start meanwhile) and wait until they are done."""
    while tasks:
        left = list(tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        tasks.difference_update(left)
