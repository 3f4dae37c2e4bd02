"""Offers expire on time, not only when someone looks (issue 2, must-show 4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.settings import PlatformSettings
from tests.conftest import ClientFactory
from tests.lifecycle_support import ShiftedClock

ONE = PlatformSettings(name="one", cores=2, memory=4)


def whole_platform_soon() -> dict[str, Any]:
    """A request only one window can satisfy: all cores, starting in the next 2 minutes."""
    start = format_instant(datetime.now(UTC).replace(microsecond=0))
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": 2, "max": 2}},
        "schedule": {"requested": {"duration": "PT10M", "start": f"{start}/PT2M"}},
    }


async def test_an_unaccepted_offer_expires_at_its_expiry_and_is_offered_again(
    make_client: ClientFactory,
) -> None:
    # The broker's clock is moved by hand, so the test waits for no expiry and
    # cannot flake on a busy machine; only the timer loop's polls take real time.
    clock = ShiftedClock()
    client = await make_client(platforms=[ONE], offer_ttl=60, max_offers=1, clock=clock)
    # Given an offer holding the whole platform
    first = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert first["result"] == "YES"
    offer = first["offers"][0]
    expires = parse_instant(offer["expires"]).timestamp()
    # and a second client who is told NO while it is held (held, not booked)
    second = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert second["result"] == "NO"
    kinds = {m["kind"] for m in second["meta"]["messages"]}
    assert kinds == {"urn:talicada:error:no-capacity-held"}

    async def phase() -> str:
        answer = await client.get(f"/sessions/{offer['meta']['uuid']}")
        return str((await answer.json())["phase"])

    # When nobody accepts it: a moment before its expiry it is still OFFERED
    clock.move_to(expires - 0.5)
    await asyncio.sleep(0.5)  # a couple of the timer loop's 200 ms polls
    assert await phase() == "OFFERED"
    # and once its expiry passes it becomes EXPIRED at the next poll, unasked
    clock.move_to(expires + 0.01)
    for _ in range(200):  # at most 10 s, on the busiest machine
        if await phase() != "OFFERED":
            break
        await asyncio.sleep(0.05)
    assert await phase() == "EXPIRED"

    # Then its capacity is offered again
    third = await (await client.post("/requests", json=whole_platform_soon())).json()
    assert third["result"] == "YES"
    assert third["offers"][0]["compute"]["cores"] == {"min": 2, "max": 2}
