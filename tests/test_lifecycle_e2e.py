"""Sessions run end to end on the local platform, broker and workers together.

Embedded style: the broker and every worker in this process over the store's
bus (memory, or Redis), the workers calling back over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import run_embedded_workers
from talicada.broker.store import Store
from talicada.schema.iso8601 import format_instant, parse_instant
from tests.conftest import EXAMPLES, ClientFactory

Client = TestClient[web.Request, web.Application]
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
CANCEL = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
FILES = {"a.fits": os.urandom(200_000), "b.fits": b"SIMPLE  =                    T" * 100}


@pytest_asyncio.fixture
async def file_server() -> AsyncIterator[str]:
    """A loopback HTTP server with the two files the checksum example stages."""
    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(body=FILES[name])

    app.router.add_get("/{name}", serve)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest_asyncio.fixture
async def broker(make_client: ClientFactory, tmp_path: Path) -> AsyncIterator[Client]:
    """A broker on the local platform with every worker running in-process."""
    client = await make_client(work_dir=str(tmp_path / "work"))
    stop = asyncio.Event()
    workers = asyncio.create_task(
        run_embedded_workers(client.app, str(client.make_url("")).rstrip("/"), stop)
    )
    yield client
    stop.set()
    await asyncio.wait_for(workers, timeout=15)


async def accept_first(client: Client, request: dict[str, Any]) -> str:
    response = await client.post("/requests", json=request)
    body = await response.json()
    assert body["result"] == "YES", body
    uuid: str = body["offers"][0]["meta"]["uuid"]
    accepted = await client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert accepted.status == 200, await accepted.text()
    return uuid


async def wait_for_phase(client: Client, uuid: str, phases: set[str], limit: float = 30) -> str:
    """Long-poll until the session is in one of ``phases``."""
    deadline = time.monotonic() + limit
    phase = ""
    while time.monotonic() < deadline:
        response = await client.get(f"/sessions/{uuid}", params={"wait": "2", "phase": phase})
        phase = str((await response.json())["phase"])
        if phase in phases:
            return phase
    raise AssertionError(f"session {uuid} still {phase}, wanted {phases}")


async def session_phases(client: Client, uuid: str) -> list[str]:
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    steps = [item for item in log["history"] if "component" not in item]
    return [steps[0]["from"], *(item["to"] for item in steps)]


def checksum_request(base: str) -> dict[str, Any]:
    text = (EXAMPLES / "v1-local-checksum-request.yaml").read_text()
    request: dict[str, Any] = yaml.safe_load(text)
    for item, name in zip(request["data"], ("a.fits", "b.fits"), strict=True):
        item["location"] = f"{base}/{name}"
    return request


def task(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "executable": {"kind": f"urn:talicada:kinds:executable:{kind}-1.0", **fields},
        "schedule": {"requested": {"duration": "PT2M"}},
    }


async def test_the_checksum_example_runs_to_completion_with_both_digests(
    broker: Client, file_server: str
) -> None:
    uuid = await accept_first(broker, checksum_request(file_server))
    assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert await session_phases(broker, uuid) == [
        "INITIAL",
        "OFFERED",
        "ACCEPTED",
        "PREPARING",
        "RUNNING",
        "RELEASING",
        "COMPLETED",
    ]
    log = await (await broker.get(f"/sessions/{uuid}/log")).json()
    messages = log["session"]["executable"]["meta"]["messages"]
    digests = {
        m["values"]["path"]: m["values"]["digest"] for m in messages if "digest" in m["values"]
    }
    assert digests == {
        f"/inputs/{name}": hashlib.sha256(content).hexdigest() for name, content in FILES.items()
    }
    components = [log["session"]["compute"], *log["session"]["storage"], *log["session"]["data"]]
    assert {part["phase"] for part in components} == {"COMPLETED"}


async def test_a_failure_injected_in_preparation_fails_the_session_and_frees_everything(
    broker: Client, store: Store
) -> None:
    fail = {"phase": "PREPARING", "after": "PT0.2S", "message": "injected: disk on fire"}
    uuid = await accept_first(broker, task("delay", duration="PT30S", fail=fail))
    assert await wait_for_phase(broker, uuid, {"FAILED", "COMPLETED"}) == "FAILED"
    log = await (await broker.get(f"/sessions/{uuid}/log")).json()
    assert any(
        item["to"] == "FAILED" and "disk on fire" in item["cause"] for item in log["history"]
    )
    assert await store.entries("local") == []
    # every component is released
    for _ in range(50):
        log = await (await broker.get(f"/sessions/{uuid}/log")).json()
        parts = [log["session"]["executable"], log["session"]["compute"]]
        if all(part["phase"] in ("FAILED", "CANCELLED", "COMPLETED") for part in parts):
            break
        await asyncio.sleep(0.1)
    assert log["session"]["executable"]["phase"] == "FAILED"
    assert log["session"]["compute"]["phase"] in ("CANCELLED", "COMPLETED")


async def test_cancelling_a_running_session_stops_its_process_within_a_second(
    broker: Client, store: Store, tmp_path: Path
) -> None:
    uuid = await accept_first(broker, task("delay", duration="PT60S"))
    assert await wait_for_phase(broker, uuid, {"RUNNING"}) == "RUNNING"
    pid = int((tmp_path / "work" / uuid / "pid").read_text())
    os.kill(pid, 0)  # it runs
    cancelled = await broker.post(f"/sessions/{uuid}", json=CANCEL)
    assert cancelled.status == 200
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the task still runs a second after CANCELLED")
    assert (await (await broker.get(f"/sessions/{uuid}")).json())["phase"] == "CANCELLED"
    assert await store.entries("local") == []


async def test_a_session_accepted_for_later_waits_until_its_start(broker: Client) -> None:
    # The local platform prepares a ping in 1 s, so preparation starts in 10 s.
    start = datetime.now(UTC) + timedelta(seconds=11)
    request = task("ping")
    request["schedule"]["requested"]["start"] = f"{format_instant(start)}/PT1M"
    uuid = await accept_first(broker, request)
    assert await wait_for_phase(broker, uuid, {"WAITING"}, limit=5) == "WAITING"
    offer = await (await broker.get(f"/sessions/{uuid}")).json()
    preparing = offer["schedule"]["preparing"]["start"]
    assert parse_instant(preparing).timestamp() >= time.time() + 8
    phase = await wait_for_phase(broker, uuid, {"PREPARING", "RUNNING", "RELEASING", "COMPLETED"})
    assert phase != "WAITING"
    # it left WAITING at its scheduled time, not before
    assert time.time() >= parse_instant(preparing).timestamp() - 0.2
    assert await wait_for_phase(broker, uuid, {"COMPLETED"}) == "COMPLETED"
