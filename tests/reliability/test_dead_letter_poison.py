"""A poison message on a real worker's Redis stream: dead-lettered after N
deliveries, its component FAILED with the reason, and the stream moves on."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from talicada.events.envelope import StageBody, StageData
from talicada.events.redis_bus import RedisBus
from talicada.events.streams import PREPARE_DATA, stream
from talicada.schema.iso8601 import format_instant
from talicada.schema.model import SimpleDataResource
from tests.lifecycle_support import checksum_request
from tests.reliability.conftest import recorded
from tests.reliability.support import (
    Deployment,
    Figures,
    delay,
    session_log,
    submit,
    wait_terminal,
)

DELIVERIES = 5  # the default max_deliveries


async def test_a_poison_message_is_dead_lettered_after_n_deliveries_and_blocks_nothing(
    deployment: Deployment, file_server: str
) -> None:
    began = time.monotonic()
    await deployment.start_all()
    bus = await RedisBus.connect(deployment.redis_url, prefix=deployment.prefix)
    try:
        async with deployment.client() as http:
            # Given a session waiting for its start, whose data item the poison is about
            later = checksum_request(file_server)
            start = datetime.now(UTC) + timedelta(minutes=10)
            later["schedule"]["requested"]["start"] = f"{format_instant(start)}/PT1M"
            waiting = await submit(http, deployment.url, later)
            async with http.get(f"{deployment.url}/sessions/{waiting}") as response:
                data = (await response.json())["data"][0]["meta"]["uuid"]
            # When a staging event that fails on every delivery is on the stager's
            # stream (its platform is one no worker knows), with an undecodable entry
            body = StageBody(data=SimpleDataResource(location="http://x/y"), storage="x")
            poison = StageData.new(waiting, component=data, platform="nonsense", body=body)
            poisoned = time.monotonic()
            await bus.publish(stream(PREPARE_DATA, "local"), poison)
            await bus.client.xadd(
                bus.keys.stream(stream(PREPARE_DATA, "local")), {"event": b"\xff not json"}
            )
            # and healthy sessions follow on the same stream
            healthy = [await submit(http, deployment.url, checksum_request(file_server))]
            healthy.append(await submit(http, deployment.url, delay(1)))
            # Then both healthy sessions complete
            final = await wait_terminal(http, deployment.url, healthy, limit=60)
            assert final == dict.fromkeys(healthy, "COMPLETED")
            # and the poison is dead-lettered after exactly N deliveries
            letters = []
            while time.monotonic() - poisoned < 60:
                letters = await bus.dead_letters()
                if any(letter.event and letter.event.id == poison.id for letter in letters):
                    break
                await asyncio.sleep(0.1)
            dead = time.monotonic() - poisoned
            (letter,) = [item for item in letters if item.event and item.event.id == poison.id]
            assert letter.deliveries == DELIVERIES
            assert "nonsense" in letter.reason
            assert any(item.event is None and "undecodable" in item.reason for item in letters)
            # and its component FAILED with the reason, failing its session
            final.update(await wait_terminal(http, deployment.url, [waiting], limit=30))
            assert final[waiting] == "FAILED"
            log = await session_log(http, deployment.url, waiting)
    finally:
        await bus.close()
    reasons = [m["message"] for m in log["session"]["data"][0]["meta"]["messages"]]
    assert any(f"gave up after {DELIVERIES} deliveries" in reason for reason in reasons), reasons
    recorded(
        Figures(
            scenario="poison message",
            submitted=len(healthy) + 1,
            completed=sum(final[uuid] == "COMPLETED" for uuid in healthy),
            lost=sum(final[uuid] != "COMPLETED" for uuid in healthy),
            duplicated=0,
            recover_s=dead,
            seconds=time.monotonic() - began,
            notes=f"dead-lettered after {DELIVERIES} deliveries; its session FAILED (reason kept)",
        )
    )
