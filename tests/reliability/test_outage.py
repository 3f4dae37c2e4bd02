"""Redis and Mosquitto outages (issue 9, must-show 1, second half).

* With its Redis stopped, a broker answers 100 mixed API calls with 503 and
  ``Retry-After``, never 500; after Redis returns (AOF reloaded) it answers
  again, every accepted session completes, no call answers 500, and the
  loops that talk to Redis log the outage once each, not once per call.
* With Mosquitto stopped and restarted without its retained messages, the
  publisher reconnects by itself, publishes what happened meanwhile and puts
  back the retained phase of every session it published.

Each scenario uses its own redis-server or mosquitto on a free loopback port
(the shared ones are never stopped), is bounded in count and time, and
prints its figures (docs/RELIABILITY.md records them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import msgspec
import pytest_asyncio
import structlog
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from talicada.broker.app import create_app, run_embedded_workers
from talicada.broker.store.memory import MemoryStore
from talicada.outage import Outage
from talicada.settings import load
from tests.reliability.load_support import (
    ROOMY,
    Client,
    OwnMosquitto,
    one_core,
    own_redis,
    production_broker,
    production_settings,
)

SESSIONS = 10
OUTAGE_CALLS = 100
#: Shortest time Redis stays away (the calls take what they take on top).
OUTAGE_SECONDS = 4.0
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "REJECTED"}


def delay(seconds: int) -> dict[str, Any]:
    return one_core("delay", duration=f"PT{seconds}S")


async def wait_for(client: Client, uuid: str, phases: set[str], limit: float) -> str:
    """Long-poll until the session is in one of ``phases``; 503s are waited out."""
    deadline = time.monotonic() + limit
    phase = ""
    while time.monotonic() < deadline:
        response = await client.get(f"/sessions/{uuid}", params={"wait": "2", "phase": phase})
        assert response.status in (200, 503), await response.text()
        if response.status == 503:
            await asyncio.sleep(0.2)
            continue
        phase = str((await response.json())["phase"])
        if phase in phases:
            return phase
    raise AssertionError(f"session {uuid} still {phase!r}, wanted {phases}")


async def mixed_call(
    client: Client, index: int, session: str, offerset: str
) -> aiohttp.ClientResponse:
    """One of eight kinds of API call, by ``index``."""
    calls = [
        lambda: client.get(f"/sessions/{session}"),
        lambda: client.get("/sessions"),
        lambda: client.post("/requests", json=one_core()),
        lambda: client.post("/sessions", json=one_core()),
        lambda: client.get(f"/offersets/{offerset}"),
        lambda: client.get(f"/sessions/{session}/events"),
        lambda: client.get(f"/sessions/{session}", params={"wait": "5", "phase": "RUNNING"}),
        lambda: client.get(f"/sessions/{session}/log"),
    ]
    response: aiohttp.ClientResponse = await calls[index % len(calls)]()
    return response


async def test_while_redis_is_stopped_every_call_is_503_and_afterwards_every_session_completes(
    tmp_path: Path,
) -> None:
    async with own_redis(tmp_path) as redis_server:
        settings = production_settings(tmp_path, redis_server.url)
        async with production_broker(settings, workers=True) as client, asyncio.timeout(240):
            offerset = (await (await client.post("/requests", json=one_core())).json())["meta"]
            offerset = offerset["uuid"]
            sessions = []
            for _ in range(SESSIONS):
                response = await client.post("/sessions", json=delay(15))
                assert response.status == 200, await response.text()
                sessions.append((await response.json())["meta"]["uuid"])
            # All at once: one by one, a session that started late could keep the
            # wait on it long enough for the others (15 s each) to finish meanwhile.
            await asyncio.gather(
                *(wait_for(client, uuid, {"RUNNING"}, limit=60) for uuid in sessions)
            )

            with capture_logs() as logs:
                await redis_server.stop()
                stopped = time.monotonic()
                assert (await client.get("/readyz")).status == 503
                assert (await client.get("/healthz")).status == 200
                answers = []
                for start in range(0, OUTAGE_CALLS, 20):
                    batch = [
                        mixed_call(client, i, sessions[i % SESSIONS], offerset)
                        for i in range(start, start + 20)
                    ]
                    answers += await asyncio.gather(*batch)
                calls_took = time.monotonic() - stopped
                statuses = Counter(answer.status for answer in answers)
                assert statuses == {503: OUTAGE_CALLS}, statuses
                for answer in answers:
                    assert answer.headers["Retry-After"] == "5"
                    message = (await answer.json())["messages"][0]["message"]
                    assert "Redis" in message
                    assert "try again in 5 seconds" in message
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))

                await redis_server.start()
                back = time.monotonic()
                while (await client.get(f"/sessions/{sessions[0]}")).status != 200:
                    assert time.monotonic() - back < 30, "the broker did not recover"
                    await asyncio.sleep(0.05)
                recovered = time.monotonic() - back
                # A moment for the loops to notice (their pauses are at most a few seconds).
                await asyncio.sleep(3)

            after: Counter[int] = Counter()
            for start in range(0, 40, 20):
                batch = [
                    mixed_call(client, i, sessions[i % SESSIONS], offerset)
                    for i in range(start, start + 20)
                    if i % 8 not in (2, 3, 5, 6)  # reads only: no new sessions, no waits
                ]
                after.update(answer.status for answer in await asyncio.gather(*batch))
            assert set(after) == {200}, after
            finals = [await wait_for(client, uuid, FINAL, limit=120) for uuid in sessions]
            completed = time.monotonic() - back
            assert finals == ["COMPLETED"] * SESSIONS, Counter(finals)

    down = [entry for entry in logs if entry["event"] == "dependency.unavailable"]
    up = [entry for entry in logs if entry["event"] == "dependency.recovered"]
    print(
        f"\nRedis outage: {SESSIONS} sessions in flight, {OUTAGE_CALLS} calls answered 503 in "
        f"{calls_took:.2f} s, API back {recovered:.2f} s after Redis, all sessions COMPLETED "
        f"{completed:.1f} s after Redis; outage logged {len(down)} times, recovery {len(up)} times"
    )
    # Once per loop that talks to Redis (notifier, timers, each consumer), not per call.
    assert 1 <= len(down) <= 12, Counter(str(e.get("stream") or e.get("loop")) for e in down)
    assert len(up) >= 1


@pytest_asyncio.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[OwnMosquitto]:
    server = OwnMosquitto(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def retained_phases(url: str, topics: list[str], seconds: float = 1.0) -> dict[str, str]:
    """The retained phase on each of ``topics`` (those that have one), read by a new subscriber."""
    host, port = url.removeprefix("mqtt://").split(":")
    found: dict[str, str] = {}
    async with aiomqtt.Client(host, int(port)) as mqtt:
        for topic in topics:
            await mqtt.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(seconds):
                async for message in mqtt.messages:
                    if message.retain:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        found[str(message.topic)] = json.loads(payload)["phase"]
                    if len(found) == len(topics):
                        break
        except TimeoutError:
            pass
    return found


async def test_after_a_mosquitto_outage_publishing_resumes_and_retained_phases_are_restored(
    tmp_path: Path, mosquitto: OwnMosquitto
) -> None:
    settings = load(environ={}, mqtt_url=mosquitto.url, work_dir=str(tmp_path / "work"))
    settings = msgspec.structs.replace(settings, platforms=[ROOMY])
    app = create_app(settings, store=MemoryStore())
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    stop = asyncio.Event()
    url = str(client.make_url("")).rstrip("/")
    workers = asyncio.create_task(run_embedded_workers(client.app, url, stop))
    try:
        async with asyncio.timeout(120):
            before = (await (await client.post("/sessions", json=one_core())).json())["meta"]
            await wait_for(client, before["uuid"], {"COMPLETED"}, limit=60)
            during = (await (await client.post("/sessions", json=delay(4))).json())["meta"]
            await wait_for(client, during["uuid"], {"RUNNING"}, limit=60)
            topics = [
                f"talicada/sessions/anonymous/{before['uuid']}",
                f"talicada/sessions/anonymous/{during['uuid']}",
            ]
            first = await retained_phases(mosquitto.url, topics[:1], seconds=10)
            assert first == {topics[0]: "COMPLETED"}

            with capture_logs() as logs:
                await mosquitto.stop()  # no persistence: its retained messages are gone
                stopped = time.monotonic()
                await wait_for(client, during["uuid"], {"COMPLETED"}, limit=60)
                await mosquitto.start()
                back = time.monotonic()
                phases: dict[str, str] = {}
                while phases != dict.fromkeys(topics, "COMPLETED"):
                    assert time.monotonic() - back < 30, phases
                    phases = await retained_phases(mosquitto.url, topics)
                restored = time.monotonic() - back
    finally:
        stop.set()
        await asyncio.wait_for(workers, timeout=30)
        await client.close()
    down = [entry for entry in logs if entry["event"] == "dependency.unavailable"]
    print(
        f"\nMosquitto outage of {back - stopped:.1f} s: retained phases restored "
        f"{restored:.2f} s after it returned; outage logged {len(down)} time(s)"
    )
    assert len(down) == 1


def test_an_outage_is_logged_once_and_its_pauses_grow_with_jitter() -> None:
    times = iter([100.0, 107.5])
    with capture_logs() as logs:
        outage = Outage(
            "redis",
            structlog.get_logger("test"),
            base=0.2,
            cap=5.0,
            clock=lambda: next(times),
            rand=lambda: 1.0,
        )
        pauses = [outage.failed(ConnectionError("refused")) for _ in range(8)]
        assert outage.down
        outage.recovered()
        outage.recovered()  # a second success says nothing more
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert [entry["event"] for entry in logs] == ["dependency.unavailable", "dependency.recovered"]
    assert logs[1]["after_seconds"] == 7.5
    assert logs[1]["attempts"] == 8
    half = Outage("redis", structlog.get_logger("test"), base=0.2, rand=lambda: 0.0)
    assert half.failed(ConnectionError()) == 0.1  # jitter: between half and all of the step
