"""Smaller contract fixes a new user's trial hit, each stated as the behaviour it now has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from talicada.broker.calendar import Entry
from talicada.broker.offers import schedule_for
from talicada.broker.planner import Window
from talicada.schema import messages as msg
from tests.conftest import ClientFactory
from tests.lifecycle_support import Client

PING = "urn:talicada:kinds:executable:ping-1.0"
DOCKER = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0"


def test_durations_and_instants_in_messages_are_iso_8601() -> None:
    """A timedelta value is written PT1H (never 1:00:00), an instant to the millisecond."""
    item = msg.make(
        msg.NO_CAPACITY,
        platform="p",
        duration=timedelta(hours=1),
        cores=100,
        memory=1,
        start=datetime(2026, 1, 1, 11, 58, 34, 999990, tzinfo=UTC),
        end=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert item.values["duration"] == "PT1H"
    assert item.values["start"] == "2026-01-01T11:58:35Z"
    assert "no window of PT1H with 100 cores" in item.message


def test_messages_write_measured_durations_to_the_millisecond() -> None:
    """A step that took 85.0000132 s, quoted at 90.0004 s, reads PT1M25S against PT1M30S."""
    item = msg.make(
        msg.STEP_QUOTED,
        "INFO",
        step="preparation",
        actual=timedelta(seconds=85.0000132),
        expected=timedelta(seconds=90.0004),
        pessimistic=timedelta(seconds=-0.25),
        basis="default",
        error="-6%",
    )
    values = item.values
    assert (values["actual"], values["expected"], values["pessimistic"]) == (
        "PT1M25S",
        "PT1M30S",
        "-PT0.25S",
    )


def test_offer_times_carry_no_float_artefacts() -> None:
    """Planning's float seconds (``…34.999990``, ``85.00001 s``) are written to the millisecond."""
    preparing = datetime(2026, 1, 1, 11, 58, 34, 999990, tzinfo=UTC)
    available = preparing + timedelta(seconds=85.00001)
    releasing = available + timedelta(minutes=10, microseconds=3)
    done = releasing + timedelta(seconds=59.9996)
    window = Window(preparing, available, releasing, done, Entry("local", 0, 1, 1, 1))
    schedule = schedule_for(window)
    assert schedule.preparing is not None
    assert schedule.available is not None
    assert schedule.releasing is not None
    assert (schedule.preparing.start, schedule.preparing.duration) == (
        "2026-01-01T11:58:35Z",
        "PT1M25S",
    )
    assert (schedule.available.start, schedule.available.duration) == (
        "2026-01-01T12:00:00Z/PT0S",
        "PT10M",
    )
    assert (schedule.releasing.start, schedule.releasing.duration) == (
        "2026-01-01T12:10:00Z",
        "PT1M",
    )


async def test_numbers_in_a_command_are_taken_as_text(make_client: ClientFactory) -> None:
    """``command: [10, 0]`` (as YAML clients send) is accepted and answered as strings."""
    client = await make_client()
    body = {"executable": {"kind": DOCKER, "image": {"locations": ["x"]}, "command": [10, 0.5]}}
    response = await client.post("/requests", json=body)
    assert response.status == 200, await response.text()
    # The local platform runs no containers: a NO whose message lists the URIs it can run.
    doc = await response.json()
    assert doc["result"] == "NO"
    texts = " ".join(item["message"] for item in doc["meta"]["messages"])
    assert PING in texts
    assert DOCKER in texts
    bad = {"executable": {**body["executable"], "command": [True]}}
    response = await client.post("/requests", json=bad)
    assert response.status == 400


async def test_a_wrong_field_in_an_update_names_the_fields_expected(client: Client) -> None:
    """``value`` on an integer delta is refused saying the kind takes ``delta``."""
    response = await client.post("/requests", json={"executable": {"kind": PING}})
    offer = (await response.json())["offers"][0]["meta"]["uuid"]
    update = {"kind": "uri:integer-delta-update", "path": "schedule.available.duration", "value": 5}
    response = await client.post(f"/sessions/{offer}", json=update)
    assert response.status == 400
    (item,) = (await response.json())["messages"]
    assert item["values"]["path"] == "value"
    assert "uri:integer-delta-update takes kind, path, delta, units" in item["message"]


async def test_a_long_wait_is_clamped_not_refused(client: Client) -> None:
    """``wait=600`` is answered (UWS clamps to the server's limit); a negative one is a 400."""
    response = await client.post("/requests", json={"executable": {"kind": PING}})
    offer = (await response.json())["offers"][0]["meta"]["uuid"]
    reject = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
    assert (await client.post(f"/sessions/{offer}", json=reject)).status == 200
    response = await client.get(f"/sessions/{offer}", params={"wait": "600"})
    assert response.status == 200
    assert (await response.json())["phase"] == "REJECTED"
    response = await client.get(f"/sessions/{offer}", params={"wait": "-1"})
    assert response.status == 400


async def test_a_long_poll_until_final_waits_through_releasing(broker: Client) -> None:
    """One ``?until=final`` poll returns the final phase, however many phases pass first."""
    response = await broker.post("/direct", json={"executable": {"kind": PING}})
    session = await response.json()
    uuid, phase = session["meta"]["uuid"], session["phase"]
    response = await broker.get(
        f"/sessions/{uuid}", params={"wait": "30", "phase": phase, "until": "final"}
    )
    assert response.status == 200
    assert (await response.json())["phase"] == "COMPLETED"
    response = await broker.get(f"/sessions/{uuid}", params={"wait": "1", "until": "soon"})
    assert response.status == 400


async def test_the_log_names_components_and_gathers_their_messages(broker: Client) -> None:
    """History entries of a component give its family and name; ``messages`` says whose."""
    body = {"executable": {"kind": PING, "meta": {"name": "pinger"}}}
    response = await broker.post("/direct", json=body)
    uuid = (await response.json())["meta"]["uuid"]
    response = await broker.get(f"/sessions/{uuid}", params={"wait": "30", "until": "final"})
    assert (await response.json())["phase"] == "COMPLETED"
    log = await (await broker.get(f"/sessions/{uuid}/log")).json()
    named = [step for step in log["history"] if step.get("component")]
    assert named
    assert all(step["family"] and step["name"] for step in named)
    assert any(step["family"] == "executable" and step["name"] == "pinger" for step in named)
    assert isinstance(log["messages"], list)
    for item in log["messages"]:
        assert item["about"]


async def test_availability_in_xml_is_a_vosi_document(client: Client) -> None:
    """``/availability`` as XML uses the VOSI namespace, as VOSI clients expect."""
    import defusedxml.ElementTree as SafeET

    response = await client.get("/availability", headers={"Accept": "application/xml"})
    assert response.status == 200
    root = SafeET.fromstring(await response.read())
    vosi = "{http://www.ivoa.net/xml/VOSIAvailability/v1.0}"
    assert root.tag == f"{vosi}availability"
    available = root.find(f"{vosi}available")
    assert available is not None
    assert available.text == "true"
    assert root.find(f"{vosi}upSince") is not None


async def test_delete_ends_a_session_as_uws_does(client: Client) -> None:
    """DELETE rejects an open offer and cancels an accepted session, and forgets a
    finished one; 303 to the list each time."""
    response = await client.post("/requests", json={"executable": {"kind": PING}})
    first = (await response.json())["offers"][0]["meta"]["uuid"]
    response = await client.delete(f"/sessions/{first}", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].endswith("/sessions")
    assert (await (await client.get(f"/sessions/{first}")).json())["phase"] == "REJECTED"
    response = await client.post("/requests", json={"executable": {"kind": PING}})
    offerset = await response.json()
    offer = offerset["offers"][0]["meta"]["uuid"]
    accept = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    assert (await client.post(f"/sessions/{offer}", json=accept)).status == 200
    response = await client.delete(f"/sessions/{offer}", allow_redirects=False)
    assert response.status == 303
    assert (await (await client.get(f"/sessions/{offer}")).json())["phase"] == "CANCELLED"
    # Deleting a finished session forgets it: gone from reads, lists and its offer set.
    assert (await client.delete(f"/sessions/{offer}", allow_redirects=False)).status == 303
    assert (await client.get(f"/sessions/{offer}")).status == 404
    assert (await client.get(f"/sessions/{offer}/log")).status == 404
    listed = await (await client.get("/sessions", params={"offers": "true"})).json()
    assert offer not in {s["meta"]["uuid"] for s in listed["sessions"]}
    assert first in {s["meta"]["uuid"] for s in listed["sessions"]}
    left = await (await client.get(f"/offersets/{offerset['meta']['uuid']}")).json()
    assert offer not in {o["meta"]["uuid"] for o in left["offers"]}
    # …and once more, or an unknown uuid, is 404.
    assert (await client.delete(f"/sessions/{offer}")).status == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await client.delete(f"/sessions/{missing}")).status == 404
