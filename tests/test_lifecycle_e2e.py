"""Sessions run end to end on the local platform, broker and workers together.

Embedded style: the broker and every worker in this process over the store's
bus (memory, or Redis), the workers calling back over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from talicada.broker.store import Store
from talicada.schema.iso8601 import format_instant, parse_instant
from tests.conftest import BrokerFactory
from tests.lifecycle_support import (
    CANCEL,
    FILES,
    Client,
    ShiftedClock,
    accept_first,
    checksum_request,
    digests_of,
    expected_digests,
    session_phases,
    task,
    wait_for_phase,
)


async def test_digests_name_the_session_paths_with_a_relative_work_dir(
    start_broker: BrokerFactory, file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``make run`` has it (``var/work``): digests are keyed ``/inputs/…``, not host paths."""
    monkeypatch.chdir(tmp_path)
    broker = await start_broker(work_dir="var/work")
    uuid = await accept_first(broker, checksum_request(file_server))
    assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    log = await (await broker.get(f"/sessions/{uuid}/log")).json()
    assert digests_of(log) == expected_digests()
    session = log["session"]
    assert session["exit_code"] == 0
    start, end = parse_instant(session["start_time"]), parse_instant(session["end_time"])
    assert start <= end
    # The schedule says when preparation really began.
    assert session["schedule"]["preparing"]["start"] == session["start_time"]


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
    assert digests_of(log) == expected_digests()
    # staging reported its progress into the data items' records
    progress = [
        message["message"]
        for item in log["session"]["data"]
        for message in item["meta"]["messages"]
        if message["kind"] == "urn:talicada:info:progress"
    ]
    assert sorted(progress) == sorted(
        f"{len(body)} of {len(body)} bytes staged" for body in FILES.values()
    )
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


async def test_a_session_accepted_for_later_waits_until_its_start(
    start_broker: BrokerFactory,
) -> None:
    # The broker's clock is moved by hand: no waiting for the start, no flaking.
    clock = ShiftedClock()
    broker = await start_broker(clock=clock)
    # The local platform prepares a ping in 1 s, so preparation starts in 10 s.
    start = clock() + timedelta(seconds=11)
    request = task("ping")
    request["schedule"]["requested"]["start"] = f"{format_instant(start)}/PT1M"
    uuid = await accept_first(broker, request)
    assert await wait_for_phase(broker, uuid, {"WAITING"}, limit=5) == "WAITING"
    offer = await (await broker.get(f"/sessions/{uuid}")).json()
    preparing = parse_instant(offer["schedule"]["preparing"]["start"]).timestamp()
    # (scheduled from the requested start, however long the machine took to get here)
    assert start.timestamp() - 3 <= preparing < start.timestamp()
    # When its clock reads a moment before the preparation start, it still waits
    clock.move_to(preparing - 0.5)
    await asyncio.sleep(0.5)  # a couple of the timer loop's 200 ms polls
    assert (await (await broker.get(f"/sessions/{uuid}")).json())["phase"] == "WAITING"
    # and at the start it prepares, runs and completes
    clock.move_to(preparing)
    assert await wait_for_phase(broker, uuid, {"COMPLETED"}) == "COMPLETED"
    log = await (await broker.get(f"/sessions/{uuid}/log")).json()
    left = next(item for item in log["history"] if item.get("from") == "WAITING")
    assert parse_instant(left["time"]).timestamp() >= preparing
