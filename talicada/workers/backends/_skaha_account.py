"""Following every session of one Skaha account, with one call per interval.

Skaha has no push of its own, so an :class:`Account` lists all of the
account's sessions (``GET /v1/session``) once per ``poll_interval``, compares
each followed session with what it saw last, and reports what changed. The
number of calls does not grow with the number of sessions. When Skaha offers
callbacks (docs/service-callbacks.md) and the platform says where to receive
them, the account registers once and polls not at all: only a local clock
looks for sessions stuck Pending.

What is followed is kept in the worker's ledger, so a restarted launcher
resumes following its sessions without asking anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import structlog

from talicada.events.envelope import Launch
from talicada.schema.iso8601 import parse_instant
from talicada.schema.model import Connector
from talicada.services._http import ServiceError
from talicada.services.callbacks import CallbackEvent
from talicada.services.skaha import SkahaClient
from talicada.settings import PlatformSettings, SkahaSettings
from talicada.workers.backends._shared import CallbackListener, sleep_until
from talicada.workers.runtime import WorkerContext

log = structlog.get_logger("talicada.worker.skaha")

#: Skaha statuses after which a session does nothing more.
ENDED = frozenset({"Succeeded", "Completed", "Failed", "Error"})
#: The status of a followed session Skaha no longer lists.
GONE = "Gone"
#: Connector kind of a notebook's URL.
NOTEBOOK_CONNECTOR = "urn:talicada:connectors:jupyter-notebook"


class Watch(msgspec.Struct, kw_only=True):
    """One followed Skaha session: the launch it serves and what was last seen."""

    skaha_id: str
    launch: Launch
    notebook: bool
    status: str = "Pending"
    #: The compute component, reported AVAILABLE when a notebook is ready.
    compute: str | None = None


_watch_encoder = msgspec.json.Encoder()
_watch_decoder = msgspec.json.Decoder(Watch)


class Account:
    """The sessions of one platform's Skaha account, followed together."""

    def __init__(
        self,
        context: WorkerContext,
        platform: PlatformSettings,
        client: SkahaClient,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        assert platform.skaha is not None
        self.context = context
        self.platform = platform
        self.settings: SkahaSettings = platform.skaha
        self.client = client
        self.watches: dict[str, Watch] = {}
        self.ledger_name = f"skaha:{platform.name}"
        self.listener: CallbackListener | None = None
        self.on_stop = on_stop
        self._lock = asyncio.Lock()

    # -- what is followed ----------------------------------------------------

    async def resume(self) -> None:
        """Follow again what a predecessor followed, then start following."""
        for key, value in (await self.context.ledger.all(self.ledger_name)).items():
            if not key.startswith("released:"):
                watch = _watch_decoder.decode(value)
                self.watches[watch.skaha_id] = watch
        if self.watches:
            log.info("skaha.resumed", platform=self.platform.name, sessions=len(self.watches))
        pushed = await self._take_callbacks()
        if pushed and self.watches:
            # Changes made while no launcher listened were never delivered: look once.
            try:
                await self.poll_once()
            except ServiceError as error:
                log.warning("skaha.poll_failed", reason=str(error))
        self.context.spawn(self._follow(poll=not pushed))

    async def watch(self, watch: Watch) -> None:
        """Follow ``watch`` from now on."""
        self.watches[watch.skaha_id] = watch
        await self.context.ledger.put(
            self.ledger_name, watch.skaha_id, _watch_encoder.encode(watch)
        )

    async def unwatch(self, skaha_id: str) -> Watch | None:
        """Stop following a session (release does this before deleting it)."""
        await self.context.ledger.drop(self.ledger_name, skaha_id)
        return self.watches.pop(skaha_id, None)

    def followed(self, session: str) -> Watch | None:
        """The watch of the Skaha session launched for broker session ``session``."""
        return next((w for w in self.watches.values() if w.launch.session == session), None)

    async def mark_released(self, session: str) -> None:
        """Remember that ``session`` is being released, so a late launch starts nothing."""
        await self.context.ledger.put(self.ledger_name, f"released:{session}", b"1")

    async def released(self, session: str) -> bool:
        """Whether release of ``session`` has begun."""
        return f"released:{session}" in await self.context.ledger.all(self.ledger_name)

    # -- following -------------------------------------------------------------

    async def _take_callbacks(self) -> bool:
        """Register for Skaha's callbacks when it offers them; True when it does."""
        settings = self.settings
        if not (settings.callbacks and settings.callback_listen and settings.callback_url):
            return False
        try:
            if not await self.client.callbacks_supported():
                return False
            self.listener = CallbackListener(settings.callback_listen, self._pushed)
            await self.listener.start()
            await self.client.register_callback(settings.callback_url, self.listener.secret)
        except (ServiceError, OSError) as error:
            log.warning("skaha.callbacks_unavailable", reason=str(error))
            if self.listener is not None:
                await self.listener.stop()
                self.listener = None
            return False
        log.info("skaha.callbacks", platform=self.platform.name, url=settings.callback_url)
        return True

    async def _follow(self, *, poll: bool) -> None:
        """Until the worker stops: look at all sessions (or only the clock) each interval."""
        stopping = self.context.stopping
        try:
            while not stopping.is_set():
                try:
                    if poll and self.watches:
                        await self.poll_once()
                    await self.check_pending()
                except ServiceError as error:
                    log.warning("skaha.poll_failed", reason=str(error))
                await sleep_until(stopping, self.settings.poll_interval)
        finally:
            if self.listener is not None:
                with contextlib.suppress(ServiceError):
                    await self.client.unregister_callback()
                await self.listener.stop()
            if self.on_stop is not None:
                await self.on_stop()

    async def poll_once(self) -> None:
        """One look at every session of the account: one ``GET /v1/session``."""
        seen = {session.id: session for session in await self.client.sessions()}
        for skaha_id, watch in list(self.watches.items()):
            session = seen.get(skaha_id)
            status = session.status if session else GONE
            url = session.connect_url if session else ""
            await self.observe(watch, status, url)

    async def _pushed(self, change: CallbackEvent) -> None:
        watch = self.watches.get(change.id)
        if watch is not None:
            await self.observe(watch, change.status, str(change.details.get("connectURL", "")))

    async def check_pending(self) -> None:
        """Fail the sessions pending past their window's start plus the margin."""
        now = time.time()
        for watch in list(self.watches.values()):
            if watch.status == "Pending" and now > self._pending_deadline(watch):
                await self._stuck(watch)

    def _pending_deadline(self, watch: Watch) -> float:
        starts = watch.launch.body.starts
        begin = (
            parse_instant(starts).timestamp()
            if starts
            else parse_instant(watch.launch.created).timestamp()
        )
        return begin + self.settings.pending_margin

    # -- acting on a change --------------------------------------------------------

    async def observe(self, watch: Watch, status: str, connect_url: str = "") -> None:
        """Report what changed for ``watch`` now that Skaha says ``status``."""
        async with self._lock:
            if self.watches.get(watch.skaha_id) is not watch or status == watch.status:
                return
            launch = watch.launch
            component = launch.component
            assert component is not None
            reporter = self.context.reporter
            if status == "Running":
                if watch.notebook and watch.compute:
                    connector = Connector(
                        kind=NOTEBOOK_CONNECTOR,
                        protocol="https",
                        location=connect_url or f"{self.settings.url}/session/{watch.skaha_id}",
                        status="AVAILABLE",
                    )
                    await reporter.report(
                        launch, watch.compute, "AVAILABLE", connectors=[connector]
                    )
                else:
                    await reporter.report(launch, component, "RUNNING")
            elif status in ENDED or status == GONE:
                await self._ended(watch, status)
                return
            watch.status = status
            await self.watch(watch)

    async def _ended(self, watch: Watch, status: str) -> None:
        """A session that ended by itself: report it with its logs, stop following."""
        await self.unwatch(watch.skaha_id)
        launch = watch.launch
        assert launch.component is not None
        output, logs = await self.records(watch.skaha_id)
        if status in ("Succeeded", "Completed"):
            await self.context.reporter.report(
                launch, launch.component, "COMPLETED", output=output, logs=logs
            )
            return
        if status == GONE:
            reason = f"Skaha session {watch.skaha_id} ended without this broker releasing it"
        else:
            reason = _last_line(logs.get("skaha-events", "")) or f"Skaha reports {status}"
        await self.context.reporter.report(
            launch,
            launch.component,
            "FAILED",
            message=f"Skaha session {watch.skaha_id}: {reason}",
            output=output,
            logs=logs,
        )

    async def _stuck(self, watch: Watch) -> None:
        """Pending too long: FAILED with Skaha's own reason, and the session deleted."""
        await self.unwatch(watch.skaha_id)
        _, logs = await self.records(watch.skaha_id, output=False)
        reason = _last_line(logs.get("skaha-events", "")) or "no reason given"
        with contextlib.suppress(ServiceError):
            await self.client.delete(watch.skaha_id)
        launch = watch.launch
        assert launch.component is not None
        waited = datetime.now(UTC) - parse_instant(launch.created)
        await self.context.reporter.report(
            launch,
            launch.component,
            "FAILED",
            message=(
                f"Skaha session {watch.skaha_id} was still Pending after "
                f"{int(waited.total_seconds())} s (deleted): {reason}"
            ),
            logs=logs,
        )

    async def records(
        self, skaha_id: str, *, output: bool = True
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The session's logs (as stdout) and scheduling events, as far as Skaha still has them."""
        out: dict[str, str] = {}
        logs: dict[str, str] = {}
        if output:
            with contextlib.suppress(ServiceError):
                out["stdout"] = await self.client.logs(skaha_id)
        with contextlib.suppress(ServiceError):
            logs["skaha-events"] = await self.client.events(skaha_id)
        return out, logs


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
