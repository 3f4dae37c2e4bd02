"""``prepare-data`` / srcnet: stage SKAO data through SRCNet data management.

* ``storage.allocate``: the platform's storage area (``[platforms.srcnet]
  storage_area``) is the session's storage; nothing is created.
* ``data.stage``: locate the object's replicas, pick the nearest to the
  platform's storage area (:func:`~talicada.services.srcnet.nearest`), ask the
  service to stage it there for as long as the session needs (``until``), and
  report the job as the item's handle; a follower then reports the end.
* ``data.release``: end each staging job the service can end (one without
  cancel lets the copy lapse with its lifetime) and report every listed
  component COMPLETED or CANCELLED.

Following: one follower per platform polls ``status`` every ``poll_interval``
or, when the service offers callbacks and ``callback_listen``/``callback_url``
are set, takes signed callbacks and never polls. Its only list of jobs in
flight is the ledger (map ``srcnet:<platform>``, by job id: the StageData event
and the replica), so a restarted worker resumes from it, a redelivered
StageData finds its job there rather than staging twice, and a release drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import AllocateStorage, ReleaseData, StageData
from talicada.schema.iso8601 import parse_instant
from talicada.schema.model import ComponentPhase, SkaoDataResource, kind_of
from talicada.services._http import ServiceError, TokenFile
from talicada.services.callbacks import CallbackEvent
from talicada.services.srcnet import SrcnetClient, Staging, StagingItem, nearest, state_of
from talicada.settings import PlatformSettings, SrcnetSettings
from talicada.workers.backends._shared import CallbackListener, sleep_until
from talicada.workers.runtime import Handler, WorkerContext

log = structlog.get_logger("talicada.worker.srcnet")

BACKEND = "srcnet"
#: Shortest lifetime asked for: a session ending soon still needs time to read its data.
MIN_LIFETIME = 600
#: Callbacks that arrive before their job is in the ledger (kept this many at most).
EARLY_CALLBACKS = 256


class InFlight(msgspec.Struct, frozen=True, kw_only=True):
    """A ledger record: the staging job, the replica it copies, the event that asked."""

    job: str
    replica: str
    event: StageData


class _Item(msgspec.Struct):
    namespace: str
    name: str
    state: str
    path: str | None = None
    reason: str | None = None


def stager(context: WorkerContext) -> Handler:
    """The srcnet prepare-data handler (resumes following the jobs the ledger holds)."""
    stage = _Stager(context)
    context.spawn(stage.resume())

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        match event:
            case AllocateStorage(component=str(component)):
                area = _srcnet(context.platform(event)).storage_area
                await context.reporter.report(
                    event,
                    component,
                    "AVAILABLE",
                    message=f"storage area {area}",
                    backend=BACKEND,
                    outputs={"storage_area": area},
                )
            case StageData(component=str(component)):
                await stage.stage(event, component)
            case ReleaseData():
                await stage.release(event)
            case _:
                raise ValueError(f"prepare-data/srcnet does not handle {event.type!r} events")

    return handle


def _label(event: StageData) -> tuple[str, str]:
    """``namespace:name`` of the item, and what the request calls it (name, else uuid)."""
    data = event.body.data
    assert isinstance(data, SkaoDataResource)  # only such events are ever staged
    called = (data.meta.name or data.meta.uuid) if data.meta else None
    return f"{data.skao.namespace}:{data.skao.objectname}", called or str(event.component)


class _Stager:
    """The worker's HTTP session and one :class:`_Platform` per platform staging here."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.platforms: dict[str, _Platform] = {}
        self._http: aiohttp.ClientSession | None = None

    def platform(self, settings: PlatformSettings) -> _Platform:
        found = self.platforms.get(settings.name)
        if found is None:
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
                self.context.spawn(self._close_when_stopping())
            srcnet = _srcnet(settings)
            token = TokenFile(Path(srcnet.token_file)) if srcnet.token_file else None
            client = SrcnetClient(srcnet.url, token, self._http)
            found = self.platforms[settings.name] = _Platform(self.context, settings, client)
        return found

    async def _close_when_stopping(self) -> None:
        await self.context.stopping.wait()
        # The followers end on the same signal; let them finish the call they are in.
        followers = [p.task for p in self.platforms.values() if p.task is not None]
        if followers:
            await asyncio.wait(followers, timeout=5)
        if self._http is not None:
            await self._http.close()

    async def resume(self) -> None:
        """Follow again the jobs a previous worker left in flight."""
        for settings in self.context.settings.platforms:
            if settings.stager == BACKEND and settings.srcnet is not None:
                platform = self.platform(settings)
                if await platform.in_flight():
                    await platform.ready()

    async def stage(self, event: StageData, component: str) -> None:
        data = event.body.data
        if not isinstance(data, SkaoDataResource):
            message = f"the srcnet stager stages only skao-data-resource data, not {kind_of(data)}"
            await self.context.reporter.report(event, component, "FAILED", message=message)
            return
        platform = self.platform(self.context.platform(event))
        await platform.ready()  # first, so the job is asked with the callback URL if any
        for known in (await platform.in_flight()).values():
            if known.event.id == event.id and known.event.component == component:
                # Redelivered: the job exists. Report it again (same delivery id: applied once).
                await platform.staging(known)
                return
        try:
            entry = await platform.start(event, data)
        except ServiceError as error:
            if error.transient:
                raise  # the event is retried, then dead-lettered
            what, called = _label(event)
            message = f"could not stage {what} ({called}): {error}"
            await self.context.reporter.report(event, component, "FAILED", message=message)
            return
        if entry is not None:
            await platform.staging(entry)
            await platform.early(entry)

    async def release(self, event: ReleaseData) -> None:
        body = event.body
        platform = self.platform(self.context.platform(event))
        jobs = {h.id: c for c, h in body.handles.items() if h.backend == BACKEND and h.id}
        # A job staged but not yet recorded by the broker is known only to the ledger.
        for job, entry in (await platform.in_flight()).items():
            if entry.event.session == event.session and entry.event.component in body.components:
                jobs.setdefault(job, str(entry.event.component))
        messages = {component: await platform.end(job) for job, component in jobs.items()}
        outcome: ComponentPhase = "COMPLETED" if body.normal else "CANCELLED"
        for component in body.components:
            details = {"message": messages[component]} if component in messages else {}
            await self.context.reporter.report(event, component, outcome, **details)


def _srcnet(settings: PlatformSettings) -> SrcnetSettings:
    if settings.srcnet is None:
        raise ValueError(f"platform {settings.name} has no [platforms.srcnet] table")
    return settings.srcnet


class _Platform:
    """One platform's client, ledger map and follower."""

    def __init__(
        self, context: WorkerContext, settings: PlatformSettings, client: SrcnetClient
    ) -> None:
        self.context = context
        self.settings = settings
        self.srcnet = _srcnet(settings)
        self.client = client
        self.ledger = f"srcnet:{settings.name}"
        self.listener: CallbackListener | None = None
        self.task: asyncio.Task[None] | None = None
        self._early: dict[str, Staging] = {}
        self._lock = asyncio.Lock()

    async def in_flight(self) -> dict[str, InFlight]:
        """The jobs in flight by id, from the ledger (an unreadable record is dropped)."""
        found: dict[str, InFlight] = {}
        for job, value in (await self.context.ledger.all(self.ledger)).items():
            try:
                found[job] = msgspec.json.decode(value, type=InFlight)
            except msgspec.DecodeError:
                log.error("srcnet.ledger.unreadable", platform=self.settings.name, job=job)
                await self.context.ledger.drop(self.ledger, job)
        return found

    async def ready(self) -> None:
        """Choose callbacks or polling, once, and start following."""
        async with self._lock:
            if self.task is not None:
                return
            listen, url = self.srcnet.callback_listen, self.srcnet.callback_url
            if self.srcnet.callbacks and listen and url:
                listener = CallbackListener(listen, self._on_change)
                try:
                    if await self.client.callbacks_supported():
                        await listener.start()
                        await self.client.register_callback(url, listener.secret)
                        self.listener = listener
                except (ServiceError, OSError) as error:  # polling still works: use it
                    log.warning("srcnet.callbacks.unavailable", error=str(error))
                    await listener.stop()  # nothing when it never started
            mode = "callbacks" if self.listener else "polling"
            log.info("srcnet.following", platform=self.settings.name, mode=mode)
            self.task = asyncio.ensure_future(self._follow())
            self.context.spawn(self.task)

    async def start(self, event: StageData, data: SkaoDataResource) -> InFlight | None:
        """Locate, choose a replica and ask for the staging; None when it failed (reported)."""
        namespace, name = data.skao.namespace, data.skao.objectname
        replicas = await self.client.locate(namespace, name)
        if not replicas:
            what, called = _label(event)
            message = f"no replica of {what} ({called}) is registered in SRCNet"
            await self.context.reporter.report(
                event, str(event.component), "FAILED", message=message
            )
            return None
        area, site = self.srcnet.storage_area, self.srcnet.site
        prefer = [r.rsename for r in data.skao.replicas or ()]
        replica = nearest(replicas, area, {area: site} if site else None, prefer=prefer)
        job = await self.client.stage(
            [(namespace, name)],
            storage_area=area,
            lifetime_seconds=self._lifetime(event.body.until),
            callback_url=self.srcnet.callback_url if self.listener else None,
            # Derived from the event: a redelivery after a crash finds the same job.
            request_id=f"{event.id}:{event.component}",
        )
        entry = InFlight(job=job, replica=replica.rse, event=event)
        await self.context.ledger.put(self.ledger, job, msgspec.json.encode(entry))
        return entry

    def _lifetime(self, until: str | None) -> int:
        """Seconds the copy must live: until ``until`` (else the platform's longest
        session), and at least :data:`MIN_LIFETIME`."""
        now = datetime.now(UTC)
        left = (parse_instant(until) - now).total_seconds() if until else self.settings.max_duration
        return max(MIN_LIFETIME, math.ceil(left))

    async def staging(self, entry: InFlight) -> None:
        """Report the job as the item's handle (the item stays PREPARING)."""
        what, area = _label(entry.event)[0], self.srcnet.storage_area
        await self.context.reporter.report(
            entry.event,
            str(entry.event.component),
            "PREPARING",
            suffix=":staging",
            message=f"staging {what} from {entry.replica} into {area} (job {entry.job})",
            backend=BACKEND,
            handle=entry.job,
            outputs={"replica": entry.replica},
        )

    async def early(self, entry: InFlight) -> None:
        """Apply a callback that told the job's end before the job was in the ledger."""
        staging = self._early.pop(entry.job, None)
        if staging is not None:
            await self.finish(entry, staging)

    async def end(self, job: str) -> str:
        """Release ``job`` and forget it; what became of it, for the record."""
        try:
            released: bool | str = await self.client.release(job)
        except ServiceError as error:
            if error.transient:
                raise  # the release is retried
            # Refused for good (403…): the copy lapses with its lifetime; the record says why.
            released = f"could not release staging job {job}: {error}"
        await self.context.ledger.drop(self.ledger, job)
        if isinstance(released, str):
            return released
        if released:
            return f"staging job {job} released"
        log.info("srcnet.release.lapses", job=job, reason="the service cannot cancel staging")
        return f"staging job {job} cannot be cancelled: its copy lapses with its lifetime"

    async def finish(self, entry: InFlight, staging: Staging) -> None:
        """Report how the job ended and stop following it."""
        if entry.job not in await self.context.ledger.all(self.ledger):
            return  # released while we asked: its end is the release's to report
        event, component = entry.event, str(entry.event.component)
        what, called = _label(event)
        key = _key(entry)
        item = next((i for i in staging.items if (i.namespace, i.name) == key), None)
        path = staging.paths().get(key)
        phase: ComponentPhase = "AVAILABLE"
        if staging.state == "done" and path:
            area = staging.storage_area or self.srcnet.storage_area
            message = f"staged {what} from {entry.replica} to {path} in {area}"
            details: dict[str, Any] = {"outputs": {"path": path, "replica": entry.replica}}
        else:
            reason = (item.reason if item else None) or f"the staging job ended {staging.state}"
            message = f"staging {what} ({called}) from {entry.replica} failed: {reason}"
            phase, details = "FAILED", {}
        await self.context.reporter.report(
            event, component, phase, message=message, backend=BACKEND, handle=entry.job, **details
        )
        await self.context.ledger.drop(self.ledger, entry.job)

    async def look(self, entry: InFlight) -> None:
        """Ask where the job stands; report it if it ended."""
        try:
            staging = await self.client.status(entry.job)
        except ServiceError as error:
            if error.status != 404:
                log.warning("srcnet.status.failed", job=entry.job, error=str(error))
                return  # asked again next round
            # Gone: expired or removed behind our back; the copy cannot be relied on.
            staging = _gone(entry, error.reason)
        if staging.final:
            await self.finish(entry, staging)

    async def _follow(self) -> None:
        stopping = self.context.stopping
        try:
            if self.listener is not None:
                # A callback sent while no worker listened is lost: look once at what we resume.
                for entry in (await self.in_flight()).values():
                    await self.look(entry)
            while self.listener is None and not stopping.is_set():
                for entry in (await self.in_flight()).values():
                    try:
                        await self.look(entry)
                    except Exception:  # one job's trouble (a report not taken) stops no other
                        log.exception("srcnet.follow.failed", job=entry.job)
                await sleep_until(stopping, self.srcnet.poll_interval)
            await stopping.wait()  # with callbacks, the listener does the following
        finally:
            if self.listener is not None:
                # Tell the service to stop posting to a listener that is going away.
                with contextlib.suppress(ServiceError):
                    await self.client.unregister_callback()
                await self.listener.stop()

    async def _on_change(self, change: CallbackEvent) -> None:
        if change.service != BACKEND or state_of(change.status) not in ("done", "failed"):
            return
        entry = (await self.in_flight()).get(change.id)
        try:
            wire = msgspec.convert(change.details.get("items", []), list[_Item])
        except msgspec.ValidationError:
            wire = []
        items = tuple(
            StagingItem(**msgspec.structs.asdict(i) | {"state": state_of(i.state)}) for i in wire
        )
        area = change.details.get("storage_area")
        staging = Staging(
            job_id=change.id,
            state=state_of(change.status),
            storage_area=area if isinstance(area, str) else None,
            items=items,
        )
        if entry is None:
            if len(self._early) < EARLY_CALLBACKS:
                self._early[change.id] = staging  # the stage call has not returned yet
        elif not any((i.namespace, i.name) == _key(entry) for i in items):
            log.warning("srcnet.callback.unreadable", job=change.id)
            await self.look(entry)  # the callback does not say: ask, this once
        else:
            await self.finish(entry, staging)  # raising makes the service deliver again


def _key(entry: InFlight) -> tuple[str, str]:
    data = entry.event.body.data
    assert isinstance(data, SkaoDataResource)  # only such events are ever staged
    return data.skao.namespace, data.skao.objectname


def _gone(entry: InFlight, reason: str) -> Staging:
    """A failed status for a job the service no longer knows."""
    namespace, name = _key(entry)
    reason = f"the service no longer knows staging job {entry.job} ({reason})"
    item = StagingItem(namespace=namespace, name=name, state="failed", reason=reason)
    return Staging(job_id=entry.job, state="failed", items=(item,))
