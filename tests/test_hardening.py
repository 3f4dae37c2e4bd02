"""Hardened inputs and settings: every 400 says why, odd digits are 400s, exposure is refused."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from talicada.broker.app import create_app
from talicada.settings import SettingsError, load
from tests.conftest import ClientFactory
from tests.lifecycle_support import Client, task


async def test_three_hundred_data_items_get_a_400_that_says_why(make_client: ClientFactory) -> None:
    client = await make_client()
    request = task("ping")
    request["data"] = [
        {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/simple-data-resource-1.0",
            "location": f"https://example.org/{i}",
        }
        for i in range(300)
    ]
    response = await client.post("/requests", json=request)
    assert response.status == 400
    (message,) = (await response.json())["messages"]
    assert message["values"]["path"] == "data"
    assert "256" in message["message"]


@pytest.mark.parametrize("value", ["²", "①", "٣", "1" * 4301, "-1", "1e3", "0x10", " 5", "5 "])
async def test_query_numbers_are_ascii_digits_or_a_400(
    make_client: ClientFactory, value: str
) -> None:
    client = await make_client()
    listed = await client.get("/sessions", params={"limit": value})
    assert listed.status == 400, value
    (message,) = (await listed.json())["messages"]
    assert message["values"]["path"] == "limit"
    uuid = "00000000-0000-4000-8000-000000000000"
    waited = await client.get(f"/sessions/{uuid}", params={"wait": value})
    assert waited.status in (400, 404), value  # never a 500
    assert (await client.get("/sessions", params={"limit": "7"})).status == 200


def test_embedded_mode_without_auth_listens_on_loopback_only_unless_told() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        create_app(load(environ={}, host=host))
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(SettingsError, match="not loopback and authentication is off"):
            create_app(load(environ={}, host=host))
    create_app(load(environ={}, host="0.0.0.0", allow_unauthenticated_listen=True))


@pytest.mark.parametrize("query", [{"offers": "null"}, {"offers": "null", "phase": "REJECTED"}])
async def test_a_bad_offers_flag_is_a_400_even_when_phases_make_it_moot(
    make_client: ClientFactory, query: dict[str, str]
) -> None:
    client = await make_client()
    listed = await client.get("/sessions", params=query)
    assert listed.status == 400, query
    (message,) = (await listed.json())["messages"]
    assert message["values"]["path"] == "offers"


async def an_offer(client: Client) -> str:
    """The uuid of a fresh ping offer."""
    offers = await (await client.post("/requests", json=task("ping"))).json()
    return str(offers["offers"][0]["meta"]["uuid"])


async def test_a_bad_phase_on_a_session_read_is_a_400_with_or_without_wait(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    uuid = await an_offer(client)
    for query in ({"phase": "BOGUS"}, {"phase": "BOGUS", "wait": "1"}):
        read = await client.get(f"/sessions/{uuid}", params=query)
        assert read.status == 400, query
        (message,) = (await read.json())["messages"]
        assert message["values"]["path"] == "phase"
    assert (await client.get(f"/sessions/{uuid}", params={"phase": "OFFERED"})).status == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("count", "²"),
        ("count", "0"),
        ("dead_letters", "null"),
        ("from_start", "yes"),
        ("session", "abc"),
    ],
)
async def test_the_event_feeds_parameters_are_parsed_strictly(name: str, value: str) -> None:
    app = create_app(load(environ={}))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/events", params={name: value})
        assert response.status == 400, (name, value)
        (message,) = (await response.json())["messages"]
        assert message["values"]["path"] == name


@pytest.mark.parametrize("value", ["RUNNING,FAILED", "running"])
async def test_a_session_read_takes_exactly_one_phase(
    make_client: ClientFactory, value: str
) -> None:
    client = await make_client()
    uuid = await an_offer(client)
    read = await client.get(f"/sessions/{uuid}", params={"phase": value})
    assert read.status == 400, value
    (message,) = (await read.json())["messages"]
    assert message["values"]["path"] == "phase"
