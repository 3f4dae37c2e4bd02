"""Worker handlers on their own: idempotent on redelivery, safe against release races."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from talicada.events.bus import Delivery
from talicada.events.envelope import Launch, LaunchBody, Release, ReleaseBody
from talicada.events.report import Report
from talicada.schema.model import Delay, Metadata, SimpleComputeResource
from talicada.settings import load
from talicada.workers import launch, release
from talicada.workers.files import SessionFiles
from talicada.workers.runtime import Reporter, WorkerContext
from talicada.workers.tasks import write_status


class Recorder(Reporter):
    """A reporter that keeps reports instead of sending them."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        self.reports.append(report)


def context(tmp_path: Path) -> tuple[WorkerContext, Recorder]:
    recorder = Recorder()
    settings = load(environ={}, work_dir=str(tmp_path))
    return WorkerContext(settings, recorder, set()), recorder


def dead_launcher(files: SessionFiles) -> None:
    """Make the session's ``launched`` marker name a launcher process that has exited."""
    claim = msgspec.json.decode(files.launched.read_bytes())
    claim["launcher"] = dead_pid()
    files.launched.write_bytes(msgspec.json.encode(claim))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def settle(ctx: WorkerContext) -> None:
    """Wait for the worker's background work, including what that work starts."""
    while ctx.background:
        await asyncio.gather(*list(ctx.background))


def launch_event(session: str, duration: str = "PT30S") -> Delivery:
    body = LaunchBody(
        executable=Delay(meta=Metadata(uuid="exe"), duration=duration),
        compute=SimpleComputeResource(meta=Metadata(uuid="cpu")),
        ends="2099-01-01T00:00:00Z",
    )
    event = Launch.new(session, component="exe", platform="local", body=body)
    return Delivery(stream="launch:local", message_id="1-0", event=event, deliveries=1)


def release_event(session: str) -> Delivery:
    body = ReleaseBody(
        reason="cancelled",
        phase="CANCELLED",
        components=["exe", "cpu"],
        executable=Delay(meta=Metadata(uuid="exe"), duration="PT30S"),
    )
    event = Release.new(session, platform="local", body=body)
    return Delivery(stream="release:local", message_id="2-0", event=event, deliveries=1)


async def test_a_launch_delivered_twice_starts_one_task(tmp_path: Path) -> None:
    ctx, recorder = context(tmp_path)
    handle = launch.local(ctx)
    delivery = launch_event("s1")
    await handle(delivery)
    await handle(delivery)
    files = SessionFiles.of(tmp_path, "s1")
    pid = int(files.pid.read_text())
    assert [r.phase for r in recorder.reports] == ["RUNNING", "RUNNING"]
    assert len({r.delivery for r in recorder.reports}) == 1  # the broker applies it once
    # only one task runs: release stops it, and the watcher reports it stopped
    await release.release(ctx)(release_event("s1"))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await asyncio.wait_for(asyncio.gather(*ctx.background), timeout=5)
    assert [r.phase for r in recorder.reports if r.component == "exe"][-1] == "CANCELLED"


async def test_a_launch_handled_after_its_release_starts_nothing(tmp_path: Path) -> None:
    ctx, recorder = context(tmp_path)
    await release.release(ctx)(release_event("s2"))
    await launch.local(ctx)(launch_event("s2"))
    files = SessionFiles.of(tmp_path, "s2")
    assert not files.pid.exists()
    assert recorder.reports[-1].phase == "CANCELLED"
    assert recorder.reports[-1].message == "released before it was launched"


async def test_release_is_idempotent(tmp_path: Path) -> None:
    ctx, recorder = context(tmp_path)
    handle = release.release(ctx)
    delivery = release_event("s3")
    await handle(delivery)
    await handle(delivery)
    deliveries = [r.delivery for r in recorder.reports]
    assert len(deliveries) == 4
    assert len(set(deliveries)) == 2  # the same reports again: the broker ignores the replay


async def test_a_restarted_launcher_reports_the_tasks_its_predecessor_left(
    tmp_path: Path,
) -> None:
    # Given a task started by a launcher that then died (its watcher is gone)
    first, _ = context(tmp_path)
    delivery = launch_event("s4", duration="PT0.5S")
    await launch.local(first)(delivery)
    for task in list(first.background):
        task.cancel()
    files = SessionFiles.of(tmp_path, "s4")
    dead_launcher(files)
    # When a new launcher starts
    second, recorder = context(tmp_path)
    launch.local(second)
    # Then it reports the orphan once it ends, with its real outcome
    await asyncio.wait_for(settle(second), timeout=10)
    (report,) = recorder.reports
    assert report.phase == "COMPLETED"
    assert report.component == "exe"
    assert report.delivery == f"{delivery.event.id}:exe:COMPLETED"
    assert files.reported.exists()
    # and a third launcher leaves it alone: its end is already reported
    third, again = context(tmp_path)
    launch.local(third)
    await asyncio.wait_for(settle(third), timeout=10)
    assert again.reports == []


async def test_a_live_launchers_tasks_are_not_adopted(tmp_path: Path) -> None:
    first, _ = context(tmp_path)
    await launch.local(first)(launch_event("s5"))
    files = SessionFiles.of(tmp_path, "s5")
    claim = msgspec.json.decode(files.launched.read_bytes())
    claim["launcher"] = os.getppid()  # alive: the launcher of this task still runs
    files.launched.write_bytes(msgspec.json.encode(claim))
    second, recorder = context(tmp_path)
    launch.local(second)
    await asyncio.wait_for(settle(second), timeout=5)
    assert recorder.reports == []
    await release.release(first)(release_event("s5"))
    await asyncio.wait_for(settle(first), timeout=5)


async def test_a_launch_that_fails_to_start_can_be_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, recorder = context(tmp_path)
    handle = launch.local(ctx)
    delivery = launch_event("s6")
    monkeypatch.setattr(launch, "command", lambda spec, status=None: ["/nonexistent/talicada-task"])
    with pytest.raises(FileNotFoundError):
        await handle(delivery)
    files = SessionFiles.of(tmp_path, "s6")
    assert not files.launched.exists()
    monkeypatch.undo()
    await handle(delivery)
    assert [r.phase for r in recorder.reports] == ["RUNNING"]
    await release.release(ctx)(release_event("s6"))
    await asyncio.wait_for(settle(ctx), timeout=5)


async def test_a_redelivered_launch_whose_task_vanished_is_failed_honestly(
    tmp_path: Path,
) -> None:
    ctx, recorder = context(tmp_path)
    files = SessionFiles.of(tmp_path, "s7")
    files.root.mkdir(parents=True)
    delivery = launch_event("s7")
    files.launched.write_bytes(
        msgspec.json.encode(
            {"event": delivery.event.id, "component": "exe", "host": "x", "launcher": 1}
        )
    )
    files.pid.write_text(str(dead_pid()))
    await launch.local(ctx)(delivery)
    (report,) = recorder.reports
    assert report.phase == "FAILED"
    assert "outcome is unknown" in (report.message or "")


async def test_a_task_that_ended_while_no_launcher_ran_is_reported_with_its_real_status(
    tmp_path: Path,
) -> None:
    # Given a task whose launcher died, and which then ended with status 3
    ctx, recorder = context(tmp_path)
    files = SessionFiles.of(tmp_path, "s8")
    (files.output).mkdir(parents=True)
    (files.output / "stderr").write_text("tasks: the injected failure fired\n")
    delivery = launch_event("s8")
    files.launched.write_bytes(
        msgspec.json.encode(
            {"event": delivery.event.id, "component": "exe", "host": "x", "launcher": 1}
        )
    )
    files.pid.write_text(str(dead_pid()))
    write_status(str(files.exit_status), 3)
    # When its launch is delivered again
    await launch.local(ctx)(delivery)
    # Then the report names what the task itself said, not "unknown"
    (report,) = recorder.reports
    assert report.phase == "FAILED"
    assert report.message == "tasks: the injected failure fired"
    assert files.report.exists()
    assert files.reported.exists()
    # and a further delivery sends nothing new
    await launch.local(ctx)(delivery)
    assert len(recorder.reports) == 1
