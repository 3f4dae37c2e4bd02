"""Production shape: ``talicada serve`` and each ``talicada worker NAME`` as separate
processes sharing one real Redis, the checksum example run end to end through them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from talicada.workers.registry import WORKERS
from tests.lifecycle_support import ACCEPT, checksum_request, digests_of, expected_digests

TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Deployment:
    """The broker and its workers as child processes."""

    def __init__(self, url: str, environment: dict[str, str], logs: Path) -> None:
        self.url = url
        self.environment = environment
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.killed: set[str] = set()
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    async def start(self, name: str, *argv: str) -> None:
        """Start ``talicada ARGV`` as process ``name``, logging to its own file."""
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "talicada", *argv, env=self.environment, stdout=log, stderr=log
        )

    def kill(self, name: str) -> None:
        """SIGKILL process ``name``: a crash, with no chance to clean up."""
        self.processes[name].kill()
        self.killed.add(name)


async def wait_until_up(url: str, broker: asyncio.subprocess.Process) -> None:
    # Generous: five interpreters starting at once on a busy CI machine take a while.
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert broker.returncode is None, "the broker exited during startup"
            try:
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the broker did not come up")


@pytest_asyncio.fixture
async def deployment(redis_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    prefix = f"talicada-test-{uuid.uuid4().hex}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} alice\n")
    environment = {
        **os.environ,
        "TALICADA_REDIS_URL": redis_url,
        "TALICADA_KEY_PREFIX": prefix,
        "TALICADA_CALLBACK_SECRET": secrets.token_hex(32),
        # The suite's file servers are on loopback, which production refuses.
        "TALICADA_ALLOW_LOOPBACK_FETCH": "true",
        "TALICADA_AUTH_TOKENS_FILE": str(tokens),
        "TALICADA_PORT": str(port),
        "TALICADA_BROKER_URL": url,
        "TALICADA_WORK_DIR": str(tmp_path / "work"),
        "TALICADA_LOG_FORMAT": "json",
        # Short, so the crash test sees a dead worker's event taken over quickly.
        "TALICADA_RECLAIM_IDLE": "2",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    deployment = Deployment(url, environment, logs)
    processes = deployment.processes
    try:
        await deployment.start("serve", "serve")
        for worker in WORKERS:
            await deployment.start(worker, "worker", worker)
        await wait_until_up(url, processes["serve"])
        yield deployment
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = {
            name: await asyncio.wait_for(process.wait(), timeout=20)
            for name, process in processes.items()
            if name not in deployment.killed
        }
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
    # Every process shut down cleanly on SIGTERM.
    assert codes == dict.fromkeys(codes, 0), {
        name: (logs / f"{name}.log").read_text()[-2000:] for name in codes
    }


async def test_the_checksum_example_runs_through_separate_processes_sharing_redis(
    deployment: Deployment, file_server: str
) -> None:
    async with aiohttp.ClientSession(headers=deployment.headers) as http:
        async with http.post(
            f"{deployment.url}/requests", json=checksum_request(file_server)
        ) as response:
            assert response.status == 200, await response.text()
            offer = (await response.json())["offers"][0]["meta"]["uuid"]
        async with http.post(f"{deployment.url}/sessions/{offer}", json=ACCEPT) as response:
            assert response.status == 200
        phase, deadline = "ACCEPTED", time.monotonic() + 60
        while phase not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            params = {"wait": "5", "phase": phase}
            async with http.get(f"{deployment.url}/sessions/{offer}", params=params) as response:
                phase = (await response.json())["phase"]
        assert phase == "COMPLETED"
        async with http.get(f"{deployment.url}/sessions/{offer}/log") as response:
            log = await response.json()
    steps = [item["to"] for item in log["history"] if "component" not in item]
    assert steps == ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]
    assert digests_of(log) == expected_digests()


SLOW = os.urandom(64 * 1024)


async def test_a_crashed_worker_s_event_is_taken_over_and_the_session_completes(
    deployment: Deployment,
) -> None:
    # Given a data server whose download takes a few seconds
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        started.set()
        response = web.StreamResponse(headers={"Content-Length": str(len(SLOW))})
        await response.prepare(request)
        for offset in range(0, len(SLOW), 4096):
            await response.write(SLOW[offset : offset + 4096])
            await asyncio.sleep(0.2)
        return response

    app = web.Application()
    app.router.add_get("/slow.fits", slow)
    server = TestServer(app)
    await server.start_server()
    request = checksum_request(str(server.make_url("")).rstrip("/"))
    request["data"] = request["data"][:1]
    request["data"][0]["location"] = str(server.make_url("/slow.fits"))
    request["compute"]["volumes"][0]["resources"] = [request["data"][0]["meta"]["name"]]
    async with aiohttp.ClientSession(headers=deployment.headers) as http:
        async with http.post(f"{deployment.url}/requests", json=request) as response:
            offer = (await response.json())["offers"][0]["meta"]["uuid"]
        async with http.post(f"{deployment.url}/sessions/{offer}", json=ACCEPT) as response:
            assert response.status == 200
        # When the worker staging it crashes mid-download
        await asyncio.wait_for(started.wait(), timeout=20)
        deployment.kill("prepare-data")
        # and another prepare-data worker is started
        await deployment.start("prepare-data-2", "worker", "prepare-data")
        # Then it takes the event over and the session completes
        phase, deadline = "PREPARING", time.monotonic() + 60
        while phase not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            params = {"wait": "5", "phase": phase}
            async with http.get(f"{deployment.url}/sessions/{offer}", params=params) as response:
                phase = (await response.json())["phase"]
        async with http.get(f"{deployment.url}/sessions/{offer}/log") as response:
            log = await response.json()
    await server.close()
    assert phase == "COMPLETED", log["history"]
    assert digests_of(log) == {"/inputs/slow.fits": hashlib.sha256(SLOW).hexdigest()}


async def test_a_broker_killed_mid_session_restarts_and_the_session_completes(
    deployment: Deployment,
) -> None:
    request = {
        "executable": {"kind": "urn:talicada:kinds:executable:delay-1.0", "duration": "PT3S"},
        "schedule": {"requested": {"duration": "PT5M"}},
    }
    async with aiohttp.ClientSession(headers=deployment.headers) as http:
        async with http.post(f"{deployment.url}/requests", json=request) as response:
            offer = (await response.json())["offers"][0]["meta"]["uuid"]
        async with http.post(f"{deployment.url}/sessions/{offer}", json=ACCEPT) as response:
            assert response.status == 200
        phase, deadline = "ACCEPTED", time.monotonic() + 30
        while phase != "RUNNING" and time.monotonic() < deadline:
            async with http.get(f"{deployment.url}/sessions/{offer}") as response:
                phase = (await response.json())["phase"]
            await asyncio.sleep(0.1)
        assert phase == "RUNNING"
        # When the broker dies while the task runs, and comes back a little later
        deployment.kill("serve")
        await asyncio.sleep(1)
        await deployment.start("serve-again", "serve")
        await wait_until_up(deployment.url, deployment.processes["serve-again"])
        # Then the workers' reports get through and the session completes
        deadline = time.monotonic() + 60
        while phase not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            params = {"wait": "5", "phase": phase}
            async with http.get(f"{deployment.url}/sessions/{offer}", params=params) as response:
                phase = (await response.json())["phase"]
        async with http.get(f"{deployment.url}/sessions/{offer}/log") as response:
            log = await response.json()
    assert phase == "COMPLETED", log["history"]
    steps = [item["to"] for item in log["history"] if "component" not in item]
    assert steps == ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]
