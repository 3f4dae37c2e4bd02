"""Federation: brokers on loopback behind an aggregator, and aggregators stacked.

Every broker here is a real HTTP server on an ephemeral loopback port with
its own store and its workers running in-process; the aggregator reaches the
sites over TCP exactly as it would across the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from talicada.settings import PlatformSettings
from tests.federation_support import Client, Federation, Running, delay, ping, sse
from tests.lifecycle_support import ACCEPT

#: A platform that runs the ping task and nothing else.
PING_ONLY = PlatformSettings(name="local", executables=["ping"])
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "REJECTED"}


@pytest_asyncio.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    running = Federation(tmp_path)
    yield running
    await running.close()


async def owner_of(uuid: str, sites: Sequence[Running]) -> str:
    """The name of the site that holds session ``uuid``."""
    for site in sites:
        response = await site.client.get(f"/sessions/{uuid}")
        if response.status == 200:
            return site.name
    raise AssertionError(f"no site has {uuid}")


async def offer_from(name: str, body: dict[str, Any], sites: Sequence[Running]) -> str:
    """The uuid of the first offer in ``body`` that site ``name`` made."""
    for offer in body["offers"]:
        uuid: str = offer["meta"]["uuid"]
        if await owner_of(uuid, sites) == name:
            return uuid
    raise AssertionError(f"no offer from {name}")


async def offers(client: Client, request: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await client.post("/requests", json=request, headers=headers)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_final(client: Client, uuid: str, limit: float = 30) -> list[str]:
    """Long-poll ``client`` until the session ends; every phase seen on the way."""
    deadline = time.monotonic() + limit
    seen: list[str] = []
    phase = ""
    while time.monotonic() < deadline:
        response = await client.get(f"/sessions/{uuid}", params={"wait": "5", "phase": phase})
        assert response.status == 200, await response.text()
        phase = (await response.json())["phase"]
        if not seen or seen[-1] != phase:
            seen.append(phase)
        if phase in FINAL:
            return seen
    raise AssertionError(f"session {uuid} still {phase}")


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = body["meta"].get("messages", [])
    return found


# -- must show: three sites behind one aggregator -----------------------------------------------


async def test_one_request_gets_offers_from_all_three_sites(federation: Federation) -> None:
    """A request to the aggregator is answered with offers made by each of three sites,
    each offer's URL pointing at the aggregator."""
    sites = [await federation.site(name) for name in ("a", "b", "c")]
    aggregator = await federation.aggregator("agg", sites)
    body = await offers(aggregator.client, ping())
    assert body["result"] == "YES"
    assert [site.requests() for site in sites] == [1, 1, 1]
    owners = set()
    for offer in body["offers"]:
        assert offer["meta"]["url"] == f"{aggregator.url}/sessions/{offer['meta']['uuid']}"
        owners.add(await owner_of(offer["meta"]["uuid"], sites))
    assert owners == {"a", "b", "c"}
    assert body["meta"]["url"].startswith(f"{aggregator.url}/offersets/")
    again = await aggregator.client.get(f"/offersets/{body['meta']['uuid']}")
    assert [o["meta"]["uuid"] for o in (await again.json())["offers"]] == [
        o["meta"]["uuid"] for o in body["offers"]
    ]


async def test_an_accepted_offer_runs_to_completed_on_its_site_while_the_aggregator_follows(
    federation: Federation,
) -> None:
    """Accepting a site's offer at the aggregator runs the session on that site; the
    aggregator's GET, long poll and SSE follow it to COMPLETED, and the siblings at the
    other sites are rejected."""
    sites = [await federation.site(name) for name in ("a", "b", "c")]
    aggregator = await federation.aggregator("agg", sites)
    body = await offers(aggregator.client, delay("PT1S"))
    chosen = await offer_from("b", body, sites)
    site_b = sites[1]

    # When the offer is accepted at the aggregator and watched there three ways
    accepted = await aggregator.client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert accepted.status == 200, await accepted.text()
    assert (await accepted.json())["phase"] == "ACCEPTED"
    events: list[dict[str, Any]] = []
    stream = asyncio.create_task(sse(aggregator.client, f"/sessions/{chosen}/events", events))
    polled = await wait_final(aggregator.client, chosen)
    await asyncio.wait_for(stream, timeout=30)

    # Then it ran on site b, and every view at the aggregator saw the same ending
    assert polled[-1] == "COMPLETED", polled
    assert len(polled) > 1, polled  # the long poll returned on changes, not only at the end
    on_site = await (await site_b.client.get(f"/sessions/{chosen}")).json()
    assert on_site["phase"] == "COMPLETED"
    got = await (await aggregator.client.get(f"/sessions/{chosen}")).json()
    assert got["phase"] == "COMPLETED"
    assert got["meta"]["url"] == f"{aggregator.url}/sessions/{chosen}"
    site_log = await (await site_b.client.get(f"/sessions/{chosen}/log")).json()
    assert [(e["from"], e["to"]) for e in events] == [
        (e["from"], e["to"]) for e in site_log["history"]
    ]
    assert [e["id"] for e in events] == list(range(len(events)))
    assert [e["to"] for e in events if "component" not in e][-1] == "COMPLETED"
    # The siblings at the other sites were rejected there, freeing what they held.
    for offer in body["offers"]:
        uuid = offer["meta"]["uuid"]
        if uuid != chosen and await owner_of(uuid, sites) != "b":
            for _ in range(50):
                phase = (await (await aggregator.client.get(f"/sessions/{uuid}")).json())["phase"]
                if phase == "REJECTED":
                    break
                await asyncio.sleep(0.1)
            assert phase == "REJECTED"


async def test_with_one_site_stopped_the_answer_arrives_in_time_naming_it(
    federation: Federation,
) -> None:
    """A stopped site and a slow one cost no more than the per-site timeout: the answer
    carries the other sites' offers and a message naming each missing site."""
    sites = [
        await federation.site(name, federation={"fault_injection": True})
        for name in ("a", "b", "c")
    ]
    aggregator = await federation.aggregator(
        "agg", sites, federation={"timeout": 1.0, "fault_injection": True}
    )
    await federation.stop(sites[2])

    started = time.monotonic()
    body = await offers(aggregator.client, ping())
    elapsed = time.monotonic() - started
    assert body["result"] == "YES"
    assert elapsed < 1.0
    unavailable = [m for m in messages(body) if m["kind"] == "urn:talicada:error:site-unavailable"]
    assert [m["values"]["site"] for m in unavailable] == ["c"]
    assert "site c gave no answer" in unavailable[0]["message"]
    assert {await owner_of(o["meta"]["uuid"], sites[:2]) for o in body["offers"]} == {"a", "b"}

    # A slow site (told by header to answer 5 s late) is given up on after 1 s.
    started = time.monotonic()
    body = await offers(aggregator.client, ping(), **{"X-Talicada-Fault": "delay=5; site=b"})
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0
    unavailable = [m for m in messages(body) if m["kind"] == "urn:talicada:error:site-unavailable"]
    assert sorted(m["values"]["site"] for m in unavailable) == ["b", "c"]
    assert any("within 1 s" in m["message"] for m in unavailable)
    assert {await owner_of(o["meta"]["uuid"], sites[:1]) for o in body["offers"]} == {"a"}

    # A site answering 5xx is named too, and the request as a whole still succeeds.
    body = await offers(aggregator.client, ping(), **{"X-Talicada-Fault": "status=503; site=a"})
    unavailable = [m for m in messages(body) if m["kind"] == "urn:talicada:error:site-unavailable"]
    assert any("HTTP 503" in m["message"] and m["values"]["site"] == "a" for m in unavailable)


class MovableClock:
    """A wall clock that a test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_a_site_that_cannot_run_the_kind_is_not_asked_until_its_capabilities_expire(
    federation: Federation,
) -> None:
    """A site whose capabilities rule a request out is not sent it, however often it is
    asked, until the cached capabilities expire and are read again."""
    a = await federation.site("a")
    c = await federation.site("c", platforms=[PING_ONLY], federation={"capabilities_ttl": 120})
    clock = MovableClock()
    aggregator = await federation.aggregator("agg", [a, c], clock=clock)

    for _ in range(3):
        body = await offers(aggregator.client, delay())
        assert body["result"] == "YES"
    assert c.requests() == 0
    assert c.requests("/capabilities", "GET") == 1
    assert a.requests() == 3
    assert aggregator.site_outcomes("c") == {"skipped-capabilities": 3}

    # A request it can meet is sent to it.
    await offers(aggregator.client, ping())
    assert c.requests() == 1

    # The site said its capabilities hold 120 s: after that they are read again.
    clock.offset = timedelta(seconds=121)
    body = await offers(aggregator.client, delay())
    assert c.requests("/capabilities", "GET") == 2
    assert c.requests() == 1

    # When no site can, the NO says why, naming the site's platform.
    c_only = await federation.aggregator("agg-c", [c])
    body = await offers(c_only.client, delay())
    assert body["result"] == "NO"
    assert c.requests() == 1
    reasons = messages(body)
    assert reasons[0]["kind"] == "urn:talicada:error:unsupported-kind"
    # Kinds are named as the client spells them, so it can send one back.
    delay_uri = "urn:talicada:kinds:executable:delay-1.0"
    assert f"platform c/local cannot run executable kind '{delay_uri}'" in reasons[0]["message"]


async def test_a_sites_no_is_not_asked_again_while_its_ttl_lasts(
    federation: Federation,
) -> None:
    """A site that answered NO (no capacity, a short TTL) is not sent the same request
    again until that TTL has passed; the aggregator's own NO carries the TTL."""
    small = PlatformSettings(name="local", cores=1, memory=1)
    c = await federation.site("c", platforms=[small])
    clock = MovableClock()
    aggregator = await federation.aggregator("agg", [c], clock=clock)
    long_task = delay("PT1S")
    long_task["schedule"]["requested"]["duration"] = "PT23H"
    # Given c's only core held for the next two days by someone else's offers
    held = await offers(c.client, long_task)
    assert held["result"] == "YES"

    # When the aggregator asks c for the same twice
    first = await aggregator.client.post("/requests", json=long_task)
    body = await first.json()
    assert body["result"] == "NO"
    # (the core is held by pending offers, not booked: the NO says which)
    assert [m["kind"] for m in messages(body)] == ["urn:talicada:error:no-capacity-held"]
    assert body["ttl"] == "PT30S"
    assert first.headers["Cache-Control"] == "private, max-age=30"
    second = await offers(aggregator.client, long_task)

    # Then c heard it once, and the second NO came from the cache, counting down
    assert second["result"] == "NO"
    assert c.requests() == 2  # the direct request, and the aggregator's first
    assert aggregator.site_outcomes("c") == {"no": 1, "skipped-cached": 1}
    clock.offset = timedelta(seconds=31)
    await offers(aggregator.client, long_task)
    assert c.requests() == 3


# -- must show: stacked aggregators ------------------------------------------------------------


async def test_two_stacked_aggregators_over_two_sites_run_a_session_to_completed(
    federation: Federation,
) -> None:
    """An aggregator over an aggregator over two sites: offers from both sites reach the
    client, and an accepted one runs to COMPLETED, followed at the top."""
    sites = [await federation.site(name) for name in ("a", "b")]
    lower = await federation.aggregator("lower", sites)
    upper = await federation.aggregator("upper", [lower])

    body = await offers(upper.client, delay("PT1S"))
    assert body["result"] == "YES"
    assert {await owner_of(o["meta"]["uuid"], sites) for o in body["offers"]} == {"a", "b"}
    uuid = body["offers"][0]["meta"]["uuid"]
    assert body["offers"][0]["meta"]["url"] == f"{upper.url}/sessions/{uuid}"

    accepted = await upper.client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert accepted.status == 200, await accepted.text()
    events: list[dict[str, Any]] = []
    stream = asyncio.create_task(sse(upper.client, f"/sessions/{uuid}/events", events))
    seen = await wait_final(upper.client, uuid)
    await asyncio.wait_for(stream, timeout=30)
    assert seen[-1] == "COMPLETED", seen
    owner = sites[0] if await owner_of(uuid, sites) == "a" else sites[1]
    assert (await (await owner.client.get(f"/sessions/{uuid}")).json())["phase"] == "COMPLETED"
    assert [e["to"] for e in events if "component" not in e][-1] == "COMPLETED"
    # The upper aggregator sees the lower one's capabilities, which list the sites'.
    capabilities = await (await upper.client.get("/capabilities")).json()
    (entry,) = capabilities["platforms"]
    assert entry["name"] == "lower"
    assert entry["reachable"] is True
    assert sorted(p["name"] for p in entry["platforms"]) == ["a", "b"]
