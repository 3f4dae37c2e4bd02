"""Federation: identity, dialects, merging, and calls forwarded to the owning site."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml

from talicada.broker.keys import BROKER
from talicada.broker.store.redis import RedisStore
from talicada.federation.config import RemotePlatform
from talicada.federation.web import AGGREGATOR
from talicada.settings import PlatformSettings
from tests.federation_support import Federation, Running, delay, ping, sse
from tests.lifecycle_support import ACCEPT, CANCEL
from tests.test_federation import offer_from, offers, owner_of, wait_final

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
SERVICE = "aggregator-service-token-0123"


@pytest_asyncio.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    running = Federation(tmp_path)
    yield running
    await running.close()


def tokens(tmp_path: Path, name: str, lines: str) -> str:
    path = tmp_path / f"{name}.tokens"
    path.write_text(lines)
    return str(path)


async def phase_at(site: Running, uuid: str, **headers: str) -> str:
    response = await site.client.get(f"/sessions/{uuid}", headers=headers)
    assert response.status == 200, await response.text()
    return str((await response.json())["phase"])


async def eventually_phase(site: Running, uuid: str, phase: str, **headers: str) -> None:
    for _ in range(100):
        if await phase_at(site, uuid, **headers) == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{uuid} never {phase} at {site.name}")


# -- identity ----------------------------------------------------------------------------------


async def test_the_clients_token_is_passed_through_to_the_site(
    federation: Federation, tmp_path: Path
) -> None:
    """Without a service token the site sees the client's own token: the session is the
    client's at the site, and another client's token finds nothing at either level."""
    lines = f"{ALICE} alice\n{BOB} bob\n"
    site = await federation.site("a", auth_tokens_file=tokens(tmp_path, "a", lines))
    aggregator = await federation.aggregator(
        "agg", [site], auth_tokens_file=tokens(tmp_path, "agg", lines)
    )
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"Authorization": f"Bearer {BOB}"}
    assert (await aggregator.client.post("/requests", json=ping())).status == 401
    body = await offers(aggregator.client, ping(), **alice)
    uuid = body["offers"][0]["meta"]["uuid"]
    assert await phase_at(site, uuid, **alice) == "OFFERED"
    assert (await site.client.get(f"/sessions/{uuid}", headers=bob)).status == 404
    assert (await aggregator.client.get(f"/sessions/{uuid}", headers=bob)).status == 404
    refused = await aggregator.client.post(f"/sessions/{uuid}", json=ACCEPT, headers=bob)
    assert refused.status == 404
    assert await phase_at(site, uuid, **alice) == "OFFERED"


async def test_a_service_token_carries_the_clients_principal_to_a_site_that_trusts_it(
    federation: Federation, tmp_path: Path
) -> None:
    """With a service token the site runs the session as the principal the aggregator
    names, because it trusts the aggregator; an untrusted caller naming one gets 403."""
    site = await federation.site(
        "a",
        auth_tokens_file=tokens(tmp_path, "a", f"{SERVICE} aggregator\n{ALICE} alice\n"),
        federation={"trusted": ["aggregator"]},
    )
    service = tmp_path / "service.token"
    service.write_text(SERVICE + "\n")
    remote = RemotePlatform(name="a", remote=site.url, token_file=str(service))
    aggregator = await federation.aggregator(
        "agg", [remote], auth_tokens_file=tokens(tmp_path, "agg", f"{BOB} bob\n")
    )
    body = await offers(aggregator.client, ping(), Authorization=f"Bearer {BOB}")
    uuid = body["offers"][0]["meta"]["uuid"]
    (stored,) = await site.app[BROKER].store.sessions([uuid])
    assert stored is not None
    assert stored.record.owner == "bob"
    accepted = await aggregator.client.post(
        f"/sessions/{uuid}", json=ACCEPT, headers={"Authorization": f"Bearer {BOB}"}
    )
    assert accepted.status == 200, await accepted.text()

    # Alice is no aggregator: naming another principal is refused, and changes nothing.
    response = await site.client.get(
        f"/sessions/{uuid}",
        headers={"Authorization": f"Bearer {ALICE}", "X-Talicada-Principal": "bob"},
    )
    assert response.status == 403
    assert "may not act for another principal" in (await response.text())


# -- dialects and media types ------------------------------------------------------------------


async def test_the_answer_is_in_the_clients_dialect_and_media_type(federation: Federation) -> None:
    """A seed-2025 request in YAML gets seed-2025 offers (``type``, ``href``) pointing at
    the aggregator, in YAML when YAML is asked for."""
    site = await federation.site("a")
    aggregator = await federation.aggregator("agg", [site])
    request = {
        "name": "seed ping",
        "executable": {"type": "urn:talicada:kinds:executable:ping-1.0"},
    }
    response = await aggregator.client.post(
        "/requests",
        data=yaml.safe_dump(request),
        headers={"Content-Type": "application/yaml", "Accept": "application/yaml"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("application/yaml")
    body = yaml.safe_load(await response.text())
    assert body["href"] == f"{aggregator.url}/offersets/{body['uuid']}"
    offer = body["offers"][0]
    assert offer["href"] == f"{aggregator.url}/sessions/{offer['uuid']}"
    assert offer["executable"]["type"] == "urn:talicada:kinds:executable:ping-1.0"
    assert "meta" not in offer
    assert int(response.headers["Cache-Control"].rpartition("max-age=")[2]) > 0
    assert body["ttl"].startswith("PT")


# -- merging -----------------------------------------------------------------------------------


async def test_only_the_best_offer_of_each_site_is_kept_and_the_rest_freed(
    federation: Federation, redis_url: str
) -> None:
    """With offers_per_site = 1 each site contributes its earliest offer; the others are
    rejected at the site so their capacity is free again (the index here is in Redis)."""
    sites = [await federation.site(name) for name in ("a", "b")]
    prefix = f"talicada-test-{uuidlib.uuid4().hex}"
    store = await RedisStore.connect(redis_url, prefix=prefix)
    try:
        aggregator = await federation.aggregator(
            "agg", sites, store=store, federation={"offers_per_site": 1}
        )
        body = await offers(aggregator.client, ping())
        assert len(body["offers"]) == 2
        assert {await owner_of(o["meta"]["uuid"], sites) for o in body["offers"]} == {"a", "b"}
        kept = {o["meta"]["uuid"] for o in body["offers"]}
        for site in sites:
            sessions, _ = await site.app[BROKER].list_sessions("anonymous")
            others = [s.record.uuid for s in sessions if s.record.uuid not in kept]
            assert len(others) == 3
            for uuid in others:
                await eventually_phase(site, uuid, "REJECTED")
        assert await store.client.exists(f"{prefix}:federation:offerset:{{{body['meta']['uuid']}}}")
    finally:
        await federation.close()
        keys = [key async for key in store.client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await store.client.unlink(*keys)
        await store.close()


async def test_a_second_offer_of_one_offer_set_cannot_be_accepted_at_another_site(
    federation: Federation,
) -> None:
    """Once one site's offer is accepted, accepting another site's offer of the same set is
    409 offer-taken, and that other offer never starts."""
    sites = [await federation.site(name) for name in ("a", "b")]
    aggregator = await federation.aggregator("agg", sites)
    body = await offers(aggregator.client, delay("PT30S"))
    first, second = await offer_from("a", body, sites), await offer_from("b", body, sites)
    assert (await aggregator.client.post(f"/sessions/{first}", json=ACCEPT)).status == 200
    refused = await aggregator.client.post(f"/sessions/{second}", json=ACCEPT)
    assert refused.status == 409
    assert (await refused.json())["messages"][0]["kind"] == "urn:talicada:error:offer-taken"
    await eventually_phase(sites[1], second, "REJECTED")
    cancelled = await aggregator.client.post(f"/sessions/{first}", json=CANCEL)
    assert cancelled.status == 200, await cancelled.text()
    assert (await wait_final(aggregator.client, first))[-1] == "CANCELLED"
    assert await phase_at(sites[0], first) == "CANCELLED"


async def test_extend_is_forwarded_and_refusals_keep_the_sites_status(
    federation: Federation,
) -> None:
    """Extending a window changes it at the site; an update the site refuses comes back
    with the site's status and message."""
    site = await federation.site("a")
    aggregator = await federation.aggregator("agg", [site])
    body = await offers(aggregator.client, delay("PT30S"))
    uuid = body["offers"][0]["meta"]["uuid"]
    extend = {
        "kind": "uri:string-value-update",
        "path": "schedule.available.duration",
        "value": "PT5M",
    }
    response = await aggregator.client.post(f"/sessions/{uuid}", json=extend)
    assert response.status == 200, await response.text()
    at_site = await (await site.client.get(f"/sessions/{uuid}")).json()
    assert at_site["schedule"]["available"]["duration"] == "PT5M"
    rejected = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
    assert (await aggregator.client.post(f"/sessions/{uuid}", json=rejected)).status == 200
    again = await aggregator.client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert again.status == 409
    assert "REJECTED" in (await again.json())["messages"][0]["message"]
    bad = await aggregator.client.post(f"/sessions/{uuid}", json={"kind": "nonsense"})
    assert bad.status == 400


# -- following ---------------------------------------------------------------------------------


async def test_a_site_whose_events_do_not_stream_is_followed_by_long_poll(
    federation: Federation,
) -> None:
    """When the site refuses its event stream (501, injected), the aggregator follows the
    session by long poll and log, and its own SSE clients still get every transition."""
    site = await federation.site("a", federation={"fault_injection": True})
    aggregator = await federation.aggregator("agg", [site], federation={"fault_injection": True})
    body = await offers(aggregator.client, delay("PT1S"))
    uuid = body["offers"][0]["meta"]["uuid"]
    no_stream = {"X-Talicada-Fault": "status=501; path=/sessions/*/events; site=a"}
    accepted = await aggregator.client.post(f"/sessions/{uuid}", json=ACCEPT, headers=no_stream)
    assert accepted.status == 200, await accepted.text()
    events: list[dict[str, Any]] = []
    await asyncio.wait_for(sse(aggregator.client, f"/sessions/{uuid}/events", events), 30)
    view = aggregator.app[AGGREGATOR].views.get(uuid)
    assert view is not None
    assert view.transport == "poll"
    log = await (await site.client.get(f"/sessions/{uuid}/log")).json()
    assert [(e["from"], e["to"]) for e in events] == [(e["from"], e["to"]) for e in log["history"]]
    assert [e["to"] for e in events if "component" not in e][-1] == "COMPLETED"


async def test_an_aggregator_with_its_own_platform_merges_it_with_its_sites(
    federation: Federation,
) -> None:
    """Local offers and a site's offers share one offer set; accepting the site's offer
    rejects the local siblings."""
    site = await federation.site("a")
    remote = RemotePlatform(name="a", remote=site.url)
    mixed = await federation.site(
        "mixed", platforms=[PlatformSettings(name="here")], remote_platforms=[remote]
    )
    body = await offers(mixed.client, ping())
    local = [
        o["meta"]["uuid"]
        for o in body["offers"]
        if (await site.client.get(f"/sessions/{o['meta']['uuid']}")).status == 404
    ]
    assert local
    assert len(local) < len(body["offers"])
    chosen = await offer_from("a", body, [site])
    assert (await mixed.client.post(f"/sessions/{chosen}", json=ACCEPT)).status == 200
    for uuid in local:
        await eventually_phase(mixed, uuid, "REJECTED")
    assert (await wait_final(mixed.client, chosen))[-1] == "COMPLETED"


# -- direct, and faults ------------------------------------------------------------------------


async def test_direct_at_the_aggregator_accepts_the_best_offer_of_all_sites(
    federation: Federation,
) -> None:
    """``POST /direct`` answers with the accepted session, located at the aggregator."""
    sites = [await federation.site(name) for name in ("a", "b")]
    aggregator = await federation.aggregator("agg", sites)
    response = await aggregator.client.post("/direct", json=ping())
    assert response.status == 200, await response.text()
    session = await response.json()
    uuid = session["meta"]["uuid"]
    assert session["phase"] == "ACCEPTED"
    assert response.headers["Location"] == f"{aggregator.url}/sessions/{uuid}"
    assert (await wait_final(aggregator.client, uuid))[-1] == "COMPLETED"
    owner = await owner_of(uuid, sites)
    assert await phase_at(sites[0] if owner == "a" else sites[1], uuid) == "COMPLETED"


async def test_faults_are_obeyed_only_where_enabled(federation: Federation) -> None:
    """A site that drops the connection is named like a stopped one; a broker without
    fault injection ignores the header; a malformed fault is a 400 naming the header."""
    testing = await federation.site("a", federation={"fault_injection": True})
    production = await federation.site("b")
    aggregator = await federation.aggregator(
        "agg", [testing, production], federation={"fault_injection": True, "timeout": 2}
    )
    body = await offers(aggregator.client, ping(), **{"X-Talicada-Fault": "drop; site=a"})
    missing = [m["values"]["site"] for m in body["meta"]["messages"]]
    assert missing == ["a"]
    assert {await owner_of(o["meta"]["uuid"], [production]) for o in body["offers"]} == {"b"}
    ignored = await production.client.post(
        "/requests", json=ping(), headers={"X-Talicada-Fault": "status=503"}
    )
    assert ignored.status == 200
    bad = await testing.client.post(
        "/requests", json=ping(), headers={"X-Talicada-Fault": "status=200"}
    )
    assert bad.status == 400
    assert (await bad.json())["messages"][0]["values"]["path"] == "X-Talicada-Fault"


async def test_a_site_that_stops_after_answering_is_named_when_its_offers_are_read(
    federation: Federation,
) -> None:
    """Reading a merged offer set later still works without a stopped site (its offers
    left out, a message naming it), and a call on its offer is a 503 naming it."""
    sites = [await federation.site(name) for name in ("a", "b")]
    aggregator = await federation.aggregator("agg", sites, federation={"timeout": 1})
    body = await offers(aggregator.client, ping())
    gone = await offer_from("b", body, sites)
    await federation.stop(sites[1])
    later = await (await aggregator.client.get(f"/offersets/{body['meta']['uuid']}")).json()
    assert gone not in {o["meta"]["uuid"] for o in later["offers"]}
    assert {await owner_of(o["meta"]["uuid"], sites[:1]) for o in later["offers"]} == {"a"}
    assert [m["values"]["site"] for m in later["meta"]["messages"]] == ["b"]
    response = await aggregator.client.post(f"/sessions/{gone}", json=ACCEPT)
    assert response.status == 503
    assert (await response.json())["messages"][0]["values"]["site"] == "b"
    # The accept never reached b, so another offer of the set can still be taken.
    other = await offer_from("a", body, sites[:1])
    assert (await aggregator.client.post(f"/sessions/{other}", json=ACCEPT)).status == 200


async def test_an_accept_that_times_out_keeps_its_claim_because_the_site_may_run_it(
    federation: Federation,
) -> None:
    """An accept the site answers too late is a 503, yet the site does accept it; so the
    aggregator keeps the offer set claimed and refuses a second accept elsewhere."""
    sites = [
        await federation.site(name, federation={"fault_injection": True}) for name in ("a", "b")
    ]
    aggregator = await federation.aggregator(
        "agg", sites, federation={"timeout": 1, "fault_injection": True}
    )
    body = await offers(aggregator.client, delay("PT30S"))
    slow, other = await offer_from("a", body, sites), await offer_from("b", body, sites)
    late = {"X-Talicada-Fault": "late=2; site=a"}
    response = await aggregator.client.post(f"/sessions/{slow}", json=ACCEPT, headers=late)
    assert response.status == 503
    assert (await aggregator.client.post(f"/sessions/{other}", json=ACCEPT)).status == 409
    # a took it after all
    assert await phase_at(sites[0], slow) in {"ACCEPTED", "WAITING", "PREPARING", "RUNNING"}
    await eventually_phase(sites[1], other, "OFFERED")
    again = await aggregator.client.post(f"/sessions/{slow}", json=CANCEL)
    assert again.status == 200


async def test_delete_at_the_aggregator_ends_then_forgets_the_session_at_its_site(
    federation: Federation,
) -> None:
    site = await federation.site("a")
    aggregator = await federation.aggregator("agg", [site])
    body = await offers(aggregator.client, delay("PT30S"))
    uuid = body["offers"][0]["meta"]["uuid"]
    # The first DELETE ends the open offer at its site…
    response = await aggregator.client.delete(f"/sessions/{uuid}", allow_redirects=False)
    assert response.status == 303, await response.text()
    assert response.headers["Location"].endswith("/sessions")
    assert await phase_at(site, uuid) == "REJECTED"
    # …the second forgets it there, so neither the site nor the aggregator has it.
    response = await aggregator.client.delete(f"/sessions/{uuid}", allow_redirects=False)
    assert response.status == 303, await response.text()
    assert (await site.client.get(f"/sessions/{uuid}")).status == 404
    assert (await aggregator.client.get(f"/sessions/{uuid}")).status == 404
