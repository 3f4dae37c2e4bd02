"""The HTTP contract of docs/ARCHITECTURE.md §3–§5 ("Broker foundation"), over both stores.

Every test here runs once per store (``memory`` and ``redis``) through the
``client`` / ``make_client`` fixtures of conftest.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from talicada.schema import iso8601
from talicada.schema.kinds import Dialect, Family, uri_for
from talicada.settings import PlatformSettings
from tests.conftest import EXAMPLES, ClientFactory

Client: TypeAlias = TestClient[web.Request, web.Application]

#: The seed's own request (docs/ARCHITECTURE.md §3).
SEED_REQUEST = EXAMPLES / "seed-notebook-request.yaml"

SEED_PREFIX = "https://www.purl.org/ivoa.net/EB/schema/types/"
PING = "urn:talicada:kinds:executable:ping-1.0"
ENUM_UPDATE = "uri:enum-value-update"
DATA_NAMES = ("example-data-01", "example-data-02")
YAML_HEADERS = {"Content-Type": "application/yaml", "Accept": "application/yaml"}


# --------------------------------------------------------------------------- helpers


def seed_text() -> str:
    """The seed request as the client sends it; fails the test clearly when missing."""
    if not SEED_REQUEST.is_file():
        pytest.fail(
            f"the seed request {SEED_REQUEST} is missing (see docs/ARCHITECTURE.md §3)",
            pytrace=False,
        )
    return SEED_REQUEST.read_text(encoding="utf-8")


def seed_doc() -> dict[str, Any]:
    """The seed request as plain data."""
    doc = yaml.safe_load(seed_text())
    assert isinstance(doc, dict)
    return doc


def in_dialect(doc: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """The seed-dialect request ``doc`` rewritten in ``dialect``, saying the same thing.

    Seed kind URIs (``type``) become ``dialect``'s URIs (``kind``) and identity
    (``name``) of the request and of every component moves into ``meta``.
    """
    if dialect is Dialect.SEED_2025:
        return copy.deepcopy(doc)

    def convert(node: Any, top: bool = False) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: convert(value) for key, value in node.items()}
        uri = out.get("type")
        if isinstance(uri, str) and uri.startswith(SEED_PREFIX):
            family, _, name = uri.removeprefix(SEED_PREFIX).partition("/")
            del out["type"]
            kind = uri_for(Family(family), name.removesuffix("-1.0"), dialect)
            out = {"kind": kind, **out}
        if (top or "kind" in out) and "name" in out:
            out["meta"] = {"name": out.pop("name")}
        return out

    converted: dict[str, Any] = convert(doc, top=True)
    return converted


def ping_request(**extra: Any) -> dict[str, Any]:
    """A v1.0 request for the ``ping`` test task on the local platform."""
    return {"executable": {"kind": PING}, **extra}


def identity(component: dict[str, Any], dialect: Dialect) -> tuple[str, str | None, str | None]:
    """(uuid, name, url) of a rendered component, wherever ``dialect`` keeps them."""
    if dialect is Dialect.SEED_2025:
        return component["uuid"], component.get("name"), component.get("href")
    meta = component["meta"]
    return meta["uuid"], meta.get("name"), meta.get("url")


def kind_of(component: dict[str, Any], dialect: Dialect) -> str:
    """The kind URI of a rendered component."""
    value: str = component["type" if dialect is Dialect.SEED_2025 else "kind"]
    return value


def all_keys(node: Any) -> Iterator[str]:
    """Every mapping key anywhere in a document, but inside messages: a
    MessageItem's ``kind`` is its own field in every dialect, not a discriminator."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key != "messages":
                yield from all_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_keys(item)


def texts(doc: dict[str, Any]) -> str:
    """All rendered messages of an error or NO document, for substring checks."""
    return "\n".join(item["message"] for item in doc.get("messages", []))


async def post(
    client: Client,
    path: str,
    body: object,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST ``body`` (JSON unless it is bytes/str) and decode the JSON answer."""
    if isinstance(body, bytes | str):
        response = await client.post(path, data=body, headers=headers)
    else:
        response = await client.post(path, json=body, headers=headers)
    text = await response.text()
    return response.status, json.loads(text) if text else None


async def get(client: Client, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``path`` and decode the JSON answer."""
    response = await client.get(path, headers=headers)
    return response.status, await response.json()


def update(value: str) -> dict[str, str]:
    """A bare phase update in the seed spelling."""
    return {"type": ENUM_UPDATE, "path": "phase", "value": value}


async def offers_for(client: Client, body: object | None = None) -> tuple[str, list[str]]:
    """Make an offer set for ``body`` (default: ping); its uuid and its offers' uuids."""
    status, doc = await post(client, "/requests", body if body is not None else ping_request())
    assert status == 200, doc
    assert doc["result"] == "YES", doc
    return doc["meta"]["uuid"], [offer["meta"]["uuid"] for offer in doc["offers"]]


def check_schedule(schedule: dict[str, Any]) -> None:
    """preparing → available → releasing are back to back, available is ``<instant>/PT0S``."""
    preparing, available, releasing = (
        schedule["preparing"],
        schedule["available"],
        schedule["releasing"],
    )
    assert available["start"].endswith("/PT0S")
    available_start = iso8601.parse_interval(available["start"]).start
    prepared = iso8601.parse_instant(preparing["start"]) + iso8601.parse_duration(
        preparing["duration"]
    )
    assert prepared == available_start
    released = available_start + iso8601.parse_duration(available["duration"])
    assert released == iso8601.parse_instant(releasing["start"])
    assert iso8601.parse_duration(releasing["duration"]) >= timedelta(0)


def check_seed_offerset(doc: dict[str, Any], dialect: Dialect, location: str) -> None:
    """The seed request's offers on a Skaha-like platform (docs/ARCHITECTURE.md §4)."""
    assert doc["result"] == "YES", texts(doc)
    _, name, url = identity(doc, dialect)
    assert name == "notebook-test"
    assert url == location
    offers = doc["offers"]
    assert 1 <= len(offers) <= 4
    for offer in offers:
        assert kind_of(offer, dialect) == uri_for(Family.SESSION, "execution-session", dialect)
        uuid, _, href = identity(offer, dialect)
        assert href is not None
        assert href.endswith(f"/sessions/{uuid}")
        assert offer["phase"] == "OFFERED"
        assert kind_of(offer["executable"], dialect) == uri_for(
            Family.EXECUTABLE, "docker-container", dialect
        )

        compute = offer["compute"]
        assert kind_of(compute, dialect) == uri_for(
            Family.COMPUTE, "simple-compute-resource", dialect
        )
        assert kind_of(compute, dialect).endswith(
            "compute/simple-compute-resource-1.0"
            if dialect is not Dialect.V1_0_6
            else "compute/simple-compute-resource.yaml"
        )
        for resource in ("cores", "memory"):
            assert compute[resource]["min"] == compute[resource]["max"] >= 1

        data = {str(identity(item, dialect)[1]): item for item in offer["data"]}
        assert sorted(data) == sorted(DATA_NAMES)
        data_ids = {name: identity(item, dialect)[0] for name, item in data.items()}
        storage = {str(identity(item, dialect)[1]): item for item in offer["storage"]}
        assert sorted(storage) == [f"Storage for [{name}]" for name in sorted(DATA_NAMES)]
        for data_name in DATA_NAMES:
            holder = storage[f"Storage for [{data_name}]"]
            assert holder["data"] == [data_ids[data_name]]
            assert data[data_name]["storage"] == identity(holder, dialect)[0]

        (volume,) = compute["volumes"]
        assert identity(volume, dialect)[1] == "Input data"
        assert volume["path"] == "/inputs/"
        assert volume["resources"] == [data_ids[name] for name in DATA_NAMES]
        check_schedule(offer["schedule"])
    uuids = [identity(offer, dialect)[0] for offer in offers]
    assert len(set(uuids)) == len(uuids)


# --------------------------------------------------------------------------- the seed request


async def test_seed_request_to_the_local_platform_is_a_no_naming_the_executable_kind(
    client: Client,
) -> None:
    """The seed's docker-container request on a broker without docker: 200, result NO."""
    response = await client.post("/requests", data=seed_text(), headers=YAML_HEADERS)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    doc = yaml.safe_load(await response.text())
    assert doc["result"] == "NO"
    assert doc["offers"] == []
    refusals = [
        item
        for item in doc["messages"]
        # The kind as the client spells it, so it can be sent back.
        if item["values"].get("kind")
        == uri_for(Family.EXECUTABLE, "docker-container", Dialect.SEED_2025)
        and item["values"].get("platform") == "local"
    ]
    assert refusals, doc["messages"]
    assert "docker-container" in refusals[0]["message"]
    assert "local" in refusals[0]["message"]

    # The same answer in JSON when nothing else is asked for.
    status, as_json = await post(
        client, "/requests", seed_text(), headers={"Content-Type": "application/yaml"}
    )
    assert status == 200
    assert as_json["result"] == "NO"
    assert "docker-container" in texts(as_json)
    assert any(item["values"].get("platform") == "local" for item in as_json["messages"])


async def test_seed_request_to_a_skaha_platform_gets_seed_dialect_offers(
    make_client: ClientFactory,
    skaha_platform: PlatformSettings,
) -> None:
    """The seed request on a platform that runs containers: 1–4 fully resolved offers."""
    client = await make_client(platforms=[skaha_platform])
    response = await client.post("/requests", data=seed_text(), headers=YAML_HEADERS)
    assert response.status == 200
    doc = yaml.safe_load(await response.text())
    check_seed_offerset(doc, Dialect.SEED_2025, response.headers["Location"])
    assert doc["href"] == response.headers["Location"]
    for offer in doc["offers"]:
        assert offer["type"] == (
            "https://www.purl.org/ivoa.net/EB/schema/types/session/execution-session-response-1.0"
        )
    keys = set(all_keys(doc))
    assert "kind" not in keys
    assert "meta" not in keys

    # JSON says the same.
    status, as_json = await post(
        client, "/requests", seed_text(), headers={"Content-Type": "application/yaml"}
    )
    assert status == 200
    assert as_json["result"] == "YES"
    assert not {"kind", "meta"} & set(all_keys(as_json))


@pytest.mark.parametrize("dialect", [Dialect.V1_0, Dialect.V1_0_6], ids=lambda d: d.value)
async def test_seed_request_in_another_dialect_is_answered_in_that_dialect(
    make_client: ClientFactory, skaha_platform: PlatformSettings, dialect: Dialect
) -> None:
    """The seed request spelled in v1.0 or v1.0.6 gets the same offers, in its own spelling."""
    client = await make_client(platforms=[skaha_platform])
    body = in_dialect(seed_doc(), dialect)
    assert "type" not in set(all_keys(body))  # the variant really is another spelling
    response = await client.post(
        "/requests", data=yaml.safe_dump(body), headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 200
    doc = await response.json()
    check_seed_offerset(doc, dialect, response.headers["Location"])
    for offer in doc["offers"]:
        assert offer["kind"] == uri_for(Family.SESSION, "execution-session", dialect)
        assert offer["meta"]["url"].endswith(f"/sessions/{offer['meta']['uuid']}")
        assert not {"type", "uuid", "href", "name"} & set(offer)
    # No seed-style identity or discriminator anywhere in components.
    for offer in doc["offers"]:
        for component in [offer["executable"], offer["compute"], *offer["storage"]]:
            assert "type" not in component
            assert "uuid" not in component


async def test_computer_is_understood_as_compute(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """2025 clients write ``computer:`` with ``…/types/computer/…`` URIs."""
    client = await make_client(platforms=[skaha_platform])
    body = seed_doc()
    computer = body.pop("compute")
    computer["type"] = SEED_PREFIX + "computer/simple-compute-resource-1.0"
    body["computer"] = computer
    response = await client.post(
        "/requests", data=yaml.safe_dump(body), headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 200
    doc = await response.json()
    check_seed_offerset(doc, Dialect.SEED_2025, response.headers["Location"])


async def test_top_level_volumes_named_from_compute_are_understood(
    make_client: ClientFactory,
    skaha_platform: PlatformSettings,
) -> None:
    """A top-level ``volumes:`` list whose members ``compute.volumes`` names."""
    client = await make_client(platforms=[skaha_platform])
    body = seed_doc()
    (volume,) = body["compute"]["volumes"]
    body["volumes"] = [volume]
    body["compute"]["volumes"] = [volume["name"]]
    status, doc = await post(client, "/requests", body)
    assert status == 200, doc
    check_seed_offerset(doc, Dialect.SEED_2025, doc["href"])


async def test_a_volume_with_a_single_resource_is_understood(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """``resource:`` (one) mounts that resource and comes back as the name the client sent."""
    client = await make_client(platforms=[skaha_platform])
    body = seed_doc()
    (volume,) = body["compute"]["volumes"]
    del volume["resources"]
    volume["resource"] = "example-data-02"
    status, doc = await post(client, "/requests", body)
    assert status == 200, doc
    assert doc["result"] == "YES", texts(doc)
    for offer in doc["offers"]:
        assert any(item["name"] == "example-data-02" for item in offer["data"])
        (mounted,) = offer["compute"]["volumes"]
        assert mounted["resource"] == "example-data-02"
        assert "resources" not in mounted
        assert mounted["mode"] == "READONLY"


# --------------------------------------------------------------------------- offer sets and updates


async def test_offerset_is_readable_with_the_live_phase_of_each_offer(
    make_client: ClientFactory,
    skaha_platform: PlatformSettings,
) -> None:
    """GET /offersets/{uuid} returns the offers POST /requests made, with live phases."""
    # No timers: the accepted offer stays ACCEPTED (its 'start' timer would move it on).
    client = await make_client(platforms=[skaha_platform], timers=False)
    response = await client.post("/requests", data=seed_text(), headers=YAML_HEADERS)
    made = yaml.safe_load(await response.text())
    status, doc = await get(client, f"/offersets/{made['uuid']}")
    assert status == 200
    assert [offer["uuid"] for offer in doc["offers"]] == [offer["uuid"] for offer in made["offers"]]
    assert doc["offers"][0]["compute"] == made["offers"][0]["compute"]
    assert {offer["phase"] for offer in doc["offers"]} == {"OFFERED"}

    # Accept the second offer; the offer set shows it ACCEPTED and the rest REJECTED.
    chosen = made["offers"][-1]["uuid"]
    status, accepted = await post(client, f"/sessions/{chosen}", update("ACCEPTED"))
    assert status == 200, accepted
    status, doc = await get(client, f"/offersets/{made['uuid']}")
    assert status == 200
    phases = {offer["uuid"]: offer["phase"] for offer in doc["offers"]}
    assert phases.pop(chosen) == "ACCEPTED"
    assert set(phases.values()) <= {"REJECTED"}
    assert "expires" not in doc["offers"][-1]  # only open offers expire


async def test_accepting_an_offer_rejects_its_siblings(client: Client) -> None:
    """Accept one → 200 ACCEPTED; exactly one ACCEPTED and the rest REJECTED."""
    offerset, offers = await offers_for(client)
    assert len(offers) >= 2
    status, doc = await post(client, f"/sessions/{offers[0]}", update("ACCEPTED"))
    assert status == 200, doc
    assert doc["phase"] == "ACCEPTED"
    assert doc["meta"]["uuid"] == offers[0]

    status, doc = await get(client, f"/offersets/{offerset}")
    assert status == 200
    phases = sorted(offer["phase"] for offer in doc["offers"])
    assert phases == ["ACCEPTED"] + ["REJECTED"] * (len(offers) - 1)
    status, sibling = await get(client, f"/sessions/{offers[1]}")
    assert status == 200
    assert sibling["phase"] == "REJECTED"


async def test_accepting_a_rejected_sibling_is_a_conflict(client: Client) -> None:
    """After one offer is accepted, accepting another → 409 with a message; nothing changes."""
    offerset, offers = await offers_for(client)
    status, _ = await post(client, f"/sessions/{offers[0]}", update("ACCEPTED"))
    assert status == 200
    status, doc = await post(client, f"/sessions/{offers[1]}", update("ACCEPTED"))
    assert status == 409
    assert doc["messages"], doc
    assert offers[1] in texts(doc) or offerset in texts(doc)
    status, doc = await get(client, f"/sessions/{offers[1]}")
    assert doc["phase"] == "REJECTED"
    status, doc = await get(client, f"/sessions/{offers[0]}")
    assert doc["phase"] == "ACCEPTED"


async def test_rejecting_an_offer_makes_it_rejected(client: Client) -> None:
    """REJECTED on an open offer → 200 REJECTED; its siblings stay OFFERED."""
    _, offers = await offers_for(client)
    status, doc = await post(client, f"/sessions/{offers[0]}", update("REJECTED"))
    assert status == 200, doc
    assert doc["phase"] == "REJECTED"
    status, doc = await get(client, f"/sessions/{offers[1]}")
    assert doc["phase"] == "OFFERED"


async def test_cancelling_an_accepted_session_makes_it_cancelled(client: Client) -> None:
    """CANCELLED on an ACCEPTED session → 200 CANCELLED, and GET agrees."""
    _, offers = await offers_for(client)
    status, _ = await post(client, f"/sessions/{offers[0]}", update("ACCEPTED"))
    assert status == 200
    status, doc = await post(client, f"/sessions/{offers[0]}", update("CANCELLED"))
    assert status == 200, doc
    assert doc["phase"] == "CANCELLED"
    status, doc = await get(client, f"/sessions/{offers[0]}")
    assert doc["phase"] == "CANCELLED"


@pytest.mark.parametrize("value", ["RUNNING", "BANANA", "accepted"])
async def test_a_phase_a_client_cannot_set_is_a_400_naming_value(
    client: Client, value: str
) -> None:
    """Only ACCEPTED, REJECTED and CANCELLED may be asked for; anything else → 400 ``value``."""
    _, offers = await offers_for(client)
    status, doc = await post(client, f"/sessions/{offers[0]}", update(value))
    assert status == 400
    assert any(item["values"].get("path") == "value" for item in doc["messages"]), doc
    status, doc = await get(client, f"/sessions/{offers[0]}")
    assert doc["phase"] == "OFFERED"


@pytest.mark.parametrize(
    "body",
    [
        {"type": ENUM_UPDATE, "path": "phase", "value": "ACCEPTED"},
        {"kind": ENUM_UPDATE, "path": "phase", "value": "ACCEPTED"},
        {"update": {"type": ENUM_UPDATE, "path": "phase", "value": "ACCEPTED"}},
        {"update": {"kind": ENUM_UPDATE, "path": "/phase", "value": "ACCEPTED"}},
        {"type": ENUM_UPDATE, "path": "/phase", "value": "ACCEPTED"},
    ],
    ids=["bare-type", "bare-kind", "wrapped", "wrapped-slash-path", "slash-path"],
)
async def test_updates_bare_wrapped_and_with_slash_paths_all_work(
    client: Client, body: dict[str, Any]
) -> None:
    """Every spelling of the accept update accepts the offer."""
    _, offers = await offers_for(client)
    status, doc = await post(client, f"/sessions/{offers[0]}", body)
    assert status == 200, doc
    assert doc["phase"] == "ACCEPTED"


async def test_unknown_and_malformed_uuids_are_404(client: Client) -> None:
    """GET of a uuid nobody made, or of a path that is no uuid → 404 with a message."""
    unknown = "0b0e7ad6-7a3c-4c9c-9d6e-6f0c1d0e5f11"
    for path in (f"/sessions/{unknown}", f"/offersets/{unknown}", "/sessions/not-a-uuid"):
        status, doc = await get(client, path)
        assert status == 404, path
        assert doc["messages"][0]["kind"] == "urn:talicada:error:not-found"
    status, doc = await post(client, f"/sessions/{unknown}", update("ACCEPTED"))
    assert status == 404


# --------------------------------------------------------------------------- principals


async def test_another_principal_cannot_see_or_change_a_session(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    """Two brokers over one store with bearer tokens: bob gets 404 for alice's things."""
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token-0123456789 alice\nbob-token-0123456789xyz bob\n")
    alice = {"Authorization": "Bearer alice-token-0123456789"}
    bob = {"Authorization": "Bearer bob-token-0123456789xyz"}
    first = await make_client(auth_tokens_file=str(tokens))
    second = await make_client(auth_tokens_file=str(tokens))

    # Given alice's offer set, made on the first broker
    status, doc = await post(first, "/requests", ping_request(), headers=alice)
    assert status == 200, doc
    offerset, offer = doc["meta"]["uuid"], doc["offers"][0]["meta"]["uuid"]

    # Then alice reads it through the second broker (the store is shared)
    assert (await get(second, f"/sessions/{offer}", alice))[0] == 200
    assert (await get(second, f"/offersets/{offerset}", alice))[0] == 200
    # And bob cannot see it, change it or list it
    assert (await get(second, f"/sessions/{offer}", bob))[0] == 404
    assert (await get(second, f"/offersets/{offerset}", bob))[0] == 404
    status, _ = await post(second, f"/sessions/{offer}", update("ACCEPTED"), headers=bob)
    assert status == 404
    status, listing = await get(second, "/sessions", bob)
    assert status == 200
    assert listing["sessions"] == []
    status, doc = await get(second, f"/sessions/{offer}", alice)
    assert doc["phase"] == "OFFERED"

    # And without a token nothing but the open paths answers
    response = await second.get(f"/sessions/{offer}")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await second.get(
        "/sessions", headers={"Authorization": "Bearer wrong-token-0123456"}
    )
    assert response.status == 401
    assert (await second.get("/healthz")).status == 200


# --------------------------------------------------------------------------- requests and direct


async def test_prefer_return_minimal_redirects_to_the_offerset(client: Client) -> None:
    """``Prefer: return=minimal`` → 303 with Location of the offer set, which then reads."""
    response = await client.post(
        "/requests",
        json=ping_request(),
        headers={"Prefer": "return=minimal"},
        allow_redirects=False,
    )
    assert response.status == 303
    location = response.headers["Location"]
    assert "/offersets/" in location
    status, doc = await get(client, URL(location).path)
    assert status == 200
    assert doc["meta"]["url"] == location
    assert doc["result"] == "YES"


@pytest.mark.parametrize("path", ["/direct", "/sessions"])
async def test_direct_execution_accepts_the_best_offer_at_once(client: Client, path: str) -> None:
    """POST /direct (alias POST /sessions) → 200 with one session already ACCEPTED."""
    response = await client.post(path, json=ping_request())
    assert response.status == 200
    doc = await response.json()
    assert doc["phase"] == "ACCEPTED"
    assert doc["kind"] == uri_for(Family.SESSION, "execution-session", Dialect.V1_0)
    assert response.headers["Location"] == doc["meta"]["url"]
    assert doc["meta"]["url"].endswith(f"/sessions/{doc['meta']['uuid']}")
    status, again = await get(client, f"/sessions/{doc['meta']['uuid']}")
    assert status == 200
    assert again["phase"] == "ACCEPTED"


# --------------------------------------------------------------------------- listing sessions


async def _sessions(client: Client, count: int) -> list[str]:
    """Make ``count`` sessions (one offer each), oldest first; every other one accepted."""
    made = []
    for index in range(count):
        path = "/direct" if index % 2 == 0 else "/requests"
        status, doc = await post(client, path, ping_request())
        assert status == 200, doc
        made.append(doc["meta"]["uuid"] if path == "/direct" else doc["offers"][0]["meta"]["uuid"])
        await asyncio.sleep(0.005)  # distinct creation times, so "newest first" is defined
    return made


async def test_session_listing_is_newest_first_and_filters_by_phase(
    make_client: ClientFactory,
) -> None:
    """GET /sessions lists accepted sessions newest first; ``offers=true`` adds offers."""
    # No timers: accepted sessions stay ACCEPTED while the list is read.
    client = await make_client(max_offers=1, timers=False)
    made = await _sessions(client, 4)
    status, doc = await get(client, "/sessions?offers=true")
    assert status == 200
    assert [item["meta"]["uuid"] for item in doc["sessions"]] == made[::-1]
    assert "cursor" not in doc
    # By default the open offers are left out: only what was accepted is listed.
    status, doc = await get(client, "/sessions")
    assert status == 200
    assert [item["meta"]["uuid"] for item in doc["sessions"]] == [made[2], made[0]]

    status, doc = await get(client, "/sessions?phase=ACCEPTED")
    assert status == 200
    assert [item["meta"]["uuid"] for item in doc["sessions"]] == [made[2], made[0]]
    assert {item["phase"] for item in doc["sessions"]} == {"ACCEPTED"}
    status, doc = await get(client, "/sessions?phase=OFFERED,ACCEPTED")
    assert len(doc["sessions"]) == 4

    before = datetime.now().astimezone() + timedelta(hours=1)
    status, doc = await get(client, f"/sessions?since={iso8601.format_instant(before)}")
    assert status == 200
    assert doc["sessions"] == []


async def test_session_listing_pages_visit_each_session_exactly_once(
    make_client: ClientFactory,
) -> None:
    """``limit=1`` gives a ``cursor`` and a ``next`` link; following them visits all, in order."""
    client = await make_client(max_offers=1)
    made = await _sessions(client, 3)
    seen: list[str] = []
    path: str | None = "/sessions?limit=1&offers=true"
    pages = 0
    while path is not None:
        status, doc = await get(client, path)
        assert status == 200, doc
        assert len(doc["sessions"]) <= 1
        seen += [item["meta"]["uuid"] for item in doc["sessions"]]
        path = doc.get("next")
        if path is not None:
            assert URL(path).query["cursor"] == doc["cursor"]
        pages += 1
        assert pages <= 5, "paging does not end"
    assert seen == made[::-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("phase=BANANA", "phase"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("since=yesterday", "since"),
        ("until=2025-01-01", "until"),
        ("cursor=not-a-cursor", "cursor"),
    ],
)
async def test_bad_listing_parameters_are_a_400_naming_the_parameter(
    client: Client, query: str, field: str
) -> None:
    """Unknown phase, limit out of range, bad instants and foreign cursors → 400."""
    status, doc = await get(client, f"/sessions?{query}")
    assert status == 400
    assert [item["values"]["path"] for item in doc["messages"]] == [field]


# --------------------------------------------------------------------------- media types


async def test_an_xml_request_gets_xml_offers(client: Client) -> None:
    """The ping request as XML (``kind`` as an element, as before) → offers in the
    reference's XML: ``<execution kind="…">`` members of ``<offers>``."""
    body = (
        b"<?xml version='1.0' encoding='utf-8'?>"
        b"<offers-request>"
        b"<meta><name>xml-ping</name></meta>"
        b"<executable><kind>urn:talicada:kinds:executable:ping-1.0</kind></executable>"
        b"<compute><cores><min>1</min><max>2</max></cores></compute>"
        b"<schedule><requested><duration>PT5M</duration></requested></schedule>"
        b"</offers-request>"
    )
    response = await client.post(
        "/requests",
        data=body,
        headers={"Content-Type": "application/xml", "Accept": "application/xml"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(await response.read())
    assert root.tag == "offers-response"
    assert root.findtext("result") == "YES"
    assert root.findtext("meta/name") == "xml-ping"
    offers = root.findall("offers/execution")
    assert 1 <= len(offers) <= 4
    for offer in offers:
        assert offer.findtext("phase") == "OFFERED"
        assert offer.get("kind") == uri_for(Family.SESSION, "execution-session", Dialect.V1_0)
        assert offer.findtext("compute/cores/min") == "2"
        assert offer.findtext("schedule/available/duration") == "PT5M"


async def test_json_yaml_and_xml_answers_say_the_same(client: Client) -> None:
    """A session read as JSON, YAML and XML carries the same uuid and phase."""
    _, offers = await offers_for(client)
    path = f"/sessions/{offers[0]}"
    as_json = await (await client.get(path)).json()
    response = await client.get(path, headers={"Accept": "application/yaml"})
    assert response.headers["Content-Type"].startswith("application/yaml")
    as_yaml = yaml.safe_load(await response.text())
    response = await client.get(path, headers={"Accept": "application/xml"})
    as_xml = ET.fromstring(await response.read())
    assert as_json["meta"]["uuid"] == as_yaml["meta"]["uuid"] == as_xml.findtext("meta/uuid")
    assert as_json["phase"] == as_yaml["phase"] == as_xml.findtext("phase") == "OFFERED"
    assert as_json == as_yaml


async def test_an_unacceptable_accept_is_406_and_an_unknown_body_type_is_415(
    client: Client,
) -> None:
    """``Accept: text/csv`` → 406; ``Content-Type: text/csv`` → 415; both with messages."""
    response = await client.get("/capabilities", headers={"Accept": "text/csv"})
    assert response.status == 406
    assert (await response.json())["messages"][0]["values"]["path"] == "Accept"
    response = await client.post(
        "/requests", data=b"executable,ping\n", headers={"Content-Type": "text/csv"}
    )
    assert response.status == 415
    assert (await response.json())["messages"][0]["values"]["path"] == "Content-Type"


# --------------------------------------------------------------------------- service description


async def test_capabilities_describe_platforms_and_kinds(client: Client) -> None:
    """/capabilities lists the local platform, the dialects and the ping kind URI."""
    status, doc = await get(client, "/capabilities")
    assert status == 200
    assert [platform["name"] for platform in doc["platforms"]] == ["local"]
    assert PING in doc["kinds"]["executable"]
    assert PING in doc["platforms"][0]["executables"]
    assert set(doc["dialects"]) == {dialect.value for dialect in Dialect}
    assert "/requests" in doc["endpoints"]


async def test_probes_and_availability_answer(client: Client) -> None:
    """/healthz, /readyz and /availability answer 200 with their status."""
    assert await get(client, "/healthz") == (200, {"status": "ok"})
    assert await get(client, "/readyz") == (200, {"status": "ok", "workers": []})
    status, doc = await get(client, "/availability")
    assert status == 200
    assert doc["available"] is True
    assert iso8601.parse_instant(doc["upSince"]) <= datetime.now().astimezone()
