"""Offers expire on time, not only when someone looks (issue 2, must-show 4)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.settings import PlatformSettings
from tests.conftest import ClientFactory

ONE = PlatformSettings(name="one", cores=2, memory=4)


def whole_platform_soon() -> dict[str, Any]:
    """A request only one window can satisfy: all cores, starting in the next 2 minutes."""
    start = format_instant(datetime.now(UTC).replace(microsecond=0))
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": 2, "max": 2}},
        "schedule": {"requested": {"duration": "PT10M", "start": f"{start}/PT2M"}},
    }


async def test_an_unaccepted_offer_expires_within_a_second_and_is_offered_again(
    make_client: ClientFactory,
) -> None:
    client = await make_client(platforms=[ONE], offer_ttl=1.5, max_offers=1)
    # Given an offer holding the whole platform
    first = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert first["result"] == "YES"
    offer = first["offers"][0]
    expires = parse_instant(offer["expires"]).timestamp()
    # and a second client who is told NO while it is held
    second = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert second["result"] == "NO"
    assert any("no-capacity" in m["kind"] for m in second["meta"]["messages"])

    # When nobody accepts it, it becomes EXPIRED within a second of its expiry
    phase = "OFFERED"
    while phase == "OFFERED" and time.time() < expires + 3:
        await asyncio.sleep(0.05)
        phase = (await (await client.get(f"/sessions/{offer['meta']['uuid']}")).json())["phase"]
    seen = time.time()
    assert phase == "EXPIRED"
    assert seen <= expires + 1.0

    # Then its capacity is offered again
    third = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert third["result"] == "YES"
    assert third["offers"][0]["compute"]["cores"] == {"min": 2, "max": 2}
