"""The seed's notebook request, end to end, on a platform of three stand-ins.

Skaha launches, SRCNet data management stages the SKAO data, Harbor checks
(and pulls through its proxy cache) the image: the same services a CANFAR
site of SRCNet runs, each replaced by its stand-in on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from aiohttp.test_utils import TestServer

from tests.conftest import EXAMPLES, BrokerFactory
from tests.lifecycle_support import ACCEPT, CANCEL, Client, wait_for_phase
from tests.platform_support import STORAGE_AREA, canfar
from tests.standins.harbor import HarborStandIn
from tests.standins.harbor import build_app as harbor_app
from tests.standins.skaha import DEFAULT_TOKEN, SkahaState, create_app
from tests.standins.srcnet import Copy, SrcnetStandIn
from tests.standins.srcnet import build_app as srcnet_app

SEED_ITEMS = [("testing", "zrq-test-20250509-082506"), ("testing", "zrq-test-20250509-094501")]
NOTEBOOK = "images.canfar.net/skaha/base-notebook:latest"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Site:
    """The three stand-ins of one site, and a platform on them."""

    skaha: SkahaState
    srcnet: SrcnetStandIn
    harbor: HarborStandIn
    urls: dict[str, str]

    def platform(self, tmp_path: Path) -> Any:
        return canfar(
            tmp_path,
            skaha=self.urls["skaha"],
            token=DEFAULT_TOKEN,
            srcnet=self.urls["srcnet"],
            harbor=self.urls["harbor"],
        )


@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    skaha = SkahaState(start_delay=0.3)
    srcnet = SrcnetStandIn(staging_for=0.3)
    for namespace, name in SEED_ITEMS:
        srcnet.add_object(
            namespace,
            name,
            [
                Copy("FAR_AWAY", "sa-elsewhere", "ELSEWHERE"),
                Copy("CANFAR_RSE", STORAGE_AREA, "CANFAR"),
            ],
        )
    harbor = HarborStandIn()
    harbor.add_upstream("skaha/base-notebook", DIGEST, 734_003_200, ["latest"])
    servers = {
        "skaha": TestServer(create_app(skaha), host="127.0.0.1"),
        "srcnet": TestServer(srcnet_app(srcnet), host="127.0.0.1"),
        "harbor": TestServer(harbor_app(harbor), host="127.0.0.1"),
    }
    for server in servers.values():
        await server.start_server()
    urls = {
        "skaha": str(servers["skaha"].make_url("/skaha")),
        "srcnet": str(servers["srcnet"].make_url("/api")),
        "harbor": str(servers["harbor"].make_url("")).rstrip("/"),
    }
    yield Site(skaha, srcnet, harbor, urls)
    for server in servers.values():
        await server.close()


def seed_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = yaml.safe_load((EXAMPLES / "seed-notebook-request.yaml").read_text())
    request.update(changes)
    return request


async def offers(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/requests", json=request)
    body: dict[str, Any] = await response.json()
    return body


async def settle(condition: Any, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the stand-ins have no event to await
            await asyncio.sleep(0.05)


async def test_the_seed_request_runs_as_a_notebook_on_skaha_with_staged_data(
    start_broker: BrokerFactory, site: Site, tmp_path: Path
) -> None:
    client = await start_broker(platforms=[site.platform(tmp_path)])
    # Given offers for the seed's request, in sizes Skaha accepts
    body = await offers(client, seed_request())
    assert body["result"] == "YES", body
    context = site.skaha
    for offer in body["offers"]:
        assert offer["compute"]["cores"]["min"] in context.cores
        assert offer["compute"]["memory"]["min"] in context.ram
    uuid = body["offers"][0]["uuid"]
    # When one is accepted
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    # Then it becomes AVAILABLE with the notebook's connector
    assert await wait_for_phase(client, uuid, {"AVAILABLE", "FAILED"}) == "AVAILABLE"
    session = await (await client.get(f"/sessions/{uuid}")).json()
    (connector,) = session["connectors"]
    assert connector["location"].startswith(context.public_url)
    # and both SKAO items were staged through prepareData from the replica at the site
    staged = [call for call in site.srcnet.calls if call.route == "stage"]
    assert len(staged) == 2
    assert all(b"sa-canfar" in call.body for call in staged)
    # and the image was pulled through Harbor's proxy cache
    assert site.harbor.count("manifest") == 1
    # and exactly one notebook session was launched on Skaha
    (created,) = [call for call in context.calls if call.route == "create"]
    assert created.query["type"] == ["notebook"]
    assert created.query["image"] == [NOTEBOOK]

    # When the session is cancelled
    assert (await client.post(f"/sessions/{uuid}", json=CANCEL)).status == 200
    # Then the Skaha session is deleted and both stagings are released
    await settle(lambda: context.count("delete") == 1 and len(site.srcnet.released) == 2)
    (skaha_id,) = list(context.sessions) or [created.path]
    assert next(c.path for c in context.calls if c.route == "delete").endswith(skaha_id)
    assert len(set(site.srcnet.released)) == 2  # each staging job released once
    assert await wait_for_phase(client, uuid, {"CANCELLED"}) == "CANCELLED"


async def test_a_staging_failure_fails_the_session_naming_the_item_and_launches_nothing(
    start_broker: BrokerFactory, site: Site, tmp_path: Path
) -> None:
    site.srcnet.failures[SEED_ITEMS[1]] = "tape library offline"
    client = await start_broker(platforms=[site.platform(tmp_path)])
    body = await offers(client, seed_request())
    uuid = body["offers"][0]["uuid"]
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    assert await wait_for_phase(client, uuid, {"FAILED", "AVAILABLE"}) == "FAILED"
    session = await (await client.get(f"/sessions/{uuid}")).json()
    # (the seed dialect keeps messages on the component itself, not under meta)
    messages = [m["message"] for item in session["data"] for m in item.get("messages", [])]
    assert any("zrq-test-20250509-094501" in m and "tape library offline" in m for m in messages), (
        messages
    )
    assert site.skaha.count("create") == 0


async def test_an_image_whose_digest_differs_fails_before_launch(
    start_broker: BrokerFactory, site: Site, tmp_path: Path
) -> None:
    client = await start_broker(platforms=[site.platform(tmp_path)])
    request = seed_request()
    request["executable"]["image"]["digest"] = "sha256:" + "cd" * 32
    body = await offers(client, request)
    uuid = body["offers"][0]["uuid"]
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    assert await wait_for_phase(client, uuid, {"FAILED", "AVAILABLE"}) == "FAILED"
    session = await (await client.get(f"/sessions/{uuid}")).json()
    reasons = [m["message"] for m in session["executable"].get("messages", [])]
    assert any("cd" * 32 in r and DIGEST in r for r in reasons), reasons
    assert site.skaha.count("create") == 0
