"""Federation: three brokers on loopback behind one aggregator, and stacked aggregators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from talicada.settings import PlatformSettings
from tests.federation_support import Federation, delay, ping, sse
from tests.lifecycle_support import ACCEPT

PING_ONLY = PlatformSettings(name="local", executables=["ping"])


@pytest_asyncio.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    running = Federation(tmp_path)
    yield running
    await running.close()


async def test_one_request_gets_offers_from_all_three_sites(federation: Federation) -> None:
    """A ping request to the aggregator comes back with offers made by each of three sites."""
    sites = [await federation.site(name) for name in ("a", "b", "c")]
    aggregator = await federation.aggregator("agg", sites)
    response = await aggregator.client.post("/requests", json=ping())
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["result"] == "YES"
    for site in sites:
        assert site.requests() == 1
    owners = set()
    for offer in body["offers"]:
        assert offer["meta"]["url"].startswith(aggregator.url)
        owners.add(await owner_of(offer["meta"]["uuid"], sites))
    assert owners == {"a", "b", "c"}


async def owner_of(uuid: str, sites: list) -> str:  # type: ignore[type-arg]
    for site in sites:
        response = await site.client.get(f"/sessions/{uuid}")
        if response.status == 200:
            return str(site.name)
    raise AssertionError(f"no site has {uuid}")
