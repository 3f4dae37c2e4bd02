"""Watching a session: MQTT subscribers and SSE clients see every transition, in order."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import aiomqtt

from talicada.broker.keys import NOTIFIER
from tests.conftest import BrokerFactory
from tests.lifecycle_support import ACCEPT, Client, checksum_request, wait_for_phase

EXPECTED = ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]


async def sse_transitions(client: Client, uuid: str) -> list[str]:
    """Read the session's event stream to its end; the phases it reports."""
    phases: list[str] = []
    async with client.get(f"/sessions/{uuid}/events") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "transition":
                phases.append(json.loads(line.removeprefix("data: "))["to"])
    return phases


async def mqtt_transitions(url: str, uuid: str, ready: asyncio.Event) -> list[str]:
    """Subscribe to the session's topic and collect phases until a final one."""
    parts = urllib.parse.urlsplit(url)
    topic = f"talicada/sessions/anonymous/{uuid}"
    phases: list[str] = []
    async with aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883) as mqtt:
        await mqtt.subscribe(topic, qos=1)
        async for message in mqtt.messages:
            assert isinstance(message.payload, bytes)
            phase = json.loads(message.payload)["phase"]
            phases.append(phase)
            if phase == "OFFERED":
                ready.set()
            if phase in ("COMPLETED", "FAILED", "CANCELLED"):
                break
        await mqtt.publish(topic, b"", retain=True)  # leave no retained message behind
    return phases


async def test_mqtt_and_sse_watchers_see_every_transition_in_order(
    start_broker: BrokerFactory, file_server: str, mqtt_url: str
) -> None:
    client = await start_broker(mqtt_url=mqtt_url)
    offers = await (await client.post("/requests", json=checksum_request(file_server))).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    # Given an MQTT subscriber and an SSE client watching the offer
    subscribed = asyncio.Event()
    mqtt = asyncio.create_task(mqtt_transitions(mqtt_url, uuid, subscribed))
    sse = asyncio.create_task(sse_transitions(client, uuid))
    await asyncio.wait_for(subscribed.wait(), timeout=10)
    # When the offer is accepted and runs to the end
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    # Then each saw every transition, in order
    assert await asyncio.wait_for(sse, timeout=10) == EXPECTED
    assert await asyncio.wait_for(mqtt, timeout=10) == EXPECTED


async def test_a_long_poll_returns_as_soon_as_the_phase_changes(
    start_broker: BrokerFactory, file_server: str
) -> None:
    client = await start_broker()
    offers = await (await client.post("/requests", json=checksum_request(file_server))).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(
        client.get(f"/sessions/{uuid}", params={"wait": "20", "phase": "OFFERED"})
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    await client.post(f"/sessions/{uuid}", json=ACCEPT)
    response = await asyncio.wait_for(poll, timeout=5)
    assert (await response.json())["phase"] != "OFFERED"
    assert loop.time() - started < 5


async def test_a_bad_wait_is_a_400(start_broker: BrokerFactory, file_server: str) -> None:
    client = await start_broker()
    offers = await (await client.post("/requests", json=checksum_request(file_server))).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    response = await client.get(f"/sessions/{uuid}", params={"wait": "forever"})
    assert response.status == 400
    assert "wait" in (await response.json())["messages"][0]["message"]


async def test_a_replica_at_its_watcher_limit_answers_503_not_a_hang(
    start_broker: BrokerFactory, file_server: str
) -> None:
    client = await start_broker()
    offers = await (await client.post("/requests", json=checksum_request(file_server))).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    client.app[NOTIFIER].limit = 0
    for path, params in [(f"/sessions/{uuid}", {"wait": "5"}), (f"/sessions/{uuid}/events", {})]:
        response = await client.get(path, params=params)
        assert response.status == 503, path
        assert response.headers["Retry-After"] == "5"
    # a plain read needs no watcher
    assert (await client.get(f"/sessions/{uuid}")).status == 200


async def test_an_event_stream_resumes_after_the_last_event_id(
    start_broker: BrokerFactory, file_server: str
) -> None:
    client = await start_broker()
    offers = await (await client.post("/requests", json=checksum_request(file_server))).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    await client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    everything = await sse_transitions(client, uuid)
    ids: list[int] = []
    async with client.get(f"/sessions/{uuid}/events", headers={"Last-Event-ID": "3"}) as resumed:
        async for raw in resumed.content:
            line = raw.decode()
            if line.startswith("id: "):
                ids.append(int(line.removeprefix("id: ")))
    assert everything == EXPECTED
    assert ids
    assert ids[0] == 4
    assert ids == sorted(ids)
