"""``prepare-data`` / local: allocate storage directories and stage data into them.

``storage.allocate`` makes the storage's directory; ``data.stage`` downloads
``http(s)://`` or copies ``file://`` data into it, verifying size and checksum
and reporting progress; ``data.release`` removes what was staged. A permanent
problem (404, wrong checksum, a URL the platform may not fetch) fails the data
item; only a failed callback makes the event be retried. Each event is staged
under the limits of its own platform.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import AllocateStorage, ReleaseData, StageData
from talicada.schema.model import ComponentPhase, SimpleDataResource, kind_of
from talicada.security.fence import platform_fence
from talicada.settings import PlatformSettings, Settings
from talicada.workers.files import SessionFiles
from talicada.workers.runtime import Handler, WorkerContext
from talicada.workers.staging import StagingError, StagingLimits, clear_stale, stage

log = structlog.get_logger("talicada.worker.prepare-data")


def limits_for(settings: Settings, platform: PlatformSettings) -> StagingLimits:
    """Staging limits of ``platform``: its schemes and hosts, and the file roots."""
    return StagingLimits(
        max_bytes=settings.staging_max_bytes,
        allowed_schemes=frozenset(platform.data_schemes),
        allowed_hosts=frozenset(platform.data_hosts) or None,
        file_roots=tuple(Path(root) for root in settings.file_roots),
        fence=platform_fence(settings, platform),
    )


def local(context: WorkerContext) -> Handler:
    """The local prepare-data handler."""

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        files = SessionFiles.of(context.settings.work_dir, event.session)
        match event:
            case AllocateStorage(component=str(component)):
                files.storage(component).mkdir(parents=True, exist_ok=True)
                await context.reporter.report(event, component, "AVAILABLE")
            case StageData(component=str(component)):
                await _stage(context, event, component, files)
            case ReleaseData(body=body):
                # Staged copies go; what the task wrote to its output stays (the record).
                await asyncio.to_thread(shutil.rmtree, files.root / "storage", True)
                await asyncio.to_thread(shutil.rmtree, files.root / "scratch", True)
                outcome: ComponentPhase = "COMPLETED" if body.normal else "CANCELLED"
                for component in body.components:
                    await context.reporter.report(event, component, outcome)
            case _:
                raise ValueError(f"prepare-data/local does not handle {event.type!r} events")

    return handle


async def _stage(
    context: WorkerContext, event: StageData, component: str, files: SessionFiles
) -> None:
    data = event.body.data
    if not isinstance(data, SimpleDataResource):
        await context.reporter.report(
            event,
            component,
            "FAILED",
            message=f"the local platform cannot stage {kind_of(data)} data",
        )
        return
    target = files.data(event.body.storage, component)
    limits = limits_for(context.settings, context.platform(event))
    scratch = files.scratch(component)
    # A worker killed mid-download left its partial here: it is no one's now.
    for stale in await asyncio.to_thread(clear_stale, scratch, limits.timeout_s + 60):
        log.info("staging.stale_removed", session=event.session, path=str(stale))

    async def progress(done: int, total: int | None) -> None:
        counts = {"done": done, **({"total": total} if total is not None else {})}
        await context.reporter.report(
            event, component, "PREPARING", suffix=f":progress:{done}", progress=counts
        )

    try:
        staged = await stage(
            data.location,
            target,
            name=(data.meta.name if data.meta and data.meta.name else component),
            expected_size=data.size,
            expected_checksum=data.checksum,
            limits=limits,
            progress=progress,
            scratch=scratch,
        )
    except StagingError as error:
        await context.reporter.report(event, component, "FAILED", message=str(error))
        return
    await context.reporter.report(
        event,
        component,
        "AVAILABLE",
        message=f"staged {staged.size} bytes, sha256 {staged.sha256}",
        # What the launcher may mount: this verified file and nothing else.
        outputs={"file": staged.path.name, "bytes": str(staged.size), "sha256": staged.sha256},
    )
