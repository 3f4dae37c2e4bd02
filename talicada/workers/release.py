"""``release``: undo what the other workers did, idempotently (docs/ARCHITECTURE.md §7).

Stops the task (SIGTERM to its process group, SIGKILL a second later),
removes the mount links (output is kept: it is the record; staged data is the
stager's to remove, on its own ``data.release``), and reports each live
executable and compute component released: COMPLETED after a normal end,
CANCELLED when the session was cancelled or failed. Running it twice finds
nothing left to undo and reports the same deliveries again, which the broker
ignores. The booking itself is freed by the broker when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal

import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import Release
from talicada.schema.iso8601 import parse_duration
from talicada.schema.model import ComponentPhase
from talicada.workers.files import SessionFiles
from talicada.workers.runtime import Handler, WorkerContext

log = structlog.get_logger("talicada.worker.release")

#: Seconds a task gets to end after SIGTERM before SIGKILL.
GRACE = 1.0


async def stop_task(files: SessionFiles) -> bool:
    """Stop the session's task if it runs; True when there was one."""
    try:
        pid = int(files.pid.read_text())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE
    while loop.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def release(context: WorkerContext) -> Handler:
    """The release handler."""

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, Release):
            raise ValueError(f"release/local does not handle {event.type!r} events")
        files = SessionFiles.of(context.settings.work_dir, event.session)
        # The marker first, then the pid: a launch racing with us sees one or the other.
        files.root.mkdir(parents=True, exist_ok=True)
        files.released.touch()
        if await stop_task(files):
            log.info("task.stopped", session=event.session)
        await asyncio.to_thread(shutil.rmtree, files.root / "mounts", True)
        fail = event.body.executable.injected_failure()
        components = list(event.body.components)
        normal = event.body.normal
        outcome: ComponentPhase = "COMPLETED" if normal else "CANCELLED"
        if fail is not None and fail.phase == "RELEASING" and normal and components:
            # Fail later, off the stream: a long ``after`` must not hold the event.
            after, message = fail.after, fail.message

            async def fail_later() -> None:
                await asyncio.sleep(parse_duration(after).total_seconds())
                await context.reporter.report(event, components[0], "FAILED", message=message)
                for component in components[1:]:
                    await context.reporter.report(event, component, outcome)

            context.spawn(fail_later())
            return
        for component in components:
            await context.reporter.report(event, component, outcome)

    return handle
