"""The harbor image cache driven directly, against the Harbor stand-in on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from talicada.events.bus import Delivery
from talicada.events.envelope import CacheImage, ImageBody
from talicada.events.report import Report
from talicada.schema.model import (
    AnyExecutable,
    Delay,
    DockerContainer,
    DockerImage,
    FailBlock,
    JupyterNotebook,
    Metadata,
)
from talicada.services import _http
from talicada.services._http import ServiceError
from talicada.settings import load
from talicada.workers.backends.harbor import image_cache
from talicada.workers.runtime import Handler, Reporter, WorkerContext
from tests.standins.harbor import HarborStandIn, build_app

DIGEST = "sha256:" + "1f" * 32
OTHER = "sha256:" + "2e" * 32
UPSTREAM = "images.canfar.net/skaha/base-notebook:latest"
ARTIFACTS = "/api/v2.0/projects/proxy/repositories/skaha%2Fbase-notebook/artifacts"


class Recorder(Reporter):
    """A reporter that keeps reports instead of sending them."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        self.reports.append(report)


@dataclass
class Rig:
    """The stand-in, its server, and a worker using it."""

    standin: HarborStandIn
    server: TestServer
    handle: Handler
    recorder: Recorder
    context: WorkerContext

    @property
    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def calls(self) -> list[tuple[str, str]]:
        return [(call.route, call.path) for call in self.standin.calls]

    async def cache(self, executable: AnyExecutable) -> Report:
        """Handle one image.cache of ``executable``; the one report it made."""
        event = CacheImage.new(
            "s1", component="exe", platform="site", body=ImageBody(executable=executable)
        )
        await self.handle(Delivery("image-cache:harbor", "1-0", event, 1))
        [report] = self.recorder.reports
        return report


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    standin = HarborStandIn(cache_delay=0.05)
    secret = tmp_path / "robot-secret"
    secret.write_text("robot-secret\n")
    server = TestServer(build_app(standin))
    await server.start_server()
    harbor = {
        "url": str(server.make_url("/")),
        "proxy_project": "proxy",
        "username": "robot$talicada",
        "secret_file": str(secret),
        "pull_timeout": 5,
        "poll": 0.01,
    }
    platform = {"name": "site", "image_cache": "harbor", "harbor": harbor}
    settings = load(environ={}, platforms=[platform])
    recorder = Recorder()
    context = WorkerContext(settings, recorder, set())
    yield Rig(standin, server, image_cache(context), recorder, context)
    context.stopping.set()
    await asyncio.wait_for(asyncio.gather(*list(context.background)), timeout=5)
    await server.close()


def container(location: str = UPSTREAM, digest: str | None = None) -> DockerContainer:
    image = DockerImage(locations=[location], digest=digest)
    return DockerContainer(meta=Metadata(uuid="exe"), image=image)


async def test_an_image_already_cached_is_available_with_digest_and_size(rig: Rig) -> None:
    rig.standin.add_artifact("proxy", "skaha/base-notebook", DIGEST, 734_003_200)
    report = await rig.cache(container(digest=DIGEST))
    assert (report.phase, report.backend) == ("AVAILABLE", "harbor")
    cached = f"{rig.host}/proxy/skaha/base-notebook@{DIGEST}"
    assert report.outputs == {
        "digest": DIGEST,
        "size": "734003200",
        "image": cached,
        "cached": "yes",
    }
    assert report.message == f"image {UPSTREAM} cached through proxy as {cached}, digest {DIGEST}"
    assert rig.calls() == [("artifact", f"{ARTIFACTS}/latest")]


async def test_an_absent_image_is_pulled_through_the_proxy_then_available(rig: Rig) -> None:
    rig.standin.add_upstream("skaha/base-notebook", DIGEST, 1234)
    report = await rig.cache(container(digest="0000"))  # a placeholder digest is not checked
    assert report.phase == "AVAILABLE"
    assert report.outputs is not None
    assert (report.outputs["digest"], report.outputs["size"]) == (DIGEST, "1234")
    assert report.outputs["cached"] == "no"  # the history tells a pull from a hit
    calls = rig.calls()
    assert calls[:2] == [
        ("artifact", f"{ARTIFACTS}/latest"),
        ("manifest", "/v2/proxy/skaha/base-notebook/manifests/latest"),
    ]
    assert set(calls[2:]) == {("artifact", f"{ARTIFACTS}/{DIGEST}")}  # waiting for the listing


async def test_an_image_in_harbor_itself_is_checked_in_place(rig: Rig) -> None:
    rig.standin.add_artifact("skaha", "terminal", DIGEST, 42, ["1.1"])
    report = await rig.cache(container(f"{rig.host}/skaha/terminal:1.1"))
    assert report.phase == "AVAILABLE"
    assert report.outputs == {
        "digest": DIGEST,
        "size": "42",
        "image": f"{rig.host}/skaha/terminal@{DIGEST}",
        "cached": "yes",
    }
    assert rig.calls() == [
        ("artifact", "/api/v2.0/projects/skaha/repositories/terminal/artifacts/1.1")
    ]


async def test_a_wrong_digest_fails_naming_both_digests(rig: Rig) -> None:
    rig.standin.add_upstream("skaha/base-notebook", DIGEST, 1234)
    report = await rig.cache(container(digest=OTHER))
    assert report.phase == "FAILED"
    assert report.message == f"image {UPSTREAM} has digest {DIGEST}, expected {OTHER}"
    assert [route for route, _ in rig.calls()] == ["artifact", "manifest"]


async def test_a_missing_image_fails_saying_so(rig: Rig) -> None:
    report = await rig.cache(container("images.canfar.net/skaha/nothing:1.0"))
    assert report.phase == "FAILED"
    assert (report.message or "").startswith("image images.canfar.net/skaha/nothing:1.0 not found")
    assert "upstream has no manifest" in (report.message or "")
    assert "manifest unknown: skaha/nothing:1.0" in (report.message or "")


async def test_an_unreadable_location_fails_without_asking_harbor(rig: Rig) -> None:
    report = await rig.cache(container("skaha/base-notebook:latest"))
    assert report.phase == "FAILED"
    assert "starts with a registry host" in (report.message or "")
    assert rig.calls() == []


async def test_a_harbor_that_stays_down_makes_the_event_retried(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "backoff_delay", lambda *args: 0.0)
    rig.standin.add_fault("artifact", 503, times=4, body="maintenance")
    with pytest.raises(ServiceError) as caught:
        await rig.cache(container())
    assert (caught.value.status, caught.value.transient) == (503, True)
    assert rig.recorder.reports == []
    assert rig.standin.count("artifact") == 4


async def test_executables_without_an_image_are_available_at_once(rig: Rig) -> None:
    notebook = JupyterNotebook(meta=Metadata(uuid="exe"), location="https://example.org/nb")
    report = await rig.cache(notebook)
    assert report.phase == "AVAILABLE"
    assert rig.calls() == []


async def test_a_test_tasks_injected_preparing_failure_fails_it(rig: Rig) -> None:
    fail = FailBlock(phase="PREPARING", message="image went missing")
    task = Delay(meta=Metadata(uuid="exe"), fail=fail)
    event = CacheImage.new("s1", component="exe", platform="site", body=ImageBody(executable=task))
    await rig.handle(Delivery("image-cache:harbor", "1-0", event, 1))
    # It fails after its ``after`` (none here), in the background.
    await asyncio.wait_for(asyncio.gather(*list(rig.context.background)), timeout=5)
    [report] = rig.recorder.reports
    assert (report.phase, report.message) == ("FAILED", "image went missing")
    assert rig.calls() == []
