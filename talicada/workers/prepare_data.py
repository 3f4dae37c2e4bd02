"""``prepare-data`` / local: allocate storage directories and stage data into them.

``storage.allocate`` makes the storage's directory; ``data.stage`` downloads
``http(s)://`` or copies ``file://`` data into it, verifying size and checksum
and reporting progress. A permanent problem (404, wrong checksum, a URL the
platform may not fetch) fails the data item; only a failed callback makes the
event be retried.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from talicada.events.bus import Delivery
from talicada.schema.model import AnyData, SimpleDataResource, kind_of
from talicada.workers.files import SessionFiles
from talicada.workers.runtime import Handler, WorkerContext
from talicada.workers.staging import StagingError, StagingLimits, stage

log = structlog.get_logger("talicada.worker.prepare-data")


def limits_for(context: WorkerContext) -> StagingLimits:
    """Staging limits from the settings (schemes of the local platform, file roots)."""
    platform = context.settings.platforms[0]
    return StagingLimits(
        max_bytes=context.settings.staging_max_bytes,
        allowed_schemes=frozenset(platform.data_schemes),
        allowed_hosts=frozenset(platform.data_hosts) or None,
        file_roots=tuple(Path(root) for root in context.settings.file_roots),
    )


def local(context: WorkerContext) -> Handler:
    """The local prepare-data handler."""
    limits = limits_for(context)

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        files = SessionFiles.of(context.settings.work_dir, event.session)
        assert event.component is not None
        if event.type == "storage.allocate":
            files.storage(event.component).mkdir(parents=True, exist_ok=True)
            await context.reporter.report(event, event.component, "AVAILABLE")
            return
        if event.type != "data.stage":
            raise ValueError(f"prepare-data does not handle {event.type!r} events")
        data = msgspec.convert(event.body["data"], AnyData)
        if not isinstance(data, SimpleDataResource):
            await context.reporter.report(
                event,
                event.component,
                "FAILED",
                message=f"the local platform cannot stage {kind_of(data)} data",
            )
            return
        target = files.data(str(event.body["storage"]), event.component)

        async def progress(done: int, total: int | None) -> None:
            assert event.component is not None
            counts = {"done": done, **({"total": total} if total is not None else {})}
            await context.reporter.report(
                event, event.component, "PREPARING", suffix=f":progress:{done}", progress=counts
            )

        try:
            staged = await stage(
                data.location,
                target,
                name=(data.meta.name if data.meta and data.meta.name else event.component),
                expected_size=data.size,
                expected_checksum=data.checksum,
                limits=limits,
                progress=progress,
            )
        except StagingError as error:
            await context.reporter.report(event, event.component, "FAILED", message=str(error))
            return
        await context.reporter.report(
            event,
            event.component,
            "AVAILABLE",
            message=f"staged {staged.size} bytes, sha256 {staged.sha256}",
        )

    return handle
