"""Following many Skaha sessions costs one list call per interval, or none with callbacks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestServer

from talicada.events.envelope import Launch, LaunchBody
from talicada.events.report import Report
from talicada.schema.model import DockerContainer, DockerImage, Metadata, SimpleComputeResource
from talicada.services._http import TokenFile
from talicada.services.skaha import SkahaClient
from talicada.settings import Settings, load
from talicada.workers.backends._shared import MemoryLedger
from talicada.workers.backends._skaha_account import Account, Watch
from talicada.workers.runtime import Reporter, WorkerContext
from tests.platform_support import canfar
from tests.standins.skaha import DEFAULT_TOKEN, SkahaState, create_app

TERMINAL = "images.canfar.net/skaha/terminal:1.1.1"
SESSIONS = 200
INTERVAL = 0.25


class Recorder(Reporter):
    """A reporter that keeps reports instead of sending them."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        self.reports.append(report)


@pytest_asyncio.fixture
async def skaha() -> AsyncIterator[tuple[SkahaState, str]]:
    # Sessions start after 1 s and then run for long: the test sees one change each.
    state = SkahaState(start_delay=1.0, run_seconds=3600, max_interactive=None)
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("/skaha"))
    await server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_for(tmp_path: Path, url: str, **skaha: object) -> Settings:
    platform = canfar(tmp_path, skaha=url, token=DEFAULT_TOKEN, skaha_options=skaha)
    return load(environ={}, platforms=[platform])


async def start_many(client: SkahaClient, account: Account) -> None:
    """Launch SESSIONS headless sessions on Skaha and have ``account`` follow them."""
    for n in range(SESSIONS):
        skaha_id = await client.create(
            name=f"tc-{n:012d}", image=TERMINAL, type="headless", cores=1, ram=1
        )
        body = LaunchBody(
            executable=DockerContainer(image=DockerImage(locations=[TERMINAL])),
            compute=SimpleComputeResource(meta=Metadata(uuid=f"cpu-{n}")),
            ends="2099-01-01T00:00:00Z",
            starts="2099-01-01T00:00:00Z",
        )
        launch = Launch.new(f"session-{n}", component=f"exe-{n}", platform="canfar", body=body)
        await account.watch(Watch(skaha_id=skaha_id, launch=launch, notebook=False))


async def running_reported(recorder: Recorder, within: float = 15) -> None:
    async with asyncio.timeout(within):
        while sum(r.phase == "RUNNING" for r in recorder.reports) < SESSIONS:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_two_hundred_sessions_cost_one_list_call_per_interval(
    skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    settings = settings_for(tmp_path, url, poll_interval=INTERVAL, callbacks=False)
    recorder = Recorder()
    context = WorkerContext(settings, recorder, set(), MemoryLedger())
    async with aiohttp.ClientSession() as http:
        client = SkahaClient(url, TokenFile(tmp_path / "skaha.token"), http)
        account = Account(context, settings.platforms[0], client)
        # Given 200 live sessions on one account, followed by one launcher
        await start_many(client, account)
        state.reset_calls()
        started = asyncio.get_running_loop().time()
        await account.resume()
        # When they all start running
        await running_reported(recorder)
        await asyncio.sleep(4 * INTERVAL)
        elapsed = asyncio.get_running_loop().time() - started
        context.stopping.set()
        await asyncio.gather(*context.background)
    # Then each was reported once
    assert sorted(r.component for r in recorder.reports) == sorted(
        f"exe-{n}" for n in range(SESSIONS)
    )
    # and Skaha was asked once per interval for all of them, never per session
    routes = [call.route for call in state.calls]
    assert set(routes) == {"list"}
    assert routes.count("list") <= elapsed / INTERVAL + 2


async def test_with_skahas_callbacks_nothing_is_polled(
    skaha: tuple[SkahaState, str], tmp_path: Path
) -> None:
    state, url = skaha
    state.callbacks_enabled = True
    port = free_port()
    settings = settings_for(
        tmp_path,
        url,
        poll_interval=INTERVAL,
        callback_listen=f"127.0.0.1:{port}",
        callback_url=f"http://127.0.0.1:{port}/skaha",
    )
    recorder = Recorder()
    context = WorkerContext(settings, recorder, set(), MemoryLedger())
    async with aiohttp.ClientSession() as http:
        client = SkahaClient(url, TokenFile(tmp_path / "skaha.token"), http)
        account = Account(context, settings.platforms[0], client)
        # Given a launcher that registered for Skaha's callbacks
        await account.resume()
        assert state.count("register") == 1
        await start_many(client, account)
        state.reset_calls()
        # When 200 sessions start running
        await running_reported(recorder)
        await asyncio.sleep(4 * INTERVAL)
        context.stopping.set()
        await asyncio.gather(*context.background)
    # Then every change arrived by callback and Skaha was never polled
    assert sum(r.phase == "RUNNING" for r in recorder.reports) == SESSIONS
    assert state.count("list") == 0
    assert state.count("get") == 0
    assert len([d for d in state.deliveries if d.status == 204]) >= SESSIONS
