"""The SRCNet data-management client against its stand-in on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from talicada.services._http import ServiceError, TokenFile
from talicada.services.callbacks import CallbackError, decode_callback, verify_callback
from talicada.services.srcnet import Replica, SrcnetClient, Staging, nearest, state_of
from tests.standins.srcnet import Copy, SrcnetStandIn, build_app

NS = "testing"


@dataclass
class Rig:
    """A stand-in, its server, and a client of it whose retries do not wait."""

    standin: SrcnetStandIn
    server: TestServer
    client: SrcnetClient
    waits: list[float] = field(default_factory=list)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    standin = SrcnetStandIn(token="s3cret-token", queued_for=0.02, staging_for=0.02)
    standin.add_object(
        NS,
        "eb_001/cube.fits",
        [
            Copy("STFC_STORM", "sa-uk-1", "UKSRC"),
            Copy("SPSRC_STORM", "sa-es-1", "SPSRC"),
            Copy("CHSRC_DCACHE", "sa-ch-1", "CHSRC"),
        ],
        size=4096,
        checksum="adler32:0badcafe",
    )
    standin.add_object(NS, "other.fits", [Copy("STFC_STORM", "sa-uk-1", "UKSRC")])
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    server = TestServer(build_app(standin))
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        client = SrcnetClient(
            str(server.make_url("/api")), TokenFile(token), http, attempts=3, sleep=no_wait
        )
        yield Rig(standin, server, client, waits)
    await server.close()


async def until_final(client: SrcnetClient, job_id: str) -> tuple[Staging, list[str]]:
    """Poll until the job is done or failed; the last status and the job states seen."""
    seen: list[str] = []
    async with asyncio.timeout(5):
        while True:
            staging = await client.status(job_id)
            if not seen or seen[-1] != staging.state:
                seen.append(staging.state)
            if staging.final:
                return staging, seen
            await asyncio.sleep(0.005)


# -- nearest (pure) -------------------------------------------------------------

UK = Replica(rse="STFC_STORM", storage_area="sa-uk-1", site="UKSRC")
UK2 = Replica(rse="STFC_CEPH", storage_area="sa-uk-2")
ES = Replica(rse="SPSRC_STORM", storage_area="sa-es-1", site="SPSRC")
CH = Replica(rse="CHSRC_DCACHE", storage_area="sa-ch-1", site="CHSRC")


def test_nearest_prefers_the_platforms_own_storage_area() -> None:
    assert nearest([UK, ES, CH], "sa-es-1") is ES


def test_nearest_then_the_same_site_by_table_or_by_the_replicas_own_site() -> None:
    # The platform's area sa-uk-9 has no replica; its site UKSRC has two.
    assert nearest([ES, UK2, UK], "sa-uk-9", {"sa-uk-9": "UKSRC", "sa-uk-2": "UKSRC"}) is UK2
    assert nearest([ES, UK], "sa-uk-9", {"sa-uk-9": "UKSRC"}) is UK


def test_nearest_then_the_preference_order_by_site_area_or_rse() -> None:
    assert nearest([UK, ES, CH], "sa-xx", prefer=["CHSRC", "SPSRC"]) is CH
    assert nearest([UK, ES, CH], "sa-xx", prefer=["nowhere", "sa-es-1"]) is ES
    assert nearest([UK, ES, CH], "sa-xx", prefer=["CHSRC_DCACHE"]) is CH


def test_nearest_else_the_first_and_never_from_nothing() -> None:
    assert nearest([CH, UK], "sa-xx", {"sa-xx": "ELSEWHERE"}, prefer=["none"]) is CH
    with pytest.raises(ValueError, match="no replica"):
        nearest([], "sa-uk-1")


def test_service_state_names_map_onto_ours() -> None:
    assert [state_of(s) for s in ("OK", "REPLICATING", "Waiting", "SUSPENDED", "odd")] == [
        "done",
        "staging",
        "queued",
        "failed",
        "staging",
    ]


# -- against the stand-in ---------------------------------------------------------


async def test_locate_lists_every_replica_and_nearest_picks_one(rig: Rig) -> None:
    replicas = await rig.client.locate(NS, "eb_001/cube.fits")
    assert [(r.rse, r.storage_area, r.site) for r in replicas] == [
        ("STFC_STORM", "sa-uk-1", "UKSRC"),
        ("SPSRC_STORM", "sa-es-1", "SPSRC"),
        ("CHSRC_DCACHE", "sa-ch-1", "CHSRC"),
    ]
    assert replicas[0].size == 4096
    assert replicas[0].checksum == "adler32:0badcafe"
    assert replicas[1].urls == ("davs://spsrc_storm.example/eb_001/cube.fits",)
    assert nearest(replicas, "sa-ch-1").rse == "CHSRC_DCACHE"
    [call] = rig.standin.calls
    assert (call.route, call.method, call.path) == (
        "locate",
        "GET",
        "/api/v1/data/locate/testing/eb_001/cube.fits",
    )


async def test_stage_moves_queued_staging_done_with_paths(rig: Rig) -> None:
    items = [(NS, "eb_001/cube.fits"), (NS, "other.fits")]
    job_id = await rig.client.stage(items, storage_area="sa-uk-1", lifetime_seconds=3600)
    staging, seen = await until_final(rig.client, job_id)
    assert seen == ["queued", "staging", "done"]
    assert staging.storage_area == "sa-uk-1"
    assert staging.expires is not None
    assert staging.paths() == {
        (NS, "eb_001/cube.fits"): "/staging/sa-uk-1/testing/eb_001/cube.fits",
        (NS, "other.fits"): "/staging/sa-uk-1/testing/other.fits",
    }
    sent = json.loads(rig.standin.calls[0].body)
    assert sent["to_storage_area_uuid"] == "sa-uk-1"
    assert sent["lifetime"] == 3600
    assert sent["dids"] == [{"namespace": NS, "name": n} for _, n in items]


async def test_a_failing_item_fails_the_job_and_says_why(rig: Rig) -> None:
    rig.standin.failures[(NS, "other.fits")] = "tape library offline"
    job_id = await rig.client.stage(
        [(NS, "eb_001/cube.fits"), (NS, "other.fits")], storage_area="sa-es-1", lifetime_seconds=60
    )
    staging, _ = await until_final(rig.client, job_id)
    assert staging.state == "failed"
    good, bad = staging.items
    assert (good.state, good.path, good.reason) == (
        "done",
        "/staging/sa-es-1/testing/eb_001/cube.fits",
        None,
    )
    assert (bad.state, bad.path, bad.reason) == ("failed", None, "tape library offline")


async def test_release_is_recorded_and_the_job_is_gone(rig: Rig) -> None:
    job_id = await rig.client.stage(
        [(NS, "other.fits")], storage_area="sa-uk-1", lifetime_seconds=60
    )
    assert await rig.client.release(job_id) is True
    assert rig.standin.released == [job_id]
    assert (rig.standin.calls[-1].method, rig.standin.calls[-1].path) == (
        "DELETE",
        f"/api/v1/data/stage/{job_id}",
    )
    with pytest.raises(ServiceError) as caught:
        await rig.client.status(job_id)
    assert caught.value.status == 404


async def test_release_without_cancel_says_the_lifetime_will_lapse(rig: Rig) -> None:
    rig.standin.cancel_supported = False
    job_id = await rig.client.stage(
        [(NS, "other.fits")], storage_area="sa-uk-1", lifetime_seconds=60
    )
    assert await rig.client.release(job_id) is False
    assert rig.standin.released == []
    assert job_id in rig.standin.jobs


async def test_transient_503s_are_retried_with_backoff(rig: Rig) -> None:
    rig.standin.add_fault("locate", 503, times=2)
    replicas = await rig.client.locate(NS, "other.fits")
    assert [r.rse for r in replicas] == ["STFC_STORM"]
    assert rig.standin.count("locate") == 3
    assert len(rig.waits) == 2


async def test_503s_past_the_attempts_are_a_transient_service_error(rig: Rig) -> None:
    rig.standin.add_fault("status", 503, times=3, body="maintenance")
    with pytest.raises(ServiceError) as caught:
        await rig.client.status("whatever")
    assert (caught.value.status, caught.value.transient) == (503, True)
    assert caught.value.reason == "maintenance"
    assert rig.standin.count("status") == 3


async def test_a_4xx_is_not_retried_and_carries_the_services_message(rig: Rig) -> None:
    with pytest.raises(ServiceError) as caught:
        await rig.client.locate(NS, "missing.fits")
    assert caught.value.status == 404
    assert not caught.value.transient
    assert "data identifier testing:missing.fits not found" in caught.value.reason
    assert rig.standin.count("locate") == 1
    assert rig.waits == []


async def test_a_wrong_token_is_refused(rig: Rig, tmp_path: Path) -> None:
    assert rig.client.token is not None
    rig.client.token.path.write_text("stale")
    with pytest.raises(ServiceError) as caught:
        await rig.client.locate(NS, "other.fits")
    assert caught.value.status == 401
    assert "bearer token" in caught.value.reason


async def test_a_retried_stage_request_finds_the_job_it_made(rig: Rig) -> None:
    body = {
        "to_storage_area_uuid": "sa-uk-1",
        "dids": [{"namespace": NS, "name": "other.fits"}],
        "lifetime": 60,
        "client_request_id": "same-each-time",
    }
    headers = {"Authorization": "Bearer s3cret-token"}
    async with aiohttp.ClientSession() as http:
        ids = []
        for _ in range(2):
            url = rig.server.make_url("/api/v1/data/stage")
            async with http.post(url, json=body, headers=headers) as answer:
                ids.append((await answer.json())["job_id"])
    assert ids[0] == ids[1]
    assert list(rig.standin.jobs) == [ids[0]]


# -- callbacks ------------------------------------------------------------------------


async def test_callbacks_off_is_a_404_and_reads_as_unsupported(rig: Rig) -> None:
    rig.standin.callbacks_enabled = False
    assert await rig.client.callbacks_supported() is False


async def test_a_registered_callback_gets_every_change_signed_and_retried(rig: Rig) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        # The first delivery fails, so the stand-in must retry it.
        return web.Response(status=500 if len(received) == 1 else 204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with TestServer(receiver) as hooks:
        assert await rig.client.callbacks_supported() is True
        await rig.client.register_callback(str(hooks.make_url("/hook")), "hush")
        assert rig.standin.registrations == {
            "s3cret-token": {"url": str(hooks.make_url("/hook")), "secret": "hush"}
        }
        job_id = await rig.client.stage(
            [(NS, "other.fits")], storage_area="sa-uk-1", lifetime_seconds=60
        )
        await rig.standin.settled()

    assert [d.status for d in rig.standin.deliveries] == [500, 204, 204, 204]
    payloads = []
    for body, headers in received:
        verify_callback(b"hush", headers, body, time.time())  # raises unless signed and fresh
        event = decode_callback(body)
        assert (event.service, event.id) == ("srcnet", job_id)
        payloads.append(json.loads(body))
    with pytest.raises(CallbackError, match="does not match"):
        verify_callback(b"other secret", received[-1][1], received[-1][0], time.time())
    changes = [(p["status"], p["previous"]) for p in payloads[1:]]
    assert changes == [("queued", None), ("staging", "queued"), ("done", "staging")]
    assert {p["service"] for p in payloads} == {"srcnet"}
    assert {p["id"] for p in payloads} == {job_id}
    assert payloads[-1]["details"]["items"][0]["path"] == "/staging/sa-uk-1/testing/other.fits"
    assert payloads[-1]["time"].endswith("Z")

    await rig.client.unregister_callback()
    assert rig.standin.registrations == {}
