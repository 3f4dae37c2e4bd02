"""The driver: runs lifecycle engine steps against the store, and applies reports.

Each step is read → compute (pure :mod:`engine`) → commit with the version
read; when another replica changed the session in between, the commit says
``stale`` and the step is computed again on the fresh state. Timers come
from the store's due-time set, claimed with a lease so that any replica can
apply each exactly once (docs/ARCHITECTURE.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import cast

import msgspec
import structlog

from talicada import constants
from talicada.broker import engine, history
from talicada.broker.components import add_messages, components, set_progress
from talicada.broker.engine import Change
from talicada.broker.history import Sample
from talicada.broker.records import SessionRecord, Transition
from talicada.broker.store import Store
from talicada.events.envelope import Handle
from talicada.events.report import Report
from talicada.events.streams import LIFECYCLE, Role, stream
from talicada.outage import Outage
from talicada.redisconn import is_unavailable
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_instant, format_stamp, parse_instant
from talicada.schema.model import SessionPhase
from talicada.settings import PlatformSettings

log = structlog.get_logger("talicada.driver")

Step = Callable[[SessionRecord, SessionPhase, datetime], Change | None]
#: How many times a step is recomputed when the session keeps changing under it.
ATTEMPTS = 20


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


class Driver:
    """Moves accepted sessions along; one per broker replica."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        platforms: dict[str, PlatformSettings] | None = None,
        on_samples: Callable[[list[Sample]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.platforms = platforms or {}
        #: Given the preparation steps each committed change finished (the history).
        self.on_samples = on_samples

    def route(self, change: Change) -> Change:
        """``change`` with each event's role replaced by the stream of its platform's
        back end, and each worker event given its deadline: now plus the role's time
        limit on that platform (``TimeLimits``), after which its worker gives it up."""
        routed = []
        now = self.clock()
        for role, event in change.events:
            if role != LIFECYCLE:
                platform = self.platforms.get(event.platform or "")
                if platform is None:
                    raise RuntimeError(
                        f"session {event.session}: platform {event.platform!r} is not configured"
                    )
                worker = cast(Role, role)
                role = stream(worker, platform.backend(worker))
                if event.deadline is None:
                    limit = timedelta(seconds=platform.time_limits.of(worker))
                    event = msgspec.structs.replace(event, deadline=format_instant(now + limit))
            routed.append((role, event))
        change.events = routed
        return change

    async def advance(self, uuid: str, step: Step, delivery: str | None = None) -> str:
        """Apply ``step`` to the session: ``ok``, ``noop``, ``duplicate`` or ``missing``."""
        for _ in range(ATTEMPTS):
            loaded = await self.store.load(uuid)
            if loaded is None:
                return "missing"
            live, version = loaded
            now = self.clock()
            change = step(live.record, live.phase, now)
            if change is None:
                return "noop"
            # Times preparation steps and notes each finished one in the record.
            finished = history.annotate(change, now)
            result = await self.store.commit(uuid, version, self.route(change), delivery)
            if result != "stale":
                if result == "ok" and change.phase != live.phase:
                    log.info("session.phase", session=uuid, source=live.phase, phase=change.phase)
                if result == "ok" and finished and self.on_samples is not None:
                    await self.on_samples(finished)
                return result
            await asyncio.sleep(0)
        raise RuntimeError(f"session {uuid} changed {ATTEMPTS} times while applying a step")

    async def apply(self, uuid: str, report: Report) -> str:
        """Apply a worker's report (already authenticated): see :meth:`advance`."""

        def step(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change:
            if all(part.uuid != report.component for part in components(record.session)):
                raise engine.ReportRefused(f"session {uuid} has no component {report.component}")
            record = _with_results(record, report, now)
            return engine.report(
                record, phase, now, report.component, report.phase, report.message, at
            )

        at = None
        if report.at is not None:
            try:
                at = parse_instant(report.at)
            except ValueError:
                log.warning("report.bad_time", session=uuid, at=report.at)

        if report.progress is not None and report.digests is None:
            log.info(
                "component.progress", session=uuid, component=report.component, **report.progress
            )
        return await self.advance(uuid, step, report.delivery)

    async def cancel(self, uuid: str, cause: str) -> str:
        """Cancel a live session and release everything it holds."""
        return await self.advance(uuid, lambda r, p, now: engine.cancel(r, p, now, cause))

    async def start(self, uuid: str) -> str:
        """Begin the lifecycle of a freshly accepted session."""
        return await self.advance(uuid, engine.start)

    # -- timers -----------------------------------------------------------

    async def run_due(self, limit: int = 100) -> int:
        """Apply every due timer; returns how many did something."""
        now = self.clock()
        lease = int(constants.TIMER_LEASE.total_seconds() * 1000)
        applied = 0
        for name in await self.store.claim_due(_ms(now), lease, limit):
            kind, uuid = constants.parse_timer(name)
            try:
                done = await self._timer(kind, uuid, now)
            except Exception:
                log.exception("timer.failed", timer=name)
                continue  # the lease ends and the timer is tried again
            if done:
                applied += 1
            else:
                await self.store.drop_timer(name)
        return applied

    async def _timer(self, kind: str, uuid: str, now: datetime) -> bool:
        if kind == "expire":
            record = Transition(
                time=format_stamp(now),
                source="OFFERED",
                target="EXPIRED",
                cause="timer",
            )
            outcome = await self.store.finish(uuid, {"OFFERED"}, record, due=_ms(now))
            if outcome.ok:
                log.info("offer.expired", session=uuid)
            return outcome.ok
        steps: dict[str, Step] = {
            "start": engine.start,
            "prepare": engine.prepare,
            "window-end": engine.end_of_window,
            "release-deadline": engine.release_overdue,
        }
        step = steps.get(kind)
        if step is None:
            log.warning("timer.unknown", timer=f"{kind}:{uuid}")
            return False
        return await self.advance(uuid, step) == "ok"

    async def run_timers(self, stop: asyncio.Event) -> None:
        """Apply due timers until ``stop`` is set (one task per replica)."""
        period = constants.TIMER_POLL.total_seconds()
        outage = Outage("redis", log.bind(loop="timers"))
        while not stop.is_set():
            pause = period
            try:
                await self.run_due()
                outage.recovered()
            except Exception as error:  # an outage must not end the timer loop
                if is_unavailable(error):
                    pause = outage.failed(error)  # logged once per outage
                else:
                    log.exception("timers.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)


#: Most characters of stdout and of stderr kept in a session's record.
OUTPUT_LIMIT = 16 * 1024


def _with_results(record: SessionRecord, report: Report, now: datetime) -> SessionRecord:
    """``record`` with what the report carries besides a phase: digests and output."""
    if report.digests:
        items = [
            msg.make(msg.CHECKSUM, "INFO", now=now, digest=digest, path=path)
            for path, digest in sorted(report.digests.items())
        ]
        record = msgspec.structs.replace(
            record, session=add_messages(record.session, report.component, items)
        )
    if report.progress:
        done, total = report.progress.get("done", 0), report.progress.get("total")
        item = msg.make(msg.PROGRESS, "INFO", now=now, done=done, total=total or "?")
        record = msgspec.structs.replace(
            record, session=set_progress(record.session, report.component, item)
        )
    if report.output:
        kept = {name: text[-OUTPUT_LIMIT:] for name, text in report.output.items()}
        record = msgspec.structs.replace(record, output={**record.output, **kept})
    if report.handle is not None or report.outputs:
        known = record.handles.get(report.component) or Handle()
        handle = Handle(
            backend=report.backend or known.backend,
            id=report.handle if report.handle is not None else known.id,
            outputs={**known.outputs, **(report.outputs or {})},
        )
        record = msgspec.structs.replace(
            record, handles={**record.handles, report.component: handle}
        )
    if report.logs:
        kept = {name: text[-OUTPUT_LIMIT:] for name, text in report.logs.items()}
        record = msgspec.structs.replace(record, logs={**record.logs, **kept})
    if report.exit_code is not None:
        record = msgspec.structs.replace(
            record, session=msgspec.structs.replace(record.session, exit_code=report.exit_code)
        )
    if report.connectors:
        record = msgspec.structs.replace(
            record,
            session=msgspec.structs.replace(record.session, connectors=report.connectors),
        )
    return record
