"""The Skaha stand-in speaks what the official client speaks, and runs on its own.

``canfar.sessions.AsyncSession`` (CANFAR's own Python client) drives the
stand-in on loopback: a runtime ``url`` and ``token`` make it use neither a
saved configuration nor the network, and its models read the JSON it gets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from canfar.models.containers import Image  # type: ignore[import-untyped]
from canfar.models.http import ServerResources  # type: ignore[import-untyped]
from canfar.models.session import FetchResponse  # type: ignore[import-untyped]
from canfar.sessions import AsyncSession  # type: ignore[import-untyped]

from tests.standins.skaha import DEFAULT_TOKEN, SkahaState, create_app

TERMINAL = "images.canfar.net/skaha/terminal:1.1.1"
NOTEBOOK = "images.canfar.net/skaha/base-notebook:latest"


class Clock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> SkahaState:
    return SkahaState(clock=clock, start_delay=1, run_seconds=5, terminate_delay=1)


@pytest.fixture
async def base(state: SkahaState) -> AsyncIterator[str]:
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/skaha"))
    await server.close()


@pytest.fixture
async def canfar(base: str) -> AsyncIterator[Any]:
    # canfar's base URL includes the API version: it requests "session", "image"...
    async with AsyncSession(url=f"{base}/v1", token=DEFAULT_TOKEN, errors="raise") as client:
        yield client


async def test_canfar_creates_fetches_logs_and_destroys(
    canfar: Any, state: SkahaState, clock: Clock
) -> None:
    ids = await canfar.create(
        name="canfar-run",
        image=TERMINAL,
        cores=2,
        ram=4,
        kind="headless",
        cmd="echo",
        args="hello world",
        env={"STANDIN_RUN_SECONDS": "3"},
    )
    assert len(ids) == 1
    sid = ids[0]
    create = state.calls[-1]
    assert (create.route, create.body) == ("create", b"")  # all in the query string
    assert create.query["type"] == ["headless"]
    assert create.query["cores"] == ["2"]
    assert "REPLICA_ID=1" in create.query["env"]

    clock.now += 10
    fetched = await canfar.fetch(kind="headless")
    assert [session["id"] for session in fetched] == [sid]
    info = await canfar.info(sid)
    model = FetchResponse.model_validate(info[0])
    assert (model.status, model.name, model.requestedCPUCores) == ("Succeeded", "canfar-run", "2")
    assert model.startTime is not None
    assert model.expiryTime is not None

    logs = await canfar.logs(sid)
    assert "echo hello world" in logs[sid]
    events = await canfar.events(sid)
    assert sid in events[0][sid]

    assert await canfar.destroy(sid) == {sid: True}
    assert state.sessions[sid].status == "Terminating"
    assert [call.method for call in state.calls if call.route == "delete"] == ["DELETE"]


async def test_canfar_renews_a_notebook_and_sees_refusals(
    canfar: Any, state: SkahaState, clock: Clock
) -> None:
    [sid] = await canfar.create(name="nb", image=NOTEBOOK, kind="notebook", cores=1, ram=2)
    clock.now += 3600
    before = state.sessions[sid].expiry
    assert await canfar.renew(sid) == {sid: True}
    assert state.sessions[sid].expiry > before
    (running,) = await canfar.fetch(kind="notebook", status="Running")
    assert running["connectURL"].endswith(f"/arc/home/{running['userid']}")

    with pytest.raises(Exception, match="create") as refused:
        await canfar.create(name="bad", image=TERMINAL, kind="headless", cores=3, ram=2)
    assert refused.type.__name__ == "SessionRequestError"
    assert len(state.sessions) == 1


async def test_context_and_images_read_with_canfars_models(base: str) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base}/v1/context") as answer:
            context = await answer.json()
        async with http.get(f"{base}/v1/image") as answer:
            images = await answer.json()
    resources = ServerResources.from_context(context)
    assert (resources.fixed.cores.min, resources.fixed.cores.max) == (1, 16)
    assert resources.sessions == 5
    parsed = [Image.model_validate(image) for image in images]
    assert {image.id: image.types for image in parsed}[NOTEBOOK] == ["notebook"]


# ------------------------------------------------------------------ by hand


def test_standin_runs_on_its_own() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tests.standins.skaha", "--port", str(port), "--token", "t0k"]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        answer = _poll(f"http://127.0.0.1:{port}/skaha/v1/image", "t0k")
        assert TERMINAL in answer
    finally:
        process.terminate()
        process.wait(timeout=10)


def _poll(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
