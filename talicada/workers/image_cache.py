"""``image-cache`` / none: nothing to fetch, the executable is ready at once.

The test tasks' ``fail: {phase: PREPARING}`` block fails here, after its delay:
preparing the executable is what this worker does.
"""

from __future__ import annotations

import asyncio

import msgspec

from talicada.events.bus import Delivery
from talicada.schema.iso8601 import parse_duration
from talicada.schema.model import AnyExecutable, Checksum, Delay, Ping
from talicada.workers.runtime import Handler, WorkerContext


def none(context: WorkerContext) -> Handler:
    """The image-cache handler for platforms without an image cache."""

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        assert event.component is not None
        executable = msgspec.convert(event.body["executable"], AnyExecutable)
        fail = executable.fail if isinstance(executable, Ping | Delay | Checksum) else None
        if fail is not None and fail.phase == "PREPARING":
            # Fail later, off the stream: a long ``after`` must not hold the event.
            component, after, message = event.component, fail.after, fail.message

            async def fail_later() -> None:
                await asyncio.sleep(parse_duration(after).total_seconds())
                await context.reporter.report(event, component, "FAILED", message=message)

            context.spawn(fail_later())
            return
        await context.reporter.report(event, event.component, "AVAILABLE")

    return handle
