"""``launch`` / local: run the test tasks as real subprocesses (docs/ARCHITECTURE.md §7).

The handler links the session's staged data into its mount directories,
starts the task in its own process group under a supervisor that records its
exit status on disk, records its pid, reports the executable RUNNING and
returns (so the event is acked and not reclaimed while a long task runs). A
background watcher keeps the final report on disk and then delivers it
(:mod:`talicada.workers.outcome`): COMPLETED with its digests, FAILED with
its message, or CANCELLED when ``release`` stopped it on purpose. stdout and
stderr are kept per session. A launcher that dies leaves all of this to its
successor on the same host (:mod:`talicada.workers.orphans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import ExtendExecutable, Handle, Launch
from talicada.schema.model import (
    AnyData,
    SimpleComputeResource,
    SimpleStorageResource,
    TestTask,
    kind_of,
)
from talicada.workers.files import SessionFiles
from talicada.workers.orphans import adopt_orphans, already_launched, claim_for
from talicada.workers.outcome import conclude, deliver, exit_status, keep
from talicada.workers.release import stop_task
from talicada.workers.runtime import Handler, WorkerContext
from talicada.workers.staging import PARTIAL
from talicada.workers.tasks import TaskSpec, command

log = structlog.get_logger("talicada.worker.launch")


def link_mounts(
    files: SessionFiles,
    compute: SimpleComputeResource,
    data: list[AnyData],
    storage: list[SimpleStorageResource],
    handles: Mapping[str, Handle] | None = None,
) -> None:
    """Make each mount directory show the verified files of what it mounts (hard links).

    A data item shows the one file its stager reported verified (``outputs.file``
    of its handle, of the size in ``outputs.bytes``); a mounted storage shows its data
    items that way. Without a report (an event from before stagers reported
    files) only visible regular files count: hidden and ``.partial`` ones never.
    Blocking: call it in a thread.
    """
    handles = handles or {}
    holder = {item.meta.uuid: item.storage for item in data if item.meta and item.meta.uuid}
    storages = {item.meta.uuid for item in storage if item.meta and item.meta.uuid}
    for volume in compute.volumes or []:
        if isinstance(volume, str):
            continue
        mount = files.mount(volume.path)
        mount.mkdir(parents=True, exist_ok=True)
        for resource in volume.resources or []:
            if resource in storages:
                items = [uuid for uuid, held in holder.items() if held == resource]
                sources = [(files.data(resource, uuid), handles.get(uuid)) for uuid in items]
            else:
                sources = [(files.data(str(holder.get(resource)), resource), handles.get(resource))]
            for directory, handle in sources:
                for path in verified_files(directory, handle):
                    link = mount / path.name
                    link.unlink(missing_ok=True)
                    # A hard link is the file itself, not a pointer out of the
                    # mount (tasks do not follow links out of their tree).
                    try:
                        os.link(path, link)
                    except OSError:
                        shutil.copyfile(path, link)


def verified_files(directory: Path, handle: Handle | None) -> list[Path]:
    """The files of one staged data item that a task may see."""
    if handle is not None and "file" in handle.outputs:
        path = directory / handle.outputs["file"]
        size = handle.outputs.get("bytes")
        try:
            found = path.stat()
        except FileNotFoundError:
            return []
        if not path.is_file() or (size is not None and str(found.st_size) != size):
            return []
        return [path]
    if not directory.is_dir():
        return []
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(PARTIAL)
    ]


def _mount_paths(files: SessionFiles, paths: list[str]) -> dict[str, str]:
    """Local directory → the session path it stands for, for each path the task reads.

    Real paths: the task resolves links and a relative work_dir (``make run``'s
    ``var/work``), and its digests must map back to the mounts it was given.
    """
    return {os.path.realpath(files.mount(path)): path for path in paths}


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
        # Mount paths as the task sees them, by local path: kept in the marker so
        # that a successor reports digests the way this launcher would.
        paths = _mount_paths(files, getattr(executable, "paths", []))
        try:
            # One launch per session, even when the event is delivered twice.
            descriptor = os.open(files.launched, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            await already_launched(context, event, files, watched)
            return
        os.write(descriptor, claim_for(event, paths))
        os.close(descriptor)
        watched.add(event.session)
        try:
            process = await _start(event, executable, files, paths)
        except BaseException:
            # Nothing runs: let a redelivery try again rather than believe it started.
            files.launched.unlink(missing_ok=True)
            watched.discard(event.session)
            raise
        if files.released.exists():
            # Release began while we started: it may have looked for the pid too
            # early, so stop the task ourselves (the watcher reports CANCELLED).
            await stop_task(files)
        context.spawn(_watch(context, event, process, files, paths), about=(event, event.component))
        await context.reporter.report(event, event.component, "RUNNING")

    return handle


async def _start(
    event: Launch, executable: TestTask, files: SessionFiles, paths: dict[str, str]
) -> asyncio.subprocess.Process:
    """Link the mounts and start the task; its pid is on disk when this returns.

    The task runs under its own supervisor (``--status``), which records its
    exit status durably, so the outcome outlives this launcher.
    """
    body = event.body
    await asyncio.to_thread(link_mounts, files, body.compute, body.data, body.storage, body.handles)
    spec = TaskSpec.from_executable(executable, list(paths))
    files.output.mkdir(parents=True, exist_ok=True)
    with (
        (files.output / "stdout").open("wb") as out,
        (files.output / "stderr").open("wb") as err,
    ):
        process = await asyncio.create_subprocess_exec(
            *command(spec, str(files.exit_status)),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        files.pid.write_text(str(process.pid))
    except BaseException:
        process.kill()  # a task nobody could find again must not run
        raise
    log.info("task.started", session=event.session, pid=process.pid, kind=spec.kind)
    return process


async def _watch(
    context: WorkerContext,
    event: Launch,
    process: asyncio.subprocess.Process,
    files: SessionFiles,
    paths: dict[str, str],
) -> None:
    """Wait for the task, keep its final report on disk, then deliver it."""
    waited = await process.wait()
    assert event.component is not None
    # The supervisor's record, when it made one: the task's own status, durable.
    code = await asyncio.to_thread(exit_status, files)
    code = waited if code is None else code
    log.info("task.ended", session=event.session, pid=process.pid, code=code)
    phase, details = await asyncio.to_thread(conclude, files, code, paths)
    await asyncio.to_thread(keep, files, event.id, event.component, phase, details)
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()
    await deliver(context, files)
