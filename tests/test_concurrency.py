"""Many clients at once never overbook a platform (issue 2, must-show 3).

Runs over both stores; with Redis, the clients are spread over two broker
replicas sharing one Redis, as in production.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from talicada.broker.store import Store
from talicada.schema.iso8601 import format_instant
from talicada.settings import PlatformSettings
from tests.conftest import ClientFactory
from tests.replicas import Client, replicas_of
from tests.test_calendar import model_usage

TINY = PlatformSettings(name="tiny", cores=4, memory=8)
CLIENTS = 50
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}


@pytest_asyncio.fixture
async def replicas(
    store: Store, make_client: ClientFactory, redis_url: str
) -> AsyncIterator[list[Client]]:
    """One broker, plus a second replica on its own connection when Redis is shared."""
    async with replicas_of(TINY, store, make_client, redis_url) as clients:
        yield clients


def overlapping_request() -> dict[str, Any]:
    from datetime import UTC, datetime

    start = format_instant(datetime.now(UTC).replace(microsecond=0))
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": 1, "max": 2}, "memory": {"min": 1, "max": 3}},
        "schedule": {"requested": {"duration": "PT10M", "start": f"{start}/PT40M"}},
    }


async def one_client(client: Client, rng: random.Random) -> tuple[str | None, str | None]:
    """Ask for offers and try to accept them in random order until one sticks."""
    response = await client.post("/requests", json=overlapping_request())
    assert response.status == 200, await response.text()
    body = await response.json()
    offers = [offer["meta"]["uuid"] for offer in body["offers"]]
    rng.shuffle(offers)
    for uuid in offers:
        update = await client.post(f"/sessions/{uuid}", json=ACCEPT)
        assert update.status in (200, 409), await update.text()
        if update.status == 200:
            return body["meta"]["uuid"], uuid
    return body["meta"]["uuid"], None


async def test_fifty_concurrent_clients_never_overbook_a_small_platform(
    store: Store, replicas: list[Client]
) -> None:
    rng = random.Random(2)
    # When 50 clients request and accept overlapping offers at once
    results = await asyncio.gather(
        *(one_client(replicas[i % len(replicas)], rng) for i in range(CLIENTS))
    )
    accepted = [uuid for _, uuid in results if uuid]
    assert len(accepted) >= 2, "the run must actually book something"

    # Then no slot of the calendar is ever over capacity, counting every booking
    # and each offer set's pending holds as their envelope
    entries = await store.entries("tiny")
    assert {uuid for uuid, state, _ in entries if state == "B"} == set(accepted)
    first = min(entry.first for _, _, entry in entries)
    last = max(entry.last for _, _, entry in entries)
    cores, memory = model_usage(entries, first, last)
    assert max(cores) <= TINY.cores
    assert max(memory) <= TINY.memory

    # And the calendar's counters agree with its entries
    usage = await store.usage("tiny", first, last)
    assert usage.per_slot(first, last) == (cores, memory)

    # And every offer set has at most one accepted offer
    for offerset, _ in results:
        response = await replicas[0].get(f"/offersets/{offerset}")
        phases = [offer["phase"] for offer in (await response.json())["offers"]]
        assert phases.count("ACCEPTED") <= 1
