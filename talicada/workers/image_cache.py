"""``image-cache`` / none: nothing to fetch, the executable is ready at once.

A test task's ``fail: {phase: PREPARING}`` block fails here, after its delay:
preparing the executable is what this worker does.
"""

from __future__ import annotations

import asyncio

from talicada.events.bus import Delivery
from talicada.events.envelope import CacheImage
from talicada.schema.iso8601 import parse_duration
from talicada.workers.runtime import Handler, WorkerContext


def none(context: WorkerContext) -> Handler:
    """The image-cache handler for platforms without an image cache."""

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, CacheImage) or event.component is None:
            raise ValueError(f"image-cache/none does not handle {event.type!r} events")
        component = event.component
        fail = event.body.executable.injected_failure()
        if fail is not None and fail.phase == "PREPARING":
            # Fail later, off the stream: a long ``after`` must not hold the event.
            after, message = fail.after, fail.message

            async def fail_later() -> None:
                await asyncio.sleep(parse_duration(after).total_seconds())
                await context.reporter.report(event, component, "FAILED", message=message)

            context.spawn(fail_later())
            return
        await context.reporter.report(event, component, "AVAILABLE")

    return handle
