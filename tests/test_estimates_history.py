"""Offers quote preparation from what finished steps took (issue 13, must-show 1).

The broker times every preparation step from the worker reports it gets, so
these tests play the stager's part over the real signed callback route, with
an injected clock standing in for the hours the stagings take.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from talicada.broker.history import estimate_error
from talicada.broker.keys import BROKER, CALLBACK_SECRET
from talicada.events.report import Report, encoder
from talicada.events.signing import sign
from talicada.schema.iso8601 import parse_duration
from talicada.settings import PlatformSettings, SrcnetSettings
from tests.conftest import BrokerFactory, ClientFactory
from tests.lifecycle_support import (
    ACCEPT,
    Client,
    accept_first,
    checksum_request,
    wait_for_phase,
)

T0 = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
MB = 10**6
#: A site that stages SKAO data through SRCNet (no worker runs: the test reports).
SITE = PlatformSettings(
    name="site",
    stager="srcnet",
    srcnet=SrcnetSettings(url="http://127.0.0.1:9/srcnet", storage_area="sa-site"),
    executables=["ping"],
    data=["skao-data-resource"],
    cores=64,
    memory=256,
)
#: How long staging from each replica really takes: seconds for ``size`` bytes.
SITES: dict[str, Callable[[int], float]] = {
    "SLOW-RSE": lambda size: 40 + size / (4 * MB),  # far away, on a thin link
    "FAST-RSE": lambda size: 5 + size / (250 * MB),  # the next rack over
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def staging_request(name: str, size: int, replica: str) -> dict[str, Any]:
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "schedule": {"requested": {"duration": "PT10M"}},
        "data": [
            {
                "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/skao-data-resource-1.0",
                "skao": {
                    "namespace": "survey",
                    "objectname": name,
                    "datasize": size,
                    "replicas": [{"rsename": replica}],
                },
            }
        ],
    }


async def report(client: Client, uuid: str, component: str, phase: str, **extra: Any) -> None:
    """What a worker sends: a signed report over ``POST /callbacks/{uuid}``."""
    body = encoder.encode(
        Report(
            delivery=f"{uuid}:{component}:{phase}",
            event=f"event-{component}",
            component=component,
            phase=phase,  # type: ignore[arg-type]
            **extra,
        )
    )
    secret = client.app[CALLBACK_SECRET][0]
    response = await client.post(
        f"/callbacks/{uuid}", data=body, headers=sign(secret, uuid, body, time.time())
    )
    assert response.status == 200, await response.text()


async def stage_once(
    client: Client, clock: Clock, name: str, size: int, replica: str, seconds: float
) -> dict[str, Any]:
    """Accept an offer for ``name``, let its storage be allocated in 3 s and its
    data staged from ``replica`` in ``seconds``; the session's record after."""
    offers = await (
        await client.post("/requests", json=staging_request(name, size, replica))
    ).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    await client.app[BROKER].driver.run_due()  # the start timer: preparation begins now
    session = await (await client.get(f"/sessions/{uuid}")).json()
    storage, data = session["storage"][0]["meta"]["uuid"], session["data"][0]["meta"]["uuid"]
    clock.now += timedelta(seconds=3)
    await report(client, uuid, storage, "AVAILABLE", outputs={"storage_area": "sa-site"})
    clock.now += timedelta(seconds=seconds)
    await report(client, uuid, data, "AVAILABLE", backend="srcnet", outputs={"replica": replica})
    clock.now += timedelta(seconds=1)
    log: dict[str, Any] = await (await client.get(f"/sessions/{uuid}/log")).json()
    return log


def data_estimate(offer: dict[str, Any]) -> dict[str, str]:
    (item,) = offer["data"]
    messages = item["meta"]["messages"]
    (estimate,) = [m for m in messages if m["kind"] == "urn:talicada:info:estimate"]
    values: dict[str, str] = estimate["values"]
    return values


async def test_offers_quote_a_slow_replica_site_longer_than_a_fast_one_after_50_stagings_from_each(
    make_client: ClientFactory,
) -> None:
    clock = Clock()
    client = await make_client(platforms=[SITE], clock=clock, timers=False, max_offers=1)
    rng = random.Random(13)
    # Given 50 finished stagings from each site, of 0.2-2 GB, each ±10% off its site's rate
    for n in range(50):
        for replica, takes in SITES.items():
            size = rng.randint(200, 2000) * MB
            await stage_once(
                client, clock, f"old-{n}", size, replica, takes(size) * rng.gauss(1, 0.1)
            )

    # When new data of 1.2 GB is asked for from each site
    size = 1200 * MB
    quoted = {}
    for replica in SITES:
        answer = await client.post("/requests", json=staging_request("new", size, replica))
        (offer,) = (await answer.json())["offers"]
        quoted[replica] = offer

    # Then each quote comes from that site's history and is close to what staging takes there
    expected = {
        r: parse_duration(data_estimate(o)["expected"]).total_seconds() for r, o in quoted.items()
    }
    for replica, offer in quoted.items():
        estimate = data_estimate(offer)
        assert estimate["basis"] in ("history", "model"), estimate
        assert int(estimate["samples"]) >= 5
        truth = SITES[replica](size)
        assert abs(expected[replica] - truth) / truth < 0.2, (replica, expected[replica], truth)
    # and the two differ clearly (the static defaults quote both alike)
    assert expected["SLOW-RSE"] > 10 * expected["FAST-RSE"]
    preparing = {
        replica: parse_duration(offer["schedule"]["preparing"]["duration"]).total_seconds()
        for replica, offer in quoted.items()
    }
    assert preparing["SLOW-RSE"] > 5 * preparing["FAST-RSE"]
    # The offers start no earlier than the planned (pessimistic) preparation allows
    for replica, offer in quoted.items():
        planned = parse_duration(data_estimate(offer)["pessimistic"]).total_seconds()
        assert planned >= expected[replica]
        assert preparing[replica] >= planned
        (item,) = offer["data"]
        assert parse_duration(item["schedule"]["preparing"]["duration"]).total_seconds() == planned


async def test_each_finished_step_is_compared_with_its_quote_in_the_record_and_the_metrics(
    make_client: ClientFactory,
) -> None:
    clock = Clock()
    client = await make_client(platforms=[SITE], clock=clock, timers=False, max_offers=1)
    log = await stage_once(client, clock, "one", 400 * MB, "SLOW-RSE", 77.5)
    (data,) = log["session"]["data"]
    (took,) = [
        m for m in data["meta"]["messages"] if m["kind"] == "urn:talicada:info:step-duration"
    ]
    assert took["values"]["actual"] == "PT1M17.5S"
    assert took["values"]["basis"] == "default"
    quoted = parse_duration(took["values"]["expected"]).total_seconds()
    assert took["values"]["error"] == f"{(77.5 - quoted) / quoted:+.0%}"
    (storage,) = log["session"]["storage"]
    assert any(
        m["values"].get("actual") == "PT3S"
        for m in storage["meta"]["messages"]
        if m["kind"] == "urn:talicada:info:step-duration"
    )

    metrics = await (await client.get("/metrics")).text()
    assert 'talicada_preparation_step_seconds_count{platform="site",step="stage"} 1.0' in metrics
    assert 'talicada_preparation_step_seconds_sum{platform="site",step="stage"} 77.5' in metrics
    assert 'talicada_estimate_ratio_count{basis="default",step="stage"} 1.0' in metrics


async def test_a_real_session_leaves_its_steps_in_the_history_and_the_next_offer_uses_them(
    start_broker: BrokerFactory, file_server: str
) -> None:
    # Given a broker whose workers really stage, launch and release (local platform)
    client = await start_broker(estimates={"min_samples": 1})
    request = checksum_request(file_server)
    uuid = await accept_first(client, request)
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"

    # Then every preparation step is in the record, timed against its quote
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    session = log["session"]
    parts = [session["executable"], session["compute"], *session["storage"], *session["data"]]
    for part in parts:
        took = [m for m in part["meta"]["messages"] if m["kind"].endswith("info:step-duration")]
        assert len(took) == 1, part["meta"]
        assert took[0]["values"]["basis"] == "default"
        assert parse_duration(took[0]["values"]["actual"]) < timedelta(seconds=30)

    # and the same request now gets quotes from that history: both files came
    # from the same host and the request does not say their sizes, so each item
    # gets the median of every staging from that host: both
    offers = await (await client.post("/requests", json=request)).json()
    offer = offers["offers"][0]
    for item in offer["data"]:
        estimate = data_estimate({"data": [item]})
        assert (estimate["basis"], estimate["samples"]) == ("history", "2")
    (launch,) = [
        m for m in offer["compute"]["meta"]["messages"] if m["kind"].endswith("info:estimate")
    ]
    assert (launch["values"]["basis"], launch["values"]["step"]) == ("history", "launch")


def test_a_step_quoted_at_nothing_says_how_much_longer_it_took_not_plus_nought_percent() -> None:
    assert estimate_error(77.5, 50.0) == "+55%"
    assert estimate_error(40.0, 50.0) == "-20%"
    assert estimate_error(0.0144, 0.0) == "+PT0.014S"
    assert estimate_error(0.0, 0.0) == "+PT0S"
