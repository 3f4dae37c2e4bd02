"""Tasks whose launcher died: finding them, watching them, reporting them.

Each launch leaves a ``launched`` marker naming the event, the component, the
launcher (host and process id) and the task's mount paths. A launcher adopts
a task only when that launcher ran on this host and is gone: a live launcher,
or one on another host sharing the work directory, keeps its own tasks. A
task is not the launcher's child, but its supervisor records its exit status
on disk (:mod:`talicada.workers.tasks`), so an adopted task is reported with
its real outcome, as its own launcher would have: COMPLETED with its digests,
FAILED with its message, CANCELLED when release stopped it. Final reports a
dead launcher kept but could not deliver are delivered too
(:mod:`talicada.workers.outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import structlog

from talicada.events.envelope import Event, SessionChanged, TransitionBody
from talicada.schema.iso8601 import format_instant
from talicada.workers.files import SessionFiles
from talicada.workers.outcome import conclude, deliver, exit_status, keep, unsent
from talicada.workers.runtime import WorkerContext

log = structlog.get_logger("talicada.worker.launch")

HOST = socket.gethostname()
#: Seconds between looks at an adopted task.
POLL = 0.5


class Launched(msgspec.Struct):
    """What the ``launched`` marker records."""

    event: str
    component: str
    host: str
    launcher: int
    #: Local mount path → the path the task sees (new fields get defaults).
    paths: dict[str, str] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Launched)


def claim_for(event: Event, paths: dict[str, str] | None = None) -> bytes:
    """The ``launched`` marker's content for a task this process starts for ``event``."""
    assert event.component is not None
    return _encoder.encode(
        Launched(
            event=event.id,
            component=event.component,
            host=HOST,
            launcher=os.getpid(),
            paths=paths or {},
        )
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(files: SessionFiles) -> tuple[Launched, int | None] | None:
    try:
        launched = _decoder.decode(files.launched.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    try:
        return launched, int(files.pid.read_text())
    except (OSError, ValueError):
        return launched, None


def _abandoned(launched: Launched) -> bool:
    """Whether the launcher of a task ran here and is gone."""
    return (
        launched.host == HOST and launched.launcher != os.getpid() and not _alive(launched.launcher)
    )


def _orphans(work_dir: str) -> list[tuple[SessionFiles, Launched, int]]:
    """Running tasks here whose launcher is gone (a blocking scan)."""
    root = Path(work_dir).resolve()
    found = []
    for marker in sorted(root.glob("*/launched")) if root.is_dir() else []:
        files = SessionFiles(marker.parent)
        read = _read(files)
        if read is None or files.ended.exists() or files.released.exists():
            continue
        launched, pid = read
        if pid is not None and _abandoned(launched):
            found.append((files, launched, pid))
    return found


async def adopt_orphans(context: WorkerContext, watched: set[str]) -> None:
    """Watch every task a dead launcher on this host left running, and deliver
    the final reports it kept but did not get taken."""
    work_dir = context.settings.work_dir
    for files, launched, pid in await asyncio.to_thread(_orphans, work_dir):
        if files.root.name not in watched:
            watched.add(files.root.name)
            context.spawn(_adopt(context, files, launched, pid), about=_about(files, launched))
    for files in await asyncio.to_thread(unsent, work_dir):
        if files.root.name not in watched:
            watched.add(files.root.name)
            context.spawn(deliver(context, files))


def _about(files: SessionFiles, launched: Launched) -> tuple[Event, str]:
    """An envelope that carries the launch event's id, so that reports about an
    adopted task use the delivery ids its own launcher would have used."""
    event = SessionChanged(
        id=launched.event,
        session=files.root.name,
        component=launched.component,
        created=format_instant(datetime.now(UTC)),
        body=TransitionBody(source="RUNNING", target="ENDED", cause="adopted", time=""),
    )
    return event, launched.component


async def already_launched(
    context: WorkerContext, event: Event, files: SessionFiles, watched: set[str]
) -> None:
    """A launch delivered again: say what is true of the task started the first time."""
    assert event.component is not None
    read = await asyncio.to_thread(_read, files)
    if files.report.exists():
        # Its end is known and kept: make sure someone delivers it.
        if files.root.name not in watched and not files.reported.exists():
            watched.add(files.root.name)
            context.spawn(deliver(context, files))
        return
    if read is not None and read[1] is not None and _alive(read[1]):
        launched, pid = read[0], read[1]
        if files.root.name not in watched and _abandoned(launched):
            watched.add(files.root.name)
            context.spawn(_adopt(context, files, launched, pid), about=(event, event.component))
        await context.reporter.report(event, event.component, "RUNNING")
        return
    if read is not None and read[1] is not None:
        # It ran and ended while no launcher watched: its supervisor kept the status.
        await _conclude(context, files, read[0])
        return
    # Started once, never recorded as running: its launcher died on the way.
    details = {"message": "the launch was interrupted; the task's outcome is unknown"}
    await asyncio.to_thread(keep, files, event.id, event.component, "FAILED", details)
    await deliver(context, files)


async def _adopt(context: WorkerContext, files: SessionFiles, launched: Launched, pid: int) -> None:
    """Wait for an orphaned task to end, then report it as its launcher would have."""
    # Polling is the only way: a process that is not our child cannot be awaited.
    while _alive(pid):  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    log.warning("task.adopted_ended", session=files.root.name, pid=pid)
    await _conclude(context, files, launched)


async def _conclude(context: WorkerContext, files: SessionFiles, launched: Launched) -> None:
    """Keep and deliver the final report of a task that ended, from its recorded status."""
    if not files.report.exists():
        code = await asyncio.to_thread(exit_status, files)
        phase, details = await asyncio.to_thread(conclude, files, code, launched.paths)
        await asyncio.to_thread(keep, files, launched.event, launched.component, phase, details)
        with contextlib.suppress(FileNotFoundError):
            files.pid.unlink()
    await deliver(context, files)
