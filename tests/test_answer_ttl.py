"""Every offer-set answer, YES or NO, says how long it stays valid (issue 13, must-show 4).

The TTL is in the body (``ttl``, an ISO 8601 duration) and in
``Cache-Control: private, max-age=N``; both always agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

from aiohttp import ClientResponse

from talicada.broker import ttl
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_instant, parse_duration
from talicada.settings import AnswerTtl, PlatformSettings
from tests.conftest import EXAMPLES, ClientFactory

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ONE = PlatformSettings(name="one", cores=2, memory=4)
#: A platform that runs containers but nothing else the tests ask for.
CONTAINERS = PlatformSettings(name="containers", executables=["docker-container"], cores=2)


def ping(cores: int = 1, start: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": cores, "max": cores}},
        "schedule": {"requested": {"duration": "PT10M"}},
    }
    if start is not None:
        request["schedule"]["requested"]["start"] = start
    return request


def max_age(response: ClientResponse) -> int:
    """The ``max-age`` directive of the response's Cache-Control, as a number."""
    directives = [part.strip() for part in response.headers["Cache-Control"].split(",")]
    assert "private" in directives
    (age,) = [int(d.split("=", 1)[1]) for d in directives if d.startswith("max-age=")]
    return age


def body_ttl(document: dict[str, Any]) -> int:
    return int(parse_duration(document["ttl"]).total_seconds())


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# -- YES ------------------------------------------------------------------------------


async def test_a_yes_is_valid_until_its_offers_expire(make_client: ClientFactory) -> None:
    clock = Clock()
    client = await make_client(clock=clock, timers=False, offer_ttl=240)
    response = await client.post("/requests", json=ping())
    document = await response.json()
    assert document["result"] == "YES"
    assert body_ttl(document) == max_age(response) == 240
    # Then read again a minute later, it has a minute less to live
    clock.now = T0 + timedelta(seconds=61)
    again = await client.get(f"/offersets/{document['meta']['uuid']}")
    assert body_ttl(await again.json()) == max_age(again) == 179


# -- NO -------------------------------------------------------------------------------


async def test_a_no_for_a_kind_no_platform_runs_is_valid_for_long(
    make_client: ClientFactory,
) -> None:
    client = await make_client(platforms=[ONE], answer_ttl={"fixed": 7200})
    request = ping()
    request["executable"] = {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
        "image": {"locations": ["example/x:1"]},
    }
    response = await client.post("/requests", json=request)
    document = await response.json()
    assert document["result"] == "NO"
    assert body_ttl(document) == max_age(response) == 7200


async def test_a_no_for_capacity_is_valid_briefly(make_client: ClientFactory) -> None:
    client = await make_client(platforms=[ONE], max_offers=1, timers=False)
    soon = f"{format_instant(datetime.now(UTC).replace(microsecond=0))}/PT2M"
    # Given the only window held by an offer
    assert (await (await client.post("/requests", json=ping(2, soon))).json())["result"] == "YES"
    # When a second client asks for the same
    response = await client.post("/requests", json=ping(2, soon))
    document = await response.json()
    # Then it is told NO for capacity, and the NO lasts the short TTL
    assert document["result"] == "NO"
    assert any("no-capacity" in m["kind"] for m in document["meta"]["messages"])
    assert body_ttl(document) == max_age(response) == AnswerTtl().capacity


async def test_a_no_lasts_only_as_long_as_its_shortest_lived_reason(
    make_client: ClientFactory,
) -> None:
    # Given one platform that can never run ping and one that is full
    client = await make_client(platforms=[CONTAINERS, ONE], max_offers=1, timers=False)
    soon = f"{format_instant(datetime.now(UTC).replace(microsecond=0))}/PT2M"
    assert (await (await client.post("/requests", json=ping(2, soon))).json())["result"] == "YES"
    response = await client.post("/requests", json=ping(2, soon))
    document = await response.json()
    kinds = {m["kind"] for m in document["meta"]["messages"]}
    # (the platform is full of a pending offer, not of bookings: the NO says so)
    assert kinds == {
        "urn:talicada:error:unsupported-kind",
        "urn:talicada:error:no-capacity-held",
    }
    # Then capacity decides: the same request may succeed as soon as the offer expires
    assert body_ttl(document) == max_age(response) == AnswerTtl().capacity


async def test_a_no_read_again_counts_down_from_when_it_was_made(
    make_client: ClientFactory,
) -> None:
    clock = Clock()
    client = await make_client(platforms=[CONTAINERS], clock=clock, timers=False)
    created = await (await client.post("/requests", json=ping())).json()
    assert body_ttl(created) == AnswerTtl().fixed
    clock.now = T0 + timedelta(seconds=600)
    again = await client.get(f"/offersets/{created['meta']['uuid']}")
    assert body_ttl(await again.json()) == max_age(again) == AnswerTtl().fixed - 600
    # and never goes below zero
    clock.now = T0 + timedelta(days=1)
    late = await client.get(f"/offersets/{created['meta']['uuid']}")
    assert (await late.json())["ttl"] == "PT0S"
    assert max_age(late) == 0


async def test_direct_execution_that_is_refused_carries_the_ttl(
    make_client: ClientFactory,
) -> None:
    client = await make_client(platforms=[CONTAINERS])
    response = await client.post("/direct", json=ping())
    document = await response.json()
    # A refused direct execution is a 400 REJECTED execution (the reference schema's answer).
    assert response.status == 400
    assert document["phase"] == "REJECTED"
    assert body_ttl(document) == max_age(response) == AnswerTtl().fixed


# -- every dialect and media type -----------------------------------------------------


async def test_the_ttl_is_spelled_in_every_dialect_and_in_xml(make_client: ClientFactory) -> None:
    client = await make_client(offer_ttl=120)
    # The seed's notebook request: the local platform never runs containers
    seed_answer = await client.post(
        "/requests",
        data=(EXAMPLES / "seed-notebook-request.yaml").read_bytes(),
        headers={"Content-Type": "application/yaml"},
    )
    seed = await seed_answer.json()
    assert seed["result"] == "NO"
    assert "meta" not in seed  # the seed dialect's spelling
    assert seed["ttl"] == "PT1H"
    assert max_age(seed_answer) == 3600

    xml = await client.post("/requests", json=ping(), headers={"Accept": "application/xml"})
    root = ElementTree.fromstring(await xml.read())
    assert root.findtext("ttl") == "PT2M"
    assert max_age(xml) == 120


# -- the rule itself ------------------------------------------------------------------


def test_unknown_reasons_count_as_short_lived() -> None:
    settings = AnswerTtl(fixed=1000, advice=100, capacity=10)
    fixed = msg.make(msg.UNSUPPORTED_KIND, platform="a", family="x", kind="k", supported="none")
    advice = msg.make(msg.PLATFORM_REFUSES, platform="a", reason="no such image")
    other = msg.make(msg.INVALID_FIELD, path="p", reason="r")
    assert ttl.no_ttl([fixed], settings) == 1000
    assert ttl.no_ttl([fixed, advice], settings) == 100
    assert ttl.no_ttl([fixed, advice, other], settings) == 10
    assert ttl.no_ttl([], settings) == 10
