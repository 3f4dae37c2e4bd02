"""The srcnet stager driven directly, against the SRCNet stand-in on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer, unused_port

from talicada.events.bus import Delivery
from talicada.events.envelope import (
    AllocateStorage,
    Handle,
    ReleaseData,
    ReleaseDataBody,
    StageBody,
    StageData,
    StorageBody,
)
from talicada.events.report import Report
from talicada.schema.iso8601 import format_instant
from talicada.schema.model import (
    AnyData,
    Metadata,
    SimpleDataResource,
    SkaoBlock,
    SkaoDataResource,
)
from talicada.services import _http
from talicada.services._http import ServiceError
from talicada.settings import Settings, load
from talicada.workers.backends._shared import MemoryLedger
from talicada.workers.backends.srcnet import stager
from talicada.workers.runtime import Handler, Reporter, WorkerContext
from tests.standins.srcnet import Copy, SrcnetStandIn, build_app

NS = "testing"
PLATFORM = "lake"
LEDGER = f"srcnet:{PLATFORM}"
CUBE, OTHER = "eb_001/cube.fits", "other.fits"


class Recorder(Reporter):
    """A reporter that keeps reports instead of sending them."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        self.reports.append(report)

    def of(self, component: str, phase: str) -> list[Report]:
        return [r for r in self.reports if r.component == component and r.phase == phase]


@dataclass
class Rig:
    """The stand-in, its server, a token file, and a way to make workers of it."""

    standin: SrcnetStandIn
    server: TestServer
    token: Path
    ledger: MemoryLedger
    contexts: list[WorkerContext]

    def settings(self, **srcnet: Any) -> Settings:
        table = {
            "url": str(self.server.make_url("/api")),
            "storage_area": "sa-uk-1",
            "site": "UKSRC",
            "token_file": str(self.token),
            "poll_interval": 0.02,
            **srcnet,
        }
        platform = {"name": PLATFORM, "stager": "srcnet", "data": ["skao-data-resource"]}
        return load(environ={}, platforms=[{**platform, "srcnet": table}])

    def worker(self, **srcnet: Any) -> tuple[Handler, Recorder, WorkerContext]:
        """A fresh worker (a restarted one, when called again) sharing the rig's ledger."""
        recorder = Recorder()
        context = WorkerContext(self.settings(**srcnet), recorder, set(), self.ledger)
        self.contexts.append(context)
        return stager(context), recorder, context

    def calls(self, *routes: str) -> list[tuple[str, str, str]]:
        return [(c.route, c.method, c.path) for c in self.standin.calls if c.route in routes]

    def staged(self) -> list[dict[str, Any]]:
        return [json.loads(c.body) for c in self.standin.calls if c.route == "stage"]


async def stop(context: WorkerContext) -> None:
    """Stop a worker as the runtime does, and wait (bounded) for its background work."""
    context.stopping.set()
    async with asyncio.timeout(5):
        while context.background:
            await asyncio.gather(*list(context.background), return_exceptions=True)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    standin = SrcnetStandIn(queued_for=0.02, staging_for=0.02)
    standin.add_object(
        NS, CUBE, [Copy("SPSRC_STORM", "sa-es-1", "SPSRC"), Copy("STFC_CEPH", "sa-uk-2", "UKSRC")]
    )
    standin.add_object(NS, OTHER, [Copy("STFC_STORM", "sa-uk-1", "UKSRC")])
    standin.add_object(NS, "empty.fits", [])
    token = tmp_path / "token"
    token.write_text("srcnet-token\n")
    server = TestServer(build_app(standin))
    await server.start_server()
    rig = Rig(standin, server, token, MemoryLedger(), [])
    yield rig
    for context in rig.contexts:
        await stop(context)
    await server.close()


def skao(uuid: str, name: str, objectname: str) -> SkaoDataResource:
    return SkaoDataResource(
        meta=Metadata(uuid=uuid, name=name), skao=SkaoBlock(namespace=NS, objectname=objectname)
    )


def stage_event(
    component: str, data: AnyData, *, session: str = "s1", hours: float = 1
) -> Delivery:
    until = format_instant(datetime.now(UTC) + timedelta(hours=hours))
    body = StageBody(data=data, storage="st", until=until)
    event = StageData.new(session, component=component, platform=PLATFORM, body=body)
    return Delivery(stream="prepare-data:srcnet", message_id="1-0", event=event, deliveries=1)


def release_event(
    components: list[str], handles: dict[str, Handle], *, normal: bool, session: str = "s1"
) -> Delivery:
    body = ReleaseDataBody(reason="ended", normal=normal, components=components, handles=handles)
    event = ReleaseData.new(session, platform=PLATFORM, body=body)
    return Delivery(stream="prepare-data:srcnet", message_id="2-0", event=event, deliveries=1)


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds; fail the test when it never does."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not so after {within} s")


# -- storage and staging ----------------------------------------------------------------


async def test_storage_is_the_platforms_storage_area(rig: Rig) -> None:
    handle, recorder, _ = rig.worker()
    event = AllocateStorage.new(
        "s1", component="st", platform=PLATFORM, body=StorageBody(storage="st")
    )
    await handle(Delivery("prepare-data:srcnet", "1-0", event, 1))
    [report] = recorder.reports
    assert (report.phase, report.backend, report.outputs) == (
        "AVAILABLE",
        "srcnet",
        {"storage_area": "sa-uk-1"},
    )
    assert rig.standin.calls == []


async def test_two_items_are_staged_through_to_available(rig: Rig) -> None:
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d1", skao("d1", "cube", CUBE)))
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    await until(lambda: len([r for r in recorder.reports if r.phase == "AVAILABLE"]) == 2)

    assert rig.calls("locate", "stage") == [
        ("locate", "GET", f"/api/v1/data/locate/{NS}/{CUBE}"),
        ("stage", "POST", "/api/v1/data/stage"),
        ("locate", "GET", f"/api/v1/data/locate/{NS}/{OTHER}"),
        ("stage", "POST", "/api/v1/data/stage"),
    ]
    first, second = rig.staged()
    assert first["dids"] == [{"namespace": NS, "name": CUBE}]
    assert second["dids"] == [{"namespace": NS, "name": OTHER}]
    assert {first["to_storage_area_uuid"], second["to_storage_area_uuid"]} == {"sa-uk-1"}
    assert 3500 <= first["lifetime"] <= 3600  # until the session's end, an hour from now
    assert "callback_url" not in first
    jobs = [r.handle for r in recorder.reports if r.phase == "PREPARING"]
    assert jobs == list(rig.standin.jobs)
    assert {c[2] for c in rig.calls("status")} == {f"/api/v1/data/stage/{j}" for j in jobs}

    # The cube has no replica in sa-uk-1: the one at the platform's site (UKSRC) is chosen.
    [staging] = recorder.of("d1", "PREPARING")
    assert (staging.backend, staging.outputs) == ("srcnet", {"replica": "STFC_CEPH"})
    [cube], [other] = recorder.of("d1", "AVAILABLE"), recorder.of("d2", "AVAILABLE")
    assert cube.outputs == {"path": f"/staging/sa-uk-1/{NS}/{CUBE}", "replica": "STFC_CEPH"}
    assert other.outputs == {"path": f"/staging/sa-uk-1/{NS}/{OTHER}", "replica": "STFC_STORM"}
    assert cube.message == f"staged {NS}:{CUBE} from STFC_CEPH to {cube.outputs['path']} in sa-uk-1"
    assert await rig.ledger.all(LEDGER) == {}


async def test_a_failing_item_fails_naming_the_item_and_the_reason(rig: Rig) -> None:
    rig.standin.failures[(NS, OTHER)] = "tape library offline"
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d2", skao("d2", "calibrator", OTHER)))
    await until(lambda: bool(recorder.of("d2", "FAILED")))
    [failed] = recorder.of("d2", "FAILED")
    assert failed.message == (
        f"staging {NS}:{OTHER} (calibrator) from STFC_STORM failed: tape library offline"
    )
    assert failed.handle == next(iter(rig.standin.jobs))
    assert await rig.ledger.all(LEDGER) == {}


async def test_what_cannot_be_staged_fails_at_once(rig: Rig) -> None:
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d1", skao("d1", "empty", "empty.fits")))
    await handle(stage_event("d2", skao("d2", "ghost", "ghost.fits")))
    simple = SimpleDataResource(meta=Metadata(uuid="d3"), location="https://example.org/a")
    await handle(stage_event("d3", simple))
    messages = [r.message or "" for r in recorder.reports]
    assert [r.phase for r in recorder.reports] == ["FAILED"] * 3
    assert messages[0] == f"no replica of {NS}:empty.fits (empty) is registered in SRCNet"
    assert messages[1].startswith(
        f"could not stage {NS}:ghost.fits (ghost): srcnet answered HTTP 404"
    )
    assert "data identifier testing:ghost.fits not found" in messages[1]
    assert messages[2].startswith("the srcnet stager stages only skao-data-resource data")
    assert rig.standin.count("stage") == 0


async def test_a_service_that_stays_unavailable_makes_the_event_retried(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "backoff_delay", lambda *args: 0.0)
    rig.standin.add_fault("locate", 503, times=4, body="maintenance")
    handle, recorder, _ = rig.worker()
    delivery = stage_event("d2", skao("d2", "other", OTHER))
    with pytest.raises(ServiceError) as caught:
        await handle(delivery)
    assert (caught.value.status, caught.value.transient) == (503, True)
    assert recorder.reports == []
    await handle(delivery)  # the retry, once the service is back
    await until(lambda: bool(recorder.of("d2", "AVAILABLE")))
    assert rig.standin.count("stage") == 1


async def test_a_job_the_service_forgot_fails_the_item(rig: Rig) -> None:
    rig.standin.staging_for = 30
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    [job] = rig.standin.jobs
    rig.standin._forget(job)  # expired, or removed behind our back
    await until(lambda: bool(recorder.of("d2", "FAILED")))
    assert f"no longer knows staging job {job}" in (recorder.of("d2", "FAILED")[0].message or "")


# -- redelivery, restart, release ----------------------------------------------------------


async def test_a_redelivered_stage_does_not_stage_twice(rig: Rig) -> None:
    rig.standin.staging_for = 30
    handle, recorder, _ = rig.worker()
    delivery = stage_event("d2", skao("d2", "other", OTHER))
    await handle(delivery)
    await handle(delivery)
    assert rig.standin.count("stage") == 1
    first, again = recorder.of("d2", "PREPARING")
    assert first.delivery == again.delivery  # the broker applies it once
    assert first.handle == again.handle == next(iter(rig.standin.jobs))


async def test_a_restarted_worker_resumes_following_and_reports_the_end(rig: Rig) -> None:
    rig.standin.staging_for = 0.3
    handle, first, context = rig.worker()
    delivery = stage_event("d2", skao("d2", "other", OTHER))
    await handle(delivery)
    await stop(context)  # the worker goes before the job ends
    assert first.of("d2", "AVAILABLE") == []
    assert list(await rig.ledger.all(LEDGER)) == list(rig.standin.jobs)

    _, second, _ = rig.worker()  # a new worker: nothing handed to it but the ledger
    await until(lambda: bool(second.of("d2", "AVAILABLE")))
    [done] = second.of("d2", "AVAILABLE")
    assert done.delivery.startswith(f"{delivery.event.id}:d2:")
    assert done.outputs == {"path": f"/staging/sa-uk-1/{NS}/{OTHER}", "replica": "STFC_STORM"}
    assert rig.standin.count("stage") == 1
    assert await rig.ledger.all(LEDGER) == {}


async def test_release_ends_the_jobs_and_reports_every_component(rig: Rig) -> None:
    rig.standin.staging_for = 30
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    [staging] = recorder.of("d2", "PREPARING")
    handles = {"d2": Handle(backend="srcnet", id=staging.handle), "st": Handle(backend="srcnet")}
    await handle(release_event(["d2", "st"], handles, normal=False))
    assert rig.standin.released == [staging.handle]
    assert [(r.component, r.phase) for r in recorder.reports[1:]] == [
        ("d2", "CANCELLED"),
        ("st", "CANCELLED"),
    ]
    assert recorder.reports[1].message == f"staging job {staging.handle} released"
    assert await rig.ledger.all(LEDGER) == {}
    await asyncio.sleep(0.05)  # a look begun before the release may still land
    polls = rig.standin.count("status")
    await asyncio.sleep(0.1)  # five poll intervals: the released job is not followed
    assert rig.standin.count("status") == polls
    assert len(recorder.reports) == 3  # and its end is the release's alone to report


async def test_release_without_cancel_lets_the_lifetime_lapse(rig: Rig) -> None:
    rig.standin.staging_for = 30
    rig.standin.cancel_supported = False
    handle, recorder, _ = rig.worker()
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    [job] = rig.standin.jobs
    # The broker had not recorded the handle yet: the ledger alone names the job.
    await handle(release_event(["d2"], {}, normal=True))
    assert rig.calls("release") == [("release", "DELETE", f"/api/v1/data/stage/{job}")]
    assert rig.standin.released == []
    [done] = recorder.of("d2", "COMPLETED")
    assert (
        done.message == f"staging job {job} cannot be cancelled: its copy lapses with its lifetime"
    )
    assert await rig.ledger.all(LEDGER) == {}


# -- callbacks ----------------------------------------------------------------------------


async def test_with_callbacks_the_ends_come_by_callback_and_nothing_polls(rig: Rig) -> None:
    port = unused_port()
    url = f"http://127.0.0.1:{port}/callbacks/srcnet"
    handle, recorder, _ = rig.worker(callback_listen=f"127.0.0.1:{port}", callback_url=url)
    await handle(stage_event("d1", skao("d1", "cube", CUBE)))
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    await until(lambda: len([r for r in recorder.reports if r.phase == "AVAILABLE"]) == 2)
    assert rig.standin.count("status") == 0
    assert [r["url"] for r in rig.standin.registrations.values()] == [url]
    assert [body["callback_url"] for body in rig.staged()] == [url, url]
    [cube] = recorder.of("d1", "AVAILABLE")
    assert cube.outputs == {"path": f"/staging/sa-uk-1/{NS}/{CUBE}", "replica": "STFC_CEPH"}
    await rig.standin.settled()
    assert {d.status for d in rig.standin.deliveries} == {204}  # every callback taken


async def test_a_service_without_callbacks_is_polled(rig: Rig) -> None:
    rig.standin.callbacks_enabled = False
    port = unused_port()
    url = f"http://127.0.0.1:{port}/callbacks/srcnet"
    handle, recorder, _ = rig.worker(callback_listen=f"127.0.0.1:{port}", callback_url=url)
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    await until(lambda: bool(recorder.of("d2", "AVAILABLE")))
    assert rig.standin.count("status") >= 1
    assert "callback_url" not in rig.staged()[0]


class SlowLedger(MemoryLedger):
    """A ledger that takes its time to remember, as a busy Redis might."""

    async def put(self, name: str, key: str, value: bytes) -> None:
        await asyncio.sleep(0.2)
        await super().put(name, key, value)


async def test_a_callback_that_beats_the_ledger_is_kept_for_its_job(rig: Rig) -> None:
    # The job ends (and its callback lands) while its record is still being written.
    rig.ledger = SlowLedger()
    port = unused_port()
    url = f"http://127.0.0.1:{port}/callbacks/srcnet"
    handle, recorder, _ = rig.worker(callback_listen=f"127.0.0.1:{port}", callback_url=url)
    await handle(stage_event("d2", skao("d2", "other", OTHER)))
    await until(lambda: bool(recorder.of("d2", "AVAILABLE")))
    assert [d.payload["status"] for d in rig.standin.deliveries] == ["queued", "staging", "done"]
    assert rig.standin.count("status") == 0
    assert [r.phase for r in recorder.reports] == ["PREPARING", "AVAILABLE"]
