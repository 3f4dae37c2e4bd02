"""Sessions launched on Skaha (its stand-in) through the broker and the skaha back end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.conftest import BrokerFactory
from tests.lifecycle_support import accept_first, wait_for_phase
from tests.platform_support import canfar
from tests.standins.skaha import DEFAULT_TOKEN, PENDING_REASON, SkahaState, create_app

TERMINAL = "images.canfar.net/skaha/terminal:1.1.1"


@pytest_asyncio.fixture
async def skaha() -> AsyncIterator[tuple[SkahaState, str]]:
    """A Skaha stand-in with quick sessions, and its URL."""
    state = SkahaState(start_delay=0.2, run_seconds=0.5, terminate_delay=0.1)
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/skaha"))
    await server.close()


def headless(cores: dict[str, int] | None = None, **executable: Any) -> dict[str, Any]:
    """A request for a headless container on Skaha."""
    return {
        "executable": {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
            "image": {"locations": [TERMINAL]},
            "entrypoint": "/bin/echo",
            "command": ["hello", "from", "skaha"],
            **executable,
        },
        "compute": {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/simple-compute-resource-1.0",
            "cores": cores or {"min": 1, "max": 2},
        },
        "schedule": {"requested": {"duration": "PT10M"}},
    }


async def test_a_headless_container_runs_to_completed_with_its_logs(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    client = await start_broker(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    uuid = await accept_first(client, headless())
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    # Then the container's logs are in the record
    assert "/bin/echo hello from skaha" in log["output"]["stdout"]
    # and Skaha ran exactly one headless session for it, with the offer's legal size
    (created,) = [call for call in state.calls if call.route == "create"]
    assert created.query["type"] == ["headless"]
    assert created.query["cores"] == ["2"]
    phases = [step["to"] for step in log["history"] if "component" not in step]
    assert phases[-3:] == ["RUNNING", "RELEASING", "COMPLETED"]
    # and Skaha's scheduling events too
    assert "Started container headless" in log["platform"]["skaha-events"]


async def test_offers_propose_only_sizes_skaha_accepts(
    make_client: Any, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    _, url = skaha  # legal cores 1, 2, 4, 8, 16 and RAM 1 … 64 GiB
    client = await make_client(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    request = headless(cores={"min": 3, "max": 7})
    request["compute"]["memory"] = {"min": 3, "max": 12}
    body = await (await client.post("/requests", json=request)).json()
    assert body["result"] == "YES", body
    for offer in body["offers"]:
        assert offer["compute"]["cores"] == {"min": 4, "max": 4}
        assert offer["compute"]["memory"] == {"min": 8, "max": 8}
    # and a range holding no legal size is refused, saying which sizes are legal
    request = headless(cores={"min": 5, "max": 7})
    body = await (await client.post("/requests", json=request)).json()
    assert body["result"] == "NO"
    assert "[1, 2, 4, 8, 16]" in body["meta"]["messages"][0]["message"]


async def test_an_image_skaha_does_not_list_is_refused_at_offer_time(
    make_client: Any, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    _, url = skaha
    client = await make_client(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    request = headless(image={"locations": ["images.canfar.net/nowhere/nothing:1"]})
    body = await (await client.post("/requests", json=request)).json()
    assert body["result"] == "NO"
    assert "no image images.canfar.net/nowhere/nothing:1" in body["meta"]["messages"][0]["message"]


async def test_a_session_stuck_pending_fails_with_skahas_reason_and_frees_its_capacity(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.stuck_pending = True
    platform = canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN, cores=2, memory=8)
    client = await start_broker(platforms=[platform])
    whole = headless(cores={"min": 2, "max": 2})
    uuid = await accept_first(client, whole)
    # When Skaha never schedules it
    assert await wait_for_phase(client, uuid, {"FAILED", "COMPLETED"}, limit=30) == "FAILED"
    session = await (await client.get(f"/sessions/{uuid}")).json()
    reasons = [m["message"] for m in session["executable"]["meta"]["messages"]]
    # Then it failed with Skaha's own reason
    assert any("still Pending" in r and PENDING_REASON in r for r in reasons), reasons
    # and the Skaha session was deleted
    assert [call.route for call in state.calls].count("delete") >= 1
    assert not [s for s in state.sessions.values() if s.status in ("Pending", "Running")]
    # and its capacity is free: the whole platform can be booked again at once
    state.stuck_pending = False
    soon = dict(whole, schedule={"requested": {"duration": "PT10M", "start": _now_for(60)}})
    body = await (await client.post("/requests", json=soon)).json()
    assert body["result"] == "YES", body


def _now_for(seconds: int) -> str:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{start}/PT{seconds}S"


async def test_503_503_200_on_create_still_makes_exactly_one_skaha_session(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.add_fault("create", 503, times=2)
    client = await start_broker(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    uuid = await accept_first(client, headless())
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert state.count("create") == 3  # two refused, one made
    names = [s.name for s in state.sessions.values()]
    assert len(names) == len(set(names)) == 1


async def test_cancelling_a_running_session_deletes_it_on_skaha(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.run_seconds = 600
    client = await start_broker(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    uuid = await accept_first(client, headless())
    assert await wait_for_phase(client, uuid, {"RUNNING", "FAILED"}) == "RUNNING"
    (skaha_id,) = list(state.sessions)
    cancel = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
    assert (await client.post(f"/sessions/{uuid}", json=cancel)).status == 200
    async with asyncio.timeout(10):
        while not state.count("delete"):  # noqa: ASYNC110 - the stand-in has no event to await
            await asyncio.sleep(0.05)
    (deleted,) = [call for call in state.calls if call.route == "delete"]
    assert deleted.path.endswith(f"/v1/session/{skaha_id}")
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    assert log["session"]["phase"] == "CANCELLED"


@pytest.mark.parametrize("launcher", ["nosuch"])
def test_a_platform_with_an_unknown_back_end_stops_startup(launcher: str, tmp_path: Path) -> None:
    from talicada.settings import SettingsError, load

    config = tmp_path / "talicada.toml"
    config.write_text(f'[[platforms]]\nname = "canfar"\nlauncher = "{launcher}"\n')
    with pytest.raises(
        SettingsError, match=r"platforms\[0\] \(canfar\): launcher: no back end 'nosuch'"
    ):
        load(config, environ={})


def test_a_skaha_platform_without_its_table_or_url_stops_startup(tmp_path: Path) -> None:
    from talicada.settings import SettingsError, load

    config = tmp_path / "talicada.toml"
    config.write_text('[[platforms]]\nname = "canfar"\nlauncher = "skaha"\n')
    with pytest.raises(SettingsError, match=r"\(canfar\): \[platforms.skaha\]: launcher 'skaha'"):
        load(config, environ={})
    config.write_text('[[platforms]]\nname = "canfar"\nlauncher = "skaha"\n[platforms.skaha]\n')
    with pytest.raises(SettingsError, match=r"platforms\[0\]\.skaha: .*`url`"):
        load(config, environ={})


async def test_extending_a_running_session_renews_it_on_skaha(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.run_seconds = 600
    client = await start_broker(platforms=[canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN)])
    uuid = await accept_first(client, headless())
    assert await wait_for_phase(client, uuid, {"RUNNING", "FAILED"}) == "RUNNING"
    (skaha_id,) = list(state.sessions)
    update = {"kind": "uri:string-value-update", "path": "schedule.available.duration"}
    response = await client.post(f"/sessions/{uuid}", json={**update, "value": "PT20M"})
    assert response.status == 200, await response.text()
    async with asyncio.timeout(10):
        while not state.count("renew"):  # noqa: ASYNC110 - the stand-in has no event to await
            await asyncio.sleep(0.05)
    (renewed,) = [call for call in state.calls if call.route == "renew"]
    assert renewed.path.endswith(f"/v1/session/{skaha_id}")
    assert renewed.query["action"] == ["renew"]


async def test_offers_respect_the_accounts_session_quota(
    start_broker: BrokerFactory, skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.run_seconds = 600
    platform = canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN, skaha_options={"max_sessions": 1})
    client = await start_broker(platforms=[platform])
    uuid = await accept_first(client, headless())
    assert await wait_for_phase(client, uuid, {"RUNNING", "FAILED"}) == "RUNNING"
    await asyncio.sleep(0.3)  # longer than the advisor trusts its count (poll_interval)
    body = await (await client.post("/requests", json=headless())).json()
    assert body["result"] == "NO"
    assert "runs 1 sessions, its limit is 1" in body["meta"]["messages"][0]["message"]
