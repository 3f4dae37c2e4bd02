"""``launch`` / local: run the test tasks as real subprocesses (docs/ARCHITECTURE.md §7).

The handler links the session's staged data into its mount directories,
starts the task in its own process group, records its pid, reports the
executable RUNNING and returns (so the event is acked and not reclaimed
while a long task runs). A background watcher reports how the task ended:
COMPLETED with its digests, FAILED with its message, or CANCELLED when
``release`` stopped it on purpose. stdout and stderr are kept per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil

import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import ExtendExecutable, Launch
from talicada.schema.model import (
    AnyData,
    SimpleComputeResource,
    SimpleStorageResource,
    TestTask,
    kind_of,
)
from talicada.workers.files import SessionFiles
from talicada.workers.orphans import adopt_orphans, already_launched, claim_for, tail
from talicada.workers.release import stop_task
from talicada.workers.runtime import CallbackFailed, Handler, WorkerContext
from talicada.workers.tasks import TaskSpec, command, parse_result

log = structlog.get_logger("talicada.worker.launch")


def link_mounts(
    files: SessionFiles,
    compute: SimpleComputeResource,
    data: list[AnyData],
    storage: list[SimpleStorageResource],
) -> None:
    """Make each mount directory show the files of what it mounts (hard links)."""
    holder = {item.meta.uuid: item.storage for item in data if item.meta and item.meta.uuid}
    storages = {item.meta.uuid for item in storage if item.meta and item.meta.uuid}
    for volume in compute.volumes or []:
        if isinstance(volume, str):
            continue
        mount = files.mount(volume.path)
        mount.mkdir(parents=True, exist_ok=True)
        for resource in volume.resources or []:
            if resource in storages:
                sources = [files.storage(resource)]
            else:
                sources = [files.data(str(holder.get(resource)), resource)]
            for source in sources:
                for path in sorted(source.rglob("*")) if source.exists() else []:
                    if path.is_file():
                        link = mount / path.name
                        link.unlink(missing_ok=True)
                        # A hard link is the file itself, not a pointer out of the
                        # mount (tasks do not follow links out of their tree).
                        try:
                            os.link(path, link)
                        except OSError:
                            shutil.copyfile(path, link)


def local(context: WorkerContext) -> Handler:
    """The local launch handler; it first adopts tasks a dead launcher left running."""
    watched: set[str] = set()  # sessions whose task this launcher watches
    context.spawn(adopt_orphans(context, watched))

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, ExtendExecutable):
            return  # local tasks run until they end or are released: nothing to renew
        if not isinstance(event, Launch) or event.component is None:
            raise ValueError(f"launch/local does not handle {event.type!r} events")
        executable = event.body.executable
        if not isinstance(executable, TestTask):
            await context.reporter.report(
                event,
                event.component,
                "FAILED",
                message=f"the local platform runs only test tasks, not {kind_of(executable)}",
            )
            return
        files = SessionFiles.of(context.settings.work_dir, event.session)
        files.root.mkdir(parents=True, exist_ok=True)
        if files.released.exists():
            # Release came first (a cancel, the window's end): nothing may start now.
            await context.reporter.report(
                event, event.component, "CANCELLED", message="released before it was launched"
            )
            return
        try:
            # One launch per session, even when the event is delivered twice.
            descriptor = os.open(files.launched, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            await already_launched(context, event, files, watched)
            return
        os.write(descriptor, claim_for(event))
        os.close(descriptor)
        watched.add(event.session)
        try:
            process, paths = await _start(event, executable, files)
        except BaseException:
            # Nothing runs: let a redelivery try again rather than believe it started.
            files.launched.unlink(missing_ok=True)
            watched.discard(event.session)
            raise
        if files.released.exists():
            # Release began while we started: it may have looked for the pid too
            # early, so stop the task ourselves (the watcher reports CANCELLED).
            await stop_task(files)
        context.spawn(_watch(context, event, process, files, paths))
        await context.reporter.report(event, event.component, "RUNNING")

    return handle


async def _start(
    event: Launch, executable: TestTask, files: SessionFiles
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Link the mounts and start the task; its pid is on disk when this returns."""
    body = event.body
    link_mounts(files, body.compute, body.data, body.storage)
    paths = {str(files.mount(path)): path for path in getattr(executable, "paths", [])}
    spec = TaskSpec.from_executable(executable, list(paths))
    files.output.mkdir(parents=True, exist_ok=True)
    with (
        (files.output / "stdout").open("wb") as out,
        (files.output / "stderr").open("wb") as err,
    ):
        process = await asyncio.create_subprocess_exec(
            *command(spec), stdout=out, stderr=err, start_new_session=True
        )
    try:
        files.pid.write_text(str(process.pid))
    except BaseException:
        process.kill()  # a task nobody could find again must not run
        raise
    log.info("task.started", session=event.session, pid=process.pid, kind=spec.kind)
    return process, paths


async def _watch(
    context: WorkerContext,
    event: Launch,
    process: asyncio.subprocess.Process,
    files: SessionFiles,
    paths: dict[str, str],
) -> None:
    """Report how the task ended."""
    code = await process.wait()
    assert event.component is not None
    stdout, stderr = tail(files.output / "stdout"), tail(files.output / "stderr")
    output: dict[str, str] = {"stdout": stdout, "stderr": stderr}
    log.info("task.ended", session=event.session, pid=process.pid, code=code)
    details: dict[str, object]
    if files.released.exists():
        phase, details = "CANCELLED", {"message": "stopped by release", "output": output}
    elif code == 0:
        digests: dict[str, str] = {}
        try:
            digests = parse_result(stdout.encode())
        except ValueError as error:
            phase, details = "FAILED", {"message": str(error), "output": output}
        else:
            # Report paths as the executable sees them (its mounts), not ours.
            shown = {}
            for path, digest in digests.items():
                for local, mounted in paths.items():
                    if path.startswith(local):
                        path = mounted.rstrip("/") + "/" + path[len(local) :].lstrip("/")
                        break
                shown[path] = digest
            phase, details = "COMPLETED", {"output": output, "digests": shown or None}
    else:
        last = stderr.strip().splitlines()[-1:] or [f"the task exited with status {code}"]
        phase, details = "FAILED", {"message": last[0], "output": output}
    files.ended.write_text(str(code))
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()
    for attempt in range(5):
        try:
            await context.reporter.report(event, event.component, phase, **details)  # type: ignore[arg-type]
            return
        except CallbackFailed:
            await asyncio.sleep(2**attempt)
    log.error("task.unreported", session=event.session, phase=phase)
