"""``release``: undo what the other workers did, idempotently (DESIGN §7).

Stops the task (SIGTERM to its process group, SIGKILL a second later),
removes staged data and mount links (output is kept: it is the record), and
reports each live component released: COMPLETED after a normal end,
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

import msgspec
import structlog

from talicada.events.bus import Delivery
from talicada.schema.iso8601 import parse_duration
from talicada.schema.model import AnyExecutable, Checksum, ComponentPhase, Delay, Ping
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
        files = SessionFiles.of(context.settings.work_dir, event.session)
        # The marker first, then the pid: a launch racing with us sees one or the other.
        files.root.mkdir(parents=True, exist_ok=True)
        files.released.touch()
        if await stop_task(files):
            log.info("task.stopped", session=event.session)
        for directory in (files.root / "storage", files.root / "mounts"):
            shutil.rmtree(directory, ignore_errors=True)
        executable = msgspec.convert(event.body["executable"], AnyExecutable)
        fail = executable.fail if isinstance(executable, Ping | Delay | Checksum) else None
        components: list[str] = list(event.body.get("components", []))
        normal = event.body.get("phase") == "RELEASING"
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
