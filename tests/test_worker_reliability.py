"""Worker pieces that keep results whole: verified mounts, scratch partials, kept
final reports, background failures, jittered retries."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from talicada.events.bus import jittered
from talicada.events.envelope import Handle, Launch, LaunchBody
from talicada.events.report import Report
from talicada.schema.model import (
    Delay,
    Metadata,
    SimpleComputeResource,
    SimpleDataResource,
    SimpleVolumeMount,
)
from talicada.settings import load
from talicada.workers import outcome
from talicada.workers.files import SessionFiles
from talicada.workers.launch import link_mounts
from talicada.workers.outcome import deliver, keep, kept, unsent
from talicada.workers.runtime import CallbackFailed, Reporter, WorkerContext
from talicada.workers.staging import clear_stale


class Flaky(Reporter):
    """A reporter whose broker refuses the first ``failures`` sends."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        if self.failures:
            self.failures -= 1
            raise CallbackFailed("the broker is away")
        self.reports.append(report)


def context(tmp_path: Path, reporter: Reporter) -> WorkerContext:
    return WorkerContext(load(environ={}, work_dir=str(tmp_path)), reporter, set())


def staged(tmp_path: Path) -> tuple[SessionFiles, SimpleComputeResource, SimpleDataResource]:
    """A session with one data item staged in storage ``st``: the verified file and
    what a crash left beside it (a hidden partial, a stray file)."""
    files = SessionFiles.of(tmp_path, "s1")
    directory = files.data("st", "d1")
    directory.mkdir(parents=True)
    (directory / "cube.fits").write_bytes(b"x" * 10)
    (directory / ".cube.fits.1a2b.partial").write_bytes(b"x" * 4)
    (directory / "stray.partial").write_bytes(b"x")
    data = SimpleDataResource(meta=Metadata(uuid="d1"), location="http://h/cube.fits", storage="st")
    volume = SimpleVolumeMount(path="/inputs/", resources=["d1"])
    return files, SimpleComputeResource(meta=Metadata(uuid="c"), volumes=[volume]), data


def test_only_the_file_the_stager_verified_is_mounted(tmp_path: Path) -> None:
    files, compute, data = staged(tmp_path)
    handle = Handle(outputs={"file": "cube.fits", "bytes": "10"})
    link_mounts(files, compute, [data], [], {"d1": handle})
    assert sorted(path.name for path in files.mount("/inputs/").iterdir()) == ["cube.fits"]


def test_a_file_of_another_size_than_verified_is_not_mounted(tmp_path: Path) -> None:
    files, compute, data = staged(tmp_path)
    handle = Handle(outputs={"file": "cube.fits", "bytes": "11"})
    link_mounts(files, compute, [data], [], {"d1": handle})
    assert list(files.mount("/inputs/").iterdir()) == []


def test_without_a_report_hidden_and_partial_files_are_never_mounted(tmp_path: Path) -> None:
    files, compute, data = staged(tmp_path)
    link_mounts(files, compute, [data], [])
    assert sorted(path.name for path in files.mount("/inputs/").iterdir()) == ["cube.fits"]


def test_stale_partials_are_cleared_and_live_ones_kept(tmp_path: Path) -> None:
    old, live = tmp_path / ".a.1.partial", tmp_path / ".b.2.partial"
    old.write_bytes(b"x")
    live.write_bytes(b"x")
    os.utime(old, (time.time() - 600, time.time() - 600))
    assert clear_stale(tmp_path, older_than=360) == [old]
    assert not old.exists()
    assert live.exists()


async def test_a_kept_report_is_sent_until_the_broker_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome, "RESEND_FIRST", 0.01)
    reporter = Flaky(failures=2)
    files = SessionFiles.of(tmp_path, "s2")
    files.root.mkdir(parents=True)
    assert keep(files, "ev", "exe", "COMPLETED", {"digests": {"/in/a": "0" * 64}})
    assert not keep(files, "ev", "exe", "FAILED", {})  # concluded once: the first stays
    assert [found.root for found in unsent(str(tmp_path))] == [files.root]
    await asyncio.wait_for(deliver(context(tmp_path, reporter), files), 10)
    (report,) = reporter.reports
    assert report.delivery == "ev:exe:COMPLETED"
    assert report.digests == {"/in/a": "0" * 64}
    assert files.reported.exists()
    assert unsent(str(tmp_path)) == []
    assert kept(files) is not None


async def test_a_stopping_worker_leaves_an_unsent_report_for_its_successor(tmp_path: Path) -> None:
    reporter = Flaky(failures=1_000)
    ctx = context(tmp_path, reporter)
    files = SessionFiles.of(tmp_path, "s3")
    files.root.mkdir(parents=True)
    keep(files, "ev", "exe", "FAILED", {"message": "exit 3"})
    ctx.stopping.set()
    await asyncio.wait_for(deliver(ctx, files), 5)
    assert reporter.reports == []
    assert [found.root for found in unsent(str(tmp_path))] == [files.root]


async def test_failed_background_work_is_counted_and_fails_its_component(tmp_path: Path) -> None:
    reporter = Flaky(failures=0)
    ctx = context(tmp_path, reporter)
    body = LaunchBody(
        executable=Delay(meta=Metadata(uuid="exe"), duration="PT1S"),
        compute=SimpleComputeResource(meta=Metadata(uuid="cpu")),
        ends="2099-01-01T00:00:00Z",
    )
    event = Launch.new("s4", component="exe", platform="local", body=body)

    async def watcher() -> None:
        raise RuntimeError("the watcher tripped")

    ctx.spawn(watcher(), about=(event, "exe"))
    while ctx.background:
        await asyncio.gather(*list(ctx.background), return_exceptions=True)
    (report,) = reporter.reports
    assert report.phase == "FAILED"
    assert "the watcher tripped" in (report.message or "")
    assert ctx.failures.count == 1


def test_jitter_keeps_the_upper_half_of_the_delay() -> None:
    delays = [jittered(8.0) for _ in range(200)]
    assert all(4.0 <= delay <= 8.0 for delay in delays)
    assert len(set(delays)) > 1
