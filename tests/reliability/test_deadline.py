"""A worker that never answers: the step's deadline ends it, dead-letters its
event and fails the component with the reason; the worker's health says so."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from talicada.events.bus import Delivery
from talicada.events.consumer import Consumer
from talicada.events.envelope import StageBody, StageData
from talicada.events.memory_bus import MemoryBus
from talicada.schema.model import SimpleDataResource
from tests.lifecycle_support import checksum_request
from tests.reliability.conftest import recorded
from tests.reliability.support import Deployment, Figures, session_log, submit, wait_terminal

LIMIT = 3.0  # seconds prepare-data may take over one event in the deployment below


async def test_a_handler_that_hangs_is_cancelled_at_its_events_deadline_despite_the_heartbeat() -> (
    None
):
    # Given a consumer whose handler never returns, touching its message often
    bus = MemoryBus(reclaim_idle_ms=100)
    given_up: list[str] = []

    async def hang(delivery: Delivery) -> None:
        await asyncio.Event().wait()

    async def dead_letter(delivery: Delivery, reason: str) -> None:
        given_up.append(reason)

    consumer = Consumer(
        bus,
        "prepare-data:local",
        "prepare-data",
        "c1",
        hang,
        on_dead_letter=dead_letter,
        block_ms=20,
        heartbeat=timedelta(milliseconds=20),
    )
    body = StageBody(data=SimpleDataResource(location="http://x/y"), storage="s")
    deadline = datetime.now(UTC) + timedelta(seconds=0.3)
    event = StageData.new("s1", component="d1", platform="local", deadline=deadline, body=body)
    await bus.publish("prepare-data:local", event)
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(consumer.run(stop))
        # When its event's deadline passes
        for _ in range(100):
            if given_up:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(running, 5)
    # Then the handler was cancelled, the message dead-lettered with the reason
    (reason,) = given_up
    assert "not done by its deadline" in reason
    (letter,) = await bus.dead_letters()
    assert letter.event is not None
    assert letter.event.id == event.id
    assert consumer.stats.overdue == 1
    assert await bus.pending("prepare-data:local", "prepare-data") == 0
    assert any(line["event"] == "event.dead_lettered" for line in logs)


async def test_an_event_received_after_its_deadline_is_given_up_without_running() -> None:
    bus = MemoryBus()
    ran: list[str] = []

    async def handler(delivery: Delivery) -> None:
        ran.append(delivery.event.id)

    consumer = Consumer(bus, "launch:local", "launch", "c1", handler, block_ms=20)
    past = datetime.now(UTC) - timedelta(seconds=1)
    body = StageBody(data=SimpleDataResource(location="http://x/y"), storage="s")
    await bus.publish("launch:local", StageData.new("s1", component="d", deadline=past, body=body))
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    for _ in range(100):
        if consumer.stats.dead_lettered:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert ran == []
    (letter,) = await bus.dead_letters()
    assert "passed before it was handled" in letter.reason


async def test_a_stager_that_never_answers_fails_its_component_at_the_deadline(
    deployment: Deployment,
) -> None:
    began = time.monotonic()
    # Given a data server that accepts the download and then never sends a byte
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/silent.fits", silent)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    await deployment.start_all(time_limits={"prepare_data": LIMIT})
    try:
        request = checksum_request(str(server.make_url("")).rstrip("/"))
        request["data"] = request["data"][:1]
        request["data"][0]["location"] = str(server.make_url("/silent.fits"))
        request["compute"]["volumes"][0]["resources"] = [request["data"][0]["meta"]["name"]]
        async with deployment.client() as http:
            uuid = await submit(http, deployment.url, request)
            submitted = time.monotonic()
            # When its stager waits for it past the prepare-data time limit
            final = await wait_terminal(http, deployment.url, [uuid], limit=60)
            failed_after = time.monotonic() - submitted
            log = await session_log(http, deployment.url, uuid)
            # (health records are renewed every 5 s)
            for _ in range(100):
                async with http.get(f"{deployment.url}/readyz") as response:
                    health = await response.json()
                stagers = [item for item in health["workers"] if item["worker"] == "prepare-data"]
                if stagers and stagers[0]["overdue"]:
                    break
                await asyncio.sleep(0.2)
    finally:
        release.set()
        await server.close()
    # Then the session FAILED because its data item did not finish in time
    assert final == {uuid: "FAILED"}
    reasons = [m["message"] for m in log["session"]["data"][0]["meta"]["messages"]]
    assert any("not done by its deadline" in reason for reason in reasons), reasons
    assert failed_after < LIMIT + 30
    # and the stager's health record counts the overdue event
    (stager,) = stagers
    assert stager["alive"] is True
    assert stager["overdue"] == 1
    recorded(
        Figures(
            scenario="worker never answers (deadline)",
            submitted=1,
            completed=0,
            lost=0,
            duplicated=0,
            recover_s=failed_after,
            seconds=time.monotonic() - began,
            notes=f"FAILED with the reason {failed_after:.1f} s after acceptance (limit {LIMIT} s)",
        )
    )
