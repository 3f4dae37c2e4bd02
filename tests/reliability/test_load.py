"""Load without 500s and concurrency without refusals (issue 9, must-show 1, first half).

* 100 concurrent requests for free capacity all get offers, on one broker
  over memory and over two replicas sharing Redis;
* 500 concurrent mixed calls (GET, POST, SSE, long poll) on a broker with a
  deliberately small Redis pool answer 200 or 503 with ``Retry-After``;
* an exhausted pool is a 503 with ``Retry-After``, not a 500;
* slow and idle client connections are closed; a slow body is a 408;
* huge bodies are refused after bounded work, decoded off the event loop;
* control characters in what a request supplies are a 400 naming the field.

Every scenario is bounded in count and time and runs on loopback.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from talicada import constants
from talicada.broker.app import create_app, server_timeouts
from talicada.broker.calendar import Entry, Slots, Steps
from talicada.broker.keys import BROKER
from talicada.broker.planner import Demand, plan
from talicada.broker.store import Store
from talicada.broker.store.redis import RedisStore
from talicada.schema import codec
from talicada.schema.iso8601 import parse_instant
from talicada.settings import load
from tests.conftest import ClientFactory
from tests.reliability.load_support import (
    ROOMY,
    Client,
    http_session,
    one_core,
    production_broker,
    production_settings,
    unlink_prefix,
)
from tests.replicas import replicas_of

CONCURRENT_REQUESTS = 100
MIXED_CALLS = 500


@pytest_asyncio.fixture
async def replicas(
    store: Store, make_client: ClientFactory, redis_url: str
) -> AsyncIterator[list[Client]]:
    """One broker over memory; over Redis, two replicas on their own connections."""
    async with replicas_of(ROOMY, store, make_client, redis_url) as clients:
        yield clients


async def test_a_hundred_concurrent_requests_for_free_capacity_all_get_offers(
    replicas: list[Client],
) -> None:
    async def ask(index: int) -> tuple[int, dict[str, Any]]:
        client = replicas[index % len(replicas)]
        response = await client.post("/requests", json=one_core())
        return response.status, await response.json()

    began = datetime.now(UTC)
    async with asyncio.timeout(120):
        answers = await asyncio.gather(*(ask(i) for i in range(CONCURRENT_REQUESTS)))
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: CONCURRENT_REQUESTS}, [b for s, b in answers if s != 200][:3]
    for _, body in answers:
        assert body["result"] == "YES", body
        assert body["offers"], body
    # 100 one-core sessions fit at once on 256 cores, so every request's first
    # offer starts now, not pushed to a later window (ten minutes on) by the others.
    for _, body in answers:
        first = parse_instant(body["offers"][0]["schedule"]["preparing"]["start"])
        assert first - began < timedelta(minutes=2), body["offers"][0]["schedule"]


async def test_an_unservable_request_gets_an_explained_no_not_a_409(
    make_client: ClientFactory,
) -> None:
    client = await make_client(platforms=[msgspec.structs.replace(ROOMY, cores=2)], timers=False)
    request = one_core() | {"compute": {"cores": {"min": 2, "max": 2}}}

    async def ask() -> tuple[int, dict[str, Any]]:
        response = await client.post("/requests", json=request)
        return response.status, await response.json()

    async with asyncio.timeout(60):
        answers = await asyncio.gather(*(ask() for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    refused = [body for _, body in answers if body["result"] == "NO"]
    # Four windows of ten minutes in 40 minutes, one request at a time: the rest is NO.
    assert refused, "the platform cannot hold 20 two-core sessions in the window"
    for body in refused:
        assert any("no window" in m["message"] for m in body["meta"]["messages"]), body


@pytest_asyncio.fixture
async def small_pool_broker(tmp_path: Path, redis_url: str) -> AsyncIterator[Client]:
    """A production broker on the shared Redis whose pool has only 8 connections."""
    settings = production_settings(tmp_path, redis_url, redis_pool_size=8, redis_pool_timeout=2.0)
    try:
        async with production_broker(settings) as client:
            yield client
    finally:
        await unlink_prefix(redis_url, settings.key_prefix)


async def test_five_hundred_mixed_calls_answer_200_or_503_never_500(
    small_pool_broker: Client,
) -> None:
    client = small_pool_broker
    offers = await (await client.post("/requests", json=one_core())).json()
    sessions = [offer["meta"]["uuid"] for offer in offers["offers"]]
    base = str(client.make_url("")).rstrip("/")

    async with http_session() as http:

        async def call(index: int) -> tuple[str, int, str | None]:
            uuid = sessions[index % len(sessions)]
            kind = ("get", "post", "sse", "poll")[index % 4]
            if kind == "get":
                response = await http.get(f"{base}/sessions/{uuid}")
            elif kind == "post":
                response = await http.post(f"{base}/requests", json=one_core())
            elif kind == "poll":
                params = {"wait": "1", "phase": "OFFERED"}
                response = await http.get(f"{base}/sessions/{uuid}", params=params)
            else:
                response = await http.get(f"{base}/sessions/{uuid}/events")
                if response.status == 200:
                    # The offer's first transition, then the stream stays open: leave.
                    assert (await response.content.readline()).startswith(b"id: 0")
            async with response:
                if kind != "sse":
                    await response.read()
                return kind, response.status, response.headers.get("Retry-After")

        started = time.monotonic()
        async with asyncio.timeout(180):
            results = await asyncio.gather(*(call(i) for i in range(MIXED_CALLS)))
        elapsed = time.monotonic() - started
    statuses = Counter((kind, status) for kind, status, _ in results)
    print(f"\n{MIXED_CALLS} mixed calls in {elapsed:.1f} s: {dict(statuses)}")
    assert {status for _, status, _ in results} <= {200, 503}, statuses
    assert all(retry for _, status, retry in results if status == 503)
    for kind in ("get", "post", "sse", "poll"):
        assert statuses[(kind, 200)] > 0, statuses


async def test_waiting_watchers_hold_no_redis_connection(tmp_path: Path, redis_url: str) -> None:
    """100 SSE streams and long polls wait on a pool of 4 connections; a read still answers."""
    settings = production_settings(tmp_path, redis_url, redis_pool_size=4, redis_pool_timeout=3)
    try:
        async with production_broker(settings) as client, http_session() as http:
            offers = await (await client.post("/requests", json=one_core())).json()
            uuid = offers["offers"][0]["meta"]["uuid"]
            base = str(client.make_url("")).rstrip("/")
            streams = []
            for _ in range(50):
                stream = await http.get(f"{base}/sessions/{uuid}/events")
                assert stream.status == 200
                assert (await stream.content.readline()).startswith(b"id: 0")
                streams.append(stream)
            params = {"wait": "10", "phase": "OFFERED"}
            polls = [
                asyncio.create_task(http.get(f"{base}/sessions/{uuid}", params=params))
                for _ in range(50)
            ]
            await asyncio.sleep(1.5)  # all of them are waiting now
            assert not any(poll.done() for poll in polls)
            for _ in range(5):
                response = await client.get(f"/sessions/{uuid}")
                assert response.status == 200, await response.text()
            # A change wakes every waiter at once (one notifier per process).
            reject = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
            assert (await client.post(f"/sessions/{uuid}", json=reject)).status == 200
            async with asyncio.timeout(20):
                answers = await asyncio.gather(*polls)
            assert {answer.status for answer in answers} == {200}
            for answer in answers:
                assert (await answer.json())["phase"] == "REJECTED"
                answer.release()
            for stream in streams:
                stream.close()
    finally:
        await unlink_prefix(redis_url, settings.key_prefix)


async def test_an_exhausted_pool_is_a_503_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    settings = production_settings(tmp_path, redis_url, redis_pool_size=4, redis_pool_timeout=0.2)
    try:
        async with production_broker(settings) as client:
            store = client.app[BROKER].store
            assert isinstance(store, RedisStore)
            key = f"{settings.key_prefix}:nothing"
            # Every connection busy for a second (blocking pops on an empty list).
            blockers = [
                asyncio.ensure_future(store.client.blpop([key], timeout=1)) for _ in range(4)
            ]
            await asyncio.sleep(0.2)
            uuid = "00000000-0000-4000-8000-000000000000"
            response = await client.get(f"/sessions/{uuid}")
            body = await response.json()
            await asyncio.gather(*blockers, return_exceptions=True)  # some found none free
            assert response.status == 503, body
            assert response.headers["Retry-After"] == "5"
            assert "Redis" in body["messages"][0]["message"]
            # Once the connections are free again, the same call answers.
            assert (await client.get(f"/sessions/{uuid}")).status == 404
    finally:
        await unlink_prefix(redis_url, settings.key_prefix)


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """An embedded broker behind aiohttp's real server, with short client timeouts."""
    settings = load(
        environ={}, http_idle_timeout=0.5, http_body_timeout=0.5, work_dir=str(tmp_path)
    )
    runner = web.AppRunner(create_app(settings), **server_timeouts(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    async with asyncio.timeout(seconds):
        return await reader.read()


async def test_slow_header_and_idle_connections_are_closed(served: tuple[str, int]) -> None:
    host, port = served
    # A slowloris: headers a few bytes at a time, never finished.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):
        await asyncio.sleep(0.1)
        writer.write(b"X-Slow: 1\r\n")
    assert await _closed_within(reader, 5) == b""
    writer.close()
    # A connection that never says anything.
    reader, writer = await asyncio.open_connection(host, port)
    assert await _closed_within(reader, 5) == b""
    writer.close()
    # A kept-alive connection after its response.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_body_sent_too_slowly_is_a_408(served: tuple[str, int]) -> None:
    host, port = served
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"exec'
    )
    answer = await _closed_within(reader, 10)  # after lingering for the rest of the body
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"sending the request body took longer than 0.5 seconds" in answer


def _nested_xml(depth: int) -> bytes:
    return b"<request>" + b"<a>" * depth + b"</a>" * depth + b"</request>"


def _flat_xml(count: int) -> bytes:
    return b"<request>" + b"<a>x</a>" * count + b"</request>"


def _many_keys_yaml(count: int) -> bytes:
    return ("request:\n" + "".join(f"  k{i}: v\n" for i in range(count))).encode()


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/xml", _nested_xml(100_000), "nests deeper than max_depth=32"),
        ("application/xml", _flat_xml(100_000), "more than max_items=10000 XML elements"),
        ("application/yaml", _many_keys_yaml(60_000), "more than max_items=10000 keys"),
    ],
    ids=["xml-nested", "xml-flat", "yaml-keys"],
)
async def test_huge_bodies_are_refused_after_bounded_work_off_the_event_loop(
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    content_type: str,
    body: bytes,
    reason: str,
) -> None:
    client = await make_client(max_body_bytes=4 << 20)
    threads: list[str] = []
    decode = codec.decode

    def watched(data: bytes, media: codec.MediaType) -> object:
        threads.append(threading.current_thread().name)
        return decode(data, media, codec.Limits(max_bytes=4 << 20))

    monkeypatch.setattr(codec, "decode", watched)
    response = await client.post("/requests", data=body, headers={"Content-Type": content_type})
    message = (await response.json())["messages"][0]["message"]
    assert response.status == 400
    assert reason in message, message
    # Decoded in a worker thread, not on the event loop's.
    assert threads
    assert threads[0] != threading.main_thread().name


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("executable", "paths"), ["/inputs/a\x00b"], "executable.paths[0]"),
        (("executable", "meta"), {"name": "job\nname"}, "executable.meta.name"),
        (("executable", "meta"), {"description": "bell \x07"}, "executable.meta.description"),
    ],
    ids=["nul-in-path", "newline-in-name", "bell-in-text"],
)
async def test_control_characters_are_a_400_naming_the_field(
    client: Client, path: tuple[str, str], value: object, field: str
) -> None:
    request = {
        "executable": {"kind": "urn:talicada:kinds:executable:checksum-1.0", "paths": ["/inputs"]},
        "schedule": {"requested": {"duration": "PT10M"}},
    }
    request[path[0]][path[1]] = value  # type: ignore[index]
    response = await client.post("/requests", json=request)
    messages = [m["message"] for m in (await response.json())["messages"]]
    assert response.status == 400
    assert any(m.startswith(f"{field}: contains the control character") for m in messages), messages


async def test_line_breaks_stay_allowed_in_free_text(client: Client) -> None:
    request = {
        "executable": {
            "kind": "urn:talicada:kinds:executable:ping-1.0",
            "meta": {"description": "first line\nsecond line\ttabbed"},
        },
        "schedule": {"requested": {"duration": "PT10M"}},
    }
    response = await client.post("/requests", json=request)
    assert response.status == 200, await response.text()


# -- bounded store work: no Lua script long enough to stall the others --------


def test_no_offer_spans_more_change_points_than_a_script_may_touch() -> None:
    """A crowded stretch of calendar is planned around, not booked across."""
    slots = Slots(60)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    demand = Demand(
        cores=(1, 1),
        memory=(1, 1),
        duration=timedelta(hours=10),
        preparation=timedelta(0),
        release=timedelta(0),
        earliest=now,
        latest=now + timedelta(days=2),
    )
    usage = Steps.empty()
    first = slots.floor(now)
    # 400 one-minute bookings every other minute: 800 change points in 13 hours.
    for index in range(400):
        usage.add(Entry("p", first + 2 * index, first + 2 * index + 1, 1, 1))
    windows = plan(demand, usage, (100, 100), slots, "p", 4)
    assert windows, "room is free after the crowded stretch"
    for window in windows:
        spanned = len(list(usage.segments(window.entry.first, window.entry.last))) - 1
        assert spanned <= constants.BOOKING_POINTS, (window.available, spanned)
    # The first offer starts as early as the limit allows, not after the whole stretch.
    assert windows[0].entry.first < first + 800


async def test_the_calendar_is_read_in_pages_that_add_up_to_one_read(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"talicada-test-{uuid.uuid4().hex}"
    store = await RedisStore.connect(redis_url, prefix=prefix)
    try:
        key = store.keys.calendar_points("p")
        levels = {slot: (slot % 7, slot % 5) for slot in range(10, 400, 3)}
        await store.client.zadd(key, {f"{s}|{c}|{m}": s for s, (c, m) in levels.items()})
        whole = await store.usage("p", 0, 1000)
        monkeypatch.setattr(constants, "USAGE_PAGE", 4)
        paged = await store.usage("p", 0, 1000)
        assert (paged.points, paged.cores, paged.memory) == (
            whole.points,
            whole.cores,
            whole.memory,
        )
        assert len(whole.points) == len(levels) + 1  # the level at 0, then every point
        monkeypatch.setattr(constants, "USAGE_PAGE", len(levels))  # exactly one full page
        exact = await store.usage("p", 0, 1000)
        assert exact.points == whole.points
    finally:
        await unlink_prefix(redis_url, prefix)
        await store.close()
