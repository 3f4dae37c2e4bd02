"""A poison message ends in the dead-letter stream; its component fails; the stream moves on."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from talicada.broker.keys import BROKER
from talicada.events.envelope import StageBody, StageData
from talicada.events.streams import PREPARE_DATA, stream
from talicada.schema.iso8601 import format_instant
from talicada.schema.model import SimpleDataResource
from tests.conftest import BrokerFactory
from tests.lifecycle_support import accept_first, checksum_request, wait_for_phase


async def test_a_message_that_always_fails_is_dead_lettered_and_the_next_one_runs(
    start_broker: BrokerFactory, file_server: str
) -> None:
    client = await start_broker(retry_base=0.05, max_deliveries=3)
    bus = client.app[BROKER].store.bus
    # Given a session waiting for its start, with two data items
    later = checksum_request(file_server)
    start = datetime.now(UTC) + timedelta(minutes=5)
    later["schedule"]["requested"]["start"] = f"{format_instant(start)}/PT1M"
    waiting = await accept_first(client, later)
    await wait_for_phase(client, waiting, {"WAITING"})
    session = await (await client.get(f"/sessions/{waiting}")).json()
    data = session["data"][0]["meta"]["uuid"]

    # When a staging event that makes the worker raise every time is published
    # (its platform is one no worker knows, so handling it raises every time)
    body = StageBody(data=SimpleDataResource(location="http://x/y"), storage="x")
    poison = StageData.new(waiting, component=data, platform="nonsense", body=body)
    await bus.publish(stream(PREPARE_DATA, "local"), poison)
    # and a healthy session follows it on the same stream
    healthy = await accept_first(client, checksum_request(file_server))

    # Then the poison ends in the dead-letter stream after exactly 3 deliveries
    deadline = time.monotonic() + 15
    letters = []
    while time.monotonic() < deadline:
        letters = [d for d in await bus.dead_letters() if d.event and d.event.id == poison.id]
        if letters:
            break
        await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter.deliveries == 3
    assert letter.stream.endswith(stream(PREPARE_DATA, "local"))
    assert "nonsense" in letter.reason
    # and the component it was about FAILED, with the reason, failing its session
    assert await wait_for_phase(client, waiting, {"FAILED"}) == "FAILED"
    failed = await (await client.get(f"/sessions/{waiting}")).json()
    reasons = [m["message"] for m in failed["data"][0]["meta"]["messages"]]
    assert any("gave up after 3 deliveries" in reason for reason in reasons)
    # and the next message on that stream was processed
    assert await wait_for_phase(client, healthy, {"COMPLETED", "FAILED"}) == "COMPLETED"
