"""The Harbor client against its stand-in on loopback, and image locations taken apart."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from talicada.services._http import ServiceError, TokenFile
from talicada.services.harbor import (
    MANIFEST_TYPES,
    DigestMismatch,
    HarborClient,
    ImageNotFound,
    ImageRef,
    parse_image,
)
from tests.standins.harbor import HarborStandIn, build_app

DIGEST = "sha256:" + "1f" * 32
OTHER = "sha256:" + "2e" * 32
UPSTREAM = "images.canfar.net/skaha/base-notebook:latest"
ARTIFACTS = "/api/v2.0/projects/proxy/repositories/skaha%2Fbase-notebook/artifacts"


@dataclass
class Rig:
    """A stand-in, its server and a client of it."""

    standin: HarborStandIn
    server: TestServer
    client: HarborClient

    def calls(self) -> list[tuple[str, str]]:
        """``(route, path)`` of every call received."""
        return [(call.route, call.path) for call in self.standin.calls]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    standin = HarborStandIn(cache_delay=0.05)
    standin.add_upstream("skaha/base-notebook", DIGEST, 734_003_200, ["latest", "24.04"])
    secret = tmp_path / "robot-secret"
    secret.write_text("robot-secret\n")
    server = TestServer(build_app(standin))
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        client = HarborClient(
            str(server.make_url("/")),
            http,
            username="robot$talicada",
            secret=TokenFile(secret),
            attempts=3,
            base=0.001,
            sleep=asyncio.sleep,
        )
        yield Rig(standin, server, client)
    await server.close()


# -- image locations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (UPSTREAM, ImageRef("images.canfar.net", "skaha", "base-notebook", "latest")),
        (
            "images.canfar.net/skaha/base-notebook",
            ImageRef("images.canfar.net", "skaha", "base-notebook", "latest"),
        ),
        (
            f"harbor.example:8443/proj/a/b/c@{DIGEST}",
            ImageRef("harbor.example:8443", "proj", "a/b/c", DIGEST),
        ),
        (
            f"localhost/proj/tool:1.2.3@{DIGEST}",
            ImageRef("localhost", "proj", "tool", DIGEST),
        ),
        ("docker.io/python:3.12-slim", ImageRef("docker.io", "library", "python", "3.12-slim")),
    ],
)
def test_image_locations_are_taken_apart(location: str, expected: ImageRef) -> None:
    assert parse_image(location) == expected


def test_a_parsed_location_knows_its_path_and_reference_kind() -> None:
    ref = parse_image(f"h.example/p/a/b@{DIGEST}")
    assert ref.path == "p/a/b"
    assert ref.is_digest
    assert not parse_image("h.example/p/a:v1").is_digest


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("skaha/base-notebook:latest", "starts with a registry host"),
        ("images.canfar.net/base-notebook", "expected registry/project/repository"),
        ("images.canfar.net/skaha/base-notebook@sha256:short", "is not a digest"),
        ("images.canfar.net/skaha/base-notebook:bad tag", "is not a tag"),
        ("images.canfar.net/Skaha/Notebook", "expected registry/project/repository"),
    ],
)
def test_malformed_locations_are_refused(location: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_image(location)


# -- the artifact API --------------------------------------------------------------------------


async def test_a_present_artifact_is_read_with_a_double_encoded_name(rig: Rig) -> None:
    rig.standin.add_artifact("proxy", "skaha/base-notebook", DIGEST, 123, ["latest", "v2"])
    found = await rig.client.artifact("proxy", "skaha/base-notebook", "latest")
    assert found is not None
    assert (found.digest, found.size, found.tags) == (DIGEST, 123, ("latest", "v2"))
    assert (found.project, found.repository) == ("proxy", "skaha/base-notebook")
    assert rig.calls() == [("artifact", f"{ARTIFACTS}/latest")]


async def test_an_absent_artifact_is_none(rig: Rig) -> None:
    assert await rig.client.artifact("skaha", "nothing", "latest") is None
    assert rig.standin.count("artifact") == 1


async def test_transient_failures_are_retried_and_bad_credentials_are_not(rig: Rig) -> None:
    rig.standin.add_artifact("skaha", "terminal", DIGEST, 1)
    rig.standin.add_fault("artifact", 503, times=2)
    found = await rig.client.artifact("skaha", "terminal", "latest")
    assert found is not None
    assert rig.standin.count("artifact") == 3
    assert rig.client.secret is not None
    rig.client.secret.path.write_text("rotated-elsewhere")
    with pytest.raises(ServiceError) as caught:
        await rig.client.artifact("skaha", "terminal", "latest")
    assert caught.value.status == 401
    assert "unauthorized" in caught.value.reason
    assert rig.standin.count("artifact") == 4


# -- ensure: present, pulled through, mismatched, missing ---------------------------------


async def test_ensure_returns_a_present_image_without_pulling(rig: Rig) -> None:
    rig.standin.add_artifact("proxy", "skaha/base-notebook", DIGEST, 99)
    found = await rig.client.ensure(UPSTREAM, proxy_project="proxy", expected_digest=DIGEST)
    assert found.digest == DIGEST
    assert rig.calls() == [("artifact", f"{ARTIFACTS}/latest")]


async def test_ensure_pulls_an_absent_image_through_and_waits_for_it(rig: Rig) -> None:
    found = await rig.client.ensure(UPSTREAM, proxy_project="proxy", wait=5, poll=0.01)
    assert (found.digest, found.size) == (DIGEST, 734_003_200)
    calls = rig.calls()
    assert calls[:2] == [
        ("artifact", f"{ARTIFACTS}/latest"),
        ("manifest", "/v2/proxy/skaha/base-notebook/manifests/latest"),
    ]
    # Then polls by the pulled digest until Harbor lists the artifact (after its delay).
    assert len(calls) > 3
    assert set(calls[2:]) == {("artifact", f"{ARTIFACTS}/{DIGEST}")}
    assert [a.split(", ") for a in rig.standin.accepts] == [list(MANIFEST_TYPES)]


async def test_ensure_by_digest_location(rig: Rig) -> None:
    location = f"images.canfar.net/skaha/base-notebook@{DIGEST}"
    found = await rig.client.ensure(location, proxy_project="proxy", wait=5, poll=0.01)
    assert found.digest == DIGEST
    assert rig.calls()[1] == ("manifest", f"/v2/proxy/skaha/base-notebook/manifests/{DIGEST}")


async def test_a_wrong_digest_from_harbor_is_a_mismatch_naming_both(rig: Rig) -> None:
    rig.standin.add_artifact("proxy", "skaha/base-notebook", DIGEST, 99)
    rig.standin.wrong_digest = True
    with pytest.raises(DigestMismatch) as caught:
        await rig.client.ensure(UPSTREAM, proxy_project="proxy", expected_digest=DIGEST)
    assert caught.value.expected == DIGEST
    assert caught.value.actual not in (DIGEST, "")
    assert DIGEST in str(caught.value)
    assert caught.value.actual in str(caught.value)


async def test_an_upstream_digest_other_than_expected_fails_before_waiting(rig: Rig) -> None:
    with pytest.raises(DigestMismatch) as caught:
        await rig.client.ensure(UPSTREAM, proxy_project="proxy", expected_digest=OTHER)
    assert (caught.value.expected, caught.value.actual) == (OTHER, DIGEST)
    assert [route for route, _ in rig.calls()] == ["artifact", "manifest"]


async def test_an_image_upstream_lacks_is_not_found(rig: Rig) -> None:
    with pytest.raises(ImageNotFound, match="manifest unknown"):
        await rig.client.ensure("images.canfar.net/skaha/nothing:1.0", proxy_project="proxy")
    assert rig.calls() == [
        ("artifact", "/api/v2.0/projects/proxy/repositories/skaha%2Fnothing/artifacts/1.0"),
        ("manifest", "/v2/proxy/skaha/nothing/manifests/1.0"),
    ]


async def test_without_a_proxy_project_an_absent_image_is_not_found(rig: Rig) -> None:
    with pytest.raises(ImageNotFound, match="skaha/base-notebook is not in Harbor"):
        await rig.client.ensure(UPSTREAM, proxy_project=None)
    assert rig.calls() == [
        ("artifact", "/api/v2.0/projects/skaha/repositories/base-notebook/artifacts/latest")
    ]


async def test_a_pulled_image_never_listed_is_not_found_after_the_wait(rig: Rig) -> None:
    rig.standin.cache_delay = 60
    with pytest.raises(ImageNotFound, match=r"not listed after 0\.05 s"):
        await rig.client.ensure(UPSTREAM, proxy_project="proxy", wait=0.05, poll=0.01)
    assert rig.standin.count("artifact") == 1 + 5


async def test_a_registry_bearer_challenge_is_answered_with_a_pull_token(rig: Rig) -> None:
    rig.standin.token_auth = True
    assert await rig.client.pull_through("proxy", "skaha/base-notebook", "24.04") == DIGEST
    assert [route for route, _ in rig.calls()] == ["manifest", "token", "manifest"]
    assert rig.standin.calls[1].query == {
        "scope": ["repository:proxy/skaha/base-notebook:pull"],
        "service": ["harbor-registry"],
    }
