"""The outbound fence: data URLs on internal addresses are refused at offer and at fetch time.

A real listener on loopback counts the connections it receives: the fence
must refuse before any socket reaches it, at offer time, after a redirect and
when a name resolves to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from talicada.security.fence import Fence, FencedResolver, FenceRefused, listed
from talicada.settings import LOCAL, SettingsError, load
from tests.conftest import BrokerFactory, ClientFactory
from tests.lifecycle_support import accept_first, checksum_request, wait_for_phase


class Listener:
    """A TCP listener on loopback that counts the connections it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listener]:
    counting = Listener()
    await counting.start()
    yield counting
    await counting.close()


@pytest_asyncio.fixture
async def redirector() -> AsyncIterator[str]:
    """A loopback server answering ``/to?url=U`` with a redirect to U."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    app = web.Application()
    app.router.add_get("/to", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/to"))
    await server.close()


def data_request(*locations: str) -> dict[str, Any]:
    """The checksum example with one data item per location."""
    request = checksum_request("http://unused")
    template = request["data"][0]
    request["data"] = [
        {**template, "meta": {"name": f"item-{index}"}, "location": location}
        for index, location in enumerate(locations)
    ]
    request["compute"]["volumes"][0]["resources"] = [
        item["meta"]["name"] for item in request["data"]
    ]
    return request


# -- the rule itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused_and_named(address: str, kind: str) -> None:
    reason = Fence().refusal("data.example.org", 443, address)
    assert reason is not None
    assert f"a {kind} address" in reason


def test_public_addresses_pass_and_allowances_are_exact() -> None:
    assert Fence().refusal("data.example.org", 443, "93.184.216.34") is None
    fence = Fence.of(["10.1.0.0/16", "files.internal:8443", "127.0.0.1:9000"])
    assert fence.refusal("a", 1, "10.1.9.9") is None  # an allowed network, any port
    assert fence.refusal("a", 1, "10.2.0.1") is not None
    assert fence.refusal("files.internal", 8443, "10.9.9.9") is None  # host and port
    assert fence.refusal("files.internal", 8444, "10.9.9.9") is not None  # not that port
    assert fence.refusal("127.0.0.1", 9000, "127.0.0.1") is None
    assert fence.refusal("127.0.0.1", 6379, "127.0.0.1") is not None
    assert Fence(loopback=True).refusal("localhost", 6379, "127.0.0.1") is None
    assert Fence(loopback=True).refusal("x", 1, "10.0.0.1") is not None


def test_data_hosts_entries_name_host_and_port() -> None:
    hosts = ["localhost:8000", "data.example.org"]
    assert listed(hosts, "http://localhost:8000/a")
    assert not listed(hosts, "http://localhost:6457/")  # the port matters
    assert listed(hosts, "https://data.example.org/x")  # bare host: the default port
    assert not listed(hosts, "https://data.example.org:6379/x")


def test_malformed_allowances_stop_startup() -> None:
    bad = msgspec.structs.replace(LOCAL, fetch_allow=["not a network"])
    with pytest.raises(SettingsError, match=r"fetch_allow: 'not a network'"):
        load(environ={}, platforms=[msgspec.to_builtins(bad)])


async def test_the_resolver_refuses_names_of_internal_addresses() -> None:
    with pytest.raises(FenceRefused, match=r"resolves to (127\.0\.0\.1|::1), which is a loopback"):
        await FencedResolver(Fence()).resolve("localhost", 80)
    allowed = await FencedResolver(Fence.of(["127.0.0.0/8", "::1/128"])).resolve("localhost", 80)
    assert {result["host"] for result in allowed} <= {"127.0.0.1", "::1"}


# -- must show 1: offer time, redirects, and no connection --------------------------


async def test_internal_data_urls_get_no_at_offer_time_naming_the_item(
    make_client: ClientFactory, listener: Listener
) -> None:
    client = await make_client(allow_loopback_fetch=False)
    for location in (
        f"http://127.0.0.1:{listener.port}/metrics",
        f"http://localhost:{listener.port}/x",
        "http://10.0.0.7/data.fits",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{listener.port}/x",
    ):
        body = await (
            await client.post("/requests", json=data_request("https://example.org/a", location))
        ).json()
        assert body.get("result") == "NO", (location, body)
        (message,) = body["meta"]["messages"]
        assert message["kind"] == "urn:talicada:error:unreachable-data"
        assert message["values"]["path"] == "data[1]"
        assert "address" in message["message"]
    assert listener.connections == 0


async def test_a_redirect_to_an_internal_address_fails_staging_without_a_connection(
    start_broker: BrokerFactory, listener: Listener, redirector: str, tmp_path: Path
) -> None:
    port = int(redirector.split(":")[2].split("/")[0])
    # The redirector itself is allowed explicitly, as a site would allow an internal mirror.
    platform = msgspec.structs.replace(LOCAL, fetch_allow=[f"127.0.0.1:{port}"])
    broker = await start_broker(allow_loopback_fetch=False, platforms=[platform])
    for target in (f"http://127.0.0.1:{listener.port}/x", f"http://localhost:{listener.port}/x"):
        request = data_request(f"{redirector}?url={target}")
        uuid = await accept_first(broker, request)
        assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "FAILED"
        log = await (await broker.get(f"/sessions/{uuid}/log")).json()
        (item,) = log["session"]["data"]
        assert item["phase"] == "FAILED"
        reasons = " ".join(m["message"] for m in item["meta"]["messages"])
        assert "refused" in reasons
        assert "loopback address" in reasons
    assert listener.connections == 0


async def test_embedded_mode_allows_loopback_and_explicit_allowances_work(
    make_client: ClientFactory, listener: Listener
) -> None:
    location = f"http://127.0.0.1:{listener.port}/x"
    embedded = await make_client()
    body = await (await embedded.post("/requests", json=data_request(location))).json()
    assert body["result"] == "YES", body
    allowed = msgspec.structs.replace(LOCAL, fetch_allow=[f"127.0.0.1:{listener.port}"])
    fenced = await make_client(allow_loopback_fetch=False, platforms=[allowed])
    body = await (await fenced.post("/requests", json=data_request(location))).json()
    assert body["result"] == "YES", body
    other = await (
        await fenced.post("/requests", json=data_request(f"http://127.0.0.1:{listener.port + 1}/"))
    ).json()
    assert other["result"] == "NO"
    assert listener.connections == 0  # offers never connect
