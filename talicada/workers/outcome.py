"""How a local task ended, and its final report: written durably, then sent until taken.

The launcher reports a task's end after the launch event was acked, so the
stream no longer holds anything to retry from. The report therefore goes to
disk beside the task first (``<session>/report``, created once, fsynced) and is
sent from there with backoff until the broker takes it; only then is
``reported`` written. A broker away for minutes delays the report, and a
launcher that dies before it is taken leaves it for its successor on the same
host (:func:`unsent`), so no result is ever lost and none is sent under two
delivery ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import msgspec
import structlog

from talicada.events.bus import jittered
from talicada.events.report import Report
from talicada.schema.model import ComponentPhase
from talicada.workers.files import SessionFiles
from talicada.workers.runtime import CallbackFailed, WorkerContext
from talicada.workers.staging import fsync_directory
from talicada.workers.tasks import parse_result, read_status

log = structlog.get_logger("talicada.worker.launch")

#: Bytes of stdout and of stderr sent back with a final report.
OUTPUT_TAIL = 16 * 1024
#: First and longest pause between attempts to send a kept report, seconds.
RESEND_FIRST = 1.0
RESEND_MAX = 30.0


class Kept(msgspec.Struct):
    """What ``<session>/report`` holds: the report and the session it is for."""

    session: str
    report: Report


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Kept)


def tail(path: Path) -> str:
    """The last :data:`OUTPUT_TAIL` bytes of a file, as text ('' when missing)."""
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - OUTPUT_TAIL))
        return handle.read().decode("utf-8", errors="replace")


def exit_status(files: SessionFiles) -> int | None:
    """The exit status the task's supervisor recorded, if it did."""
    return read_status(str(files.exit_status))


def conclude(
    files: SessionFiles, code: int | None, paths: dict[str, str]
) -> tuple[ComponentPhase, dict[str, Any]]:
    """The phase and report details of a task that ended with status ``code``
    (None: unknown). ``paths`` maps local mount paths to what the task saw."""
    stdout, stderr = tail(files.output / "stdout"), tail(files.output / "stderr")
    output = {"stdout": stdout, "stderr": stderr}
    if files.released.exists() and code != 0:
        return "CANCELLED", {"message": "stopped by release", "output": output}
    if code is None:
        message = "the task's supervisor died with it; its outcome is unknown"
        return "FAILED", {"message": message, "output": output}
    if code == 0:
        try:
            digests = parse_result(stdout.encode())
        except ValueError as error:
            return "FAILED", {"message": str(error), "output": output}
        shown = _as_seen(digests, paths) or None
        return "COMPLETED", {"output": output, "digests": shown, "exit_code": code}
    last = stderr.strip().splitlines()[-1:] or [f"the task exited with status {code}"]
    return "FAILED", {"message": last[0], "output": output, "exit_code": code}


def _as_seen(digests: dict[str, str], paths: dict[str, str]) -> dict[str, str]:
    """Digests keyed by paths as the executable sees them (its mounts), not ours.

    ``paths`` holds real local paths (the task reports real paths, also under a
    relative work_dir such as ``make run``'s ``var/work``).
    """
    return {_as_mounted(path, paths): digest for path, digest in digests.items()}


def _as_mounted(path: str, mounts: dict[str, str]) -> str:
    """A file the task reported, named by the session's own path (``/inputs/a.fits``)."""
    for local, mounted in mounts.items():
        if path == local:
            return mounted
        if path.startswith(local.rstrip(os.sep) + os.sep):
            return mounted.rstrip("/") + "/" + path[len(local) :].lstrip(os.sep)
    return path


def keep(
    files: SessionFiles,
    event_id: str,
    component: str,
    phase: ComponentPhase,
    details: dict[str, Any],
) -> bool:
    """Write the task's final report durably, once; False when one was written before.

    The delivery id is the one a live watcher would use, so whichever launcher
    sends it, the broker applies it once. Blocking: call it in a thread.
    """
    report = Report(
        delivery=f"{event_id}:{component}:{phase}",
        event=event_id,
        component=component,
        phase=phase,
        **details,
    )
    temporary = files.root / f"report.{os.getpid()}.tmp"
    with temporary.open("wb") as stream:
        stream.write(_encoder.encode(Kept(session=files.root.name, report=report)))
        stream.flush()
        os.fsync(stream.fileno())
    try:
        os.link(temporary, files.report)  # fails if another launcher concluded first
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    files.ended.write_text(phase)
    fsync_directory(files.root)
    return True


def kept(files: SessionFiles) -> Kept | None:
    """The final report kept for the session, if any."""
    try:
        return _decoder.decode(files.report.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


async def deliver(context: WorkerContext, files: SessionFiles) -> None:
    """Send the kept report until the broker takes it, then mark it ``reported``.

    Stops trying when the worker stops: the report stays on disk for the next
    launcher on this host (:func:`unsent`).
    """
    found = await asyncio.to_thread(kept, files)
    if found is None or files.reported.exists():
        return
    attempt = 0
    while True:
        try:
            await context.reporter.send(found.session, found.report)
        except CallbackFailed as error:
            attempt += 1
            pause = jittered(min(RESEND_FIRST * 2 ** (attempt - 1), RESEND_MAX))
            log.warning(
                "report.unsent",
                session=found.session,
                delivery=found.report.delivery,
                attempt=attempt,
                retry_in=round(pause, 2),
                reason=str(error),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(context.stopping.wait(), pause)
            if context.stopping.is_set():
                return
            continue
        await asyncio.to_thread(files.reported.write_text, found.report.delivery)
        log.info("report.delivered", session=found.session, delivery=found.report.delivery)
        return


def unsent(work_dir: str) -> list[SessionFiles]:
    """Sessions whose kept final report the broker has not taken (a blocking scan)."""
    root = Path(work_dir).resolve()
    if not root.is_dir():
        return []
    return [
        SessionFiles(report.parent)
        for report in sorted(root.glob("*/report"))
        if not (report.parent / "reported").exists()
    ]
