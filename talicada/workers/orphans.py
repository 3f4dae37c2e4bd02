"""Tasks whose launcher died: finding them, watching them, reporting them.

Each launch leaves a ``launched`` marker naming the event, the component, and
the launcher (host and process id). A launcher adopts a task only when that
launcher ran on this host and is gone: a live launcher, or one on another
host sharing the work directory, keeps its own tasks. An adopted task's exit
status cannot be learned, so when it ends it is reported FAILED with that
reason — or CANCELLED when release stopped it on purpose.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import structlog

from talicada.events.envelope import Event, SessionChanged, TransitionBody
from talicada.schema.iso8601 import format_instant
from talicada.workers.files import SessionFiles
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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Launched)


def claim_for(event: Event) -> bytes:
    """The ``launched`` marker's content for a task this process starts for ``event``."""
    assert event.component is not None
    return _encoder.encode(
        Launched(event=event.id, component=event.component, host=HOST, launcher=os.getpid())
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
    """Watch every task a dead launcher on this host left running."""
    for files, launched, pid in await asyncio.to_thread(_orphans, context.settings.work_dir):
        if files.root.name not in watched:
            watched.add(files.root.name)
            context.spawn(_adopt(context, files, launched, pid))


async def already_launched(
    context: WorkerContext, event: Event, files: SessionFiles, watched: set[str]
) -> None:
    """A launch delivered again: say what is true of the task started the first time."""
    assert event.component is not None
    read = _read(files)
    if files.ended.exists():
        return  # its end is reported by whoever watched it
    if read is not None and read[1] is not None and _alive(read[1]):
        launched, pid = read[0], read[1]
        if files.root.name not in watched and _abandoned(launched):
            watched.add(files.root.name)
            context.spawn(_adopt(context, files, launched, pid))
        await context.reporter.report(event, event.component, "RUNNING")
        return
    # Started once, now neither running nor ended: its launcher died on the way.
    files.ended.write_text("unknown")
    await context.reporter.report(
        event,
        event.component,
        "FAILED",
        message="the launch was interrupted; the task's outcome is unknown",
    )


async def _adopt(context: WorkerContext, files: SessionFiles, launched: Launched, pid: int) -> None:
    """Wait for an orphaned task to end, then report it."""
    # Polling is the only way: a process that is not our child cannot be awaited.
    while _alive(pid):  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    if files.ended.exists():
        return
    files.ended.write_text("unknown")
    output = {"stdout": tail(files.output / "stdout"), "stderr": tail(files.output / "stderr")}
    # Reports are keyed by the launch event's id: rebuild an envelope that carries it.
    event = SessionChanged(
        id=launched.event,
        session=files.root.name,
        component=launched.component,
        created=format_instant(datetime.now(UTC)),
        body=TransitionBody(source="RUNNING", target="ENDED", cause="adopted", time=""),
    )
    log.warning("task.adopted_ended", session=event.session, pid=pid)
    if files.released.exists():
        await context.reporter.report(
            event, launched.component, "CANCELLED", message="stopped by release", output=output
        )
        return
    await context.reporter.report(
        event,
        launched.component,
        "FAILED",
        message="the launcher restarted while the task ran; its outcome is unknown",
        output=output,
    )


#: Bytes of stdout and of stderr sent back with a final report.
OUTPUT_TAIL = 16 * 1024


def tail(path: Path) -> str:
    """The last :data:`OUTPUT_TAIL` bytes of a file, as text ('' when missing)."""
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - OUTPUT_TAIL))
        return handle.read().decode("utf-8", errors="replace")
