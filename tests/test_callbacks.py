"""Signed callbacks: unsigned, wrongly signed, stale and replayed reports change nothing."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from talicada.broker.keys import CALLBACK_SECRET
from talicada.events.report import Report, encoder
from talicada.events.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signature
from tests.conftest import ClientFactory
from tests.lifecycle_support import Client, accept_first, task, wait_for_phase


async def preparing_session(client: Client) -> tuple[str, str]:
    """A session waiting for its workers (none run here): its uuid and its executable's."""
    uuid = await accept_first(client, task("ping"))
    await wait_for_phase(client, uuid, {"PREPARING"})
    session = await (await client.get(f"/sessions/{uuid}")).json()
    return uuid, session["executable"]["meta"]["uuid"]


async def state(client: Client, uuid: str) -> dict[str, Any]:
    log: dict[str, Any] = await (await client.get(f"/sessions/{uuid}/log")).json()
    return log


def report_body(component: str, delivery: str = "event-1:exe:AVAILABLE") -> bytes:
    return encoder.encode(
        Report(delivery=delivery, event="event-1", component=component, phase="AVAILABLE")
    )


async def test_a_signed_report_advances_the_session_and_its_replay_changes_nothing(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    uuid, executable = await preparing_session(client)
    (secret,) = client.app[CALLBACK_SECRET]
    body = report_body(executable)
    first = await client.post(
        f"/callbacks/{uuid}", data=body, headers=sign(secret, uuid, body, time.time())
    )
    assert first.status == 200
    assert (await first.json())["status"] == "ok"
    after = await state(client, uuid)
    assert after["session"]["executable"]["phase"] == "AVAILABLE"
    # the same delivery again, freshly signed: accepted, and no effect
    again = await client.post(
        f"/callbacks/{uuid}", data=body, headers=sign(secret, uuid, body, time.time())
    )
    assert again.status == 200
    assert (await again.json())["status"] == "duplicate"
    assert await state(client, uuid) == after


async def test_unsigned_wrongly_signed_and_stale_reports_are_refused(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    uuid, executable = await preparing_session(client)
    (secret,) = client.app[CALLBACK_SECRET]
    body = report_body(executable)
    before = await state(client, uuid)
    now = int(time.time())
    attempts = {
        "unsigned": {},
        "wrong secret": sign(b"not the secret" * 2, uuid, body, now),
        "tampered body": sign(secret, uuid, body.replace(b"AVAILABLE", b"RUNNING!!"), now),
        "stale": sign(secret, uuid, body, now - 301),
        "from the future": sign(secret, uuid, body, now + 301),
        "bad timestamp": {
            TIMESTAMP_HEADER: "soon",
            SIGNATURE_HEADER: signature(secret, uuid, now, body),
        },
        "another session": sign(secret, str(uuidlib.uuid4()), body, now),
        "digits of another script": {
            TIMESTAMP_HEADER: "١٢٣",
            SIGNATURE_HEADER: signature(secret, uuid, now, body),
        },
    }
    for name, headers in attempts.items():
        response = await client.post(f"/callbacks/{uuid}", data=body, headers=headers)
        assert response.status == 401, name
        message = (await response.json())["messages"][0]["message"]
        assert "X-Talicada-Signature" in message, name
    assert await state(client, uuid) == before


async def test_a_report_about_an_unknown_component_is_a_conflict(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    uuid, _ = await preparing_session(client)
    (secret,) = client.app[CALLBACK_SECRET]
    body = report_body("00000000-0000-4000-8000-000000000000")
    response = await client.post(
        f"/callbacks/{uuid}", data=body, headers=sign(secret, uuid, body, time.time())
    )
    assert response.status == 409


async def test_a_malformed_signed_report_is_a_400(make_client: ClientFactory) -> None:
    client = await make_client()
    uuid, _ = await preparing_session(client)
    body = b'{"delivery": 1}'
    headers = sign(client.app[CALLBACK_SECRET][0], uuid, body, time.time())
    response = await client.post(f"/callbacks/{uuid}", data=body, headers=headers)
    assert response.status == 400


async def test_two_secrets_are_accepted_while_rotating_and_a_third_is_not(
    make_client: ClientFactory,
) -> None:
    new, old = b"n" * 32, b"o" * 32
    client = await make_client(callback_secret=new.decode(), callback_secret_previous=old.decode())
    assert client.app[CALLBACK_SECRET] == (new, old)  # workers sign with the first
    uuid, executable = await preparing_session(client)
    for secret, status in ((b"x" * 32, 401), (old, 200), (new, 200)):
        body = report_body(executable)
        response = await client.post(
            f"/callbacks/{uuid}", data=body, headers=sign(secret, uuid, body, time.time())
        )
        assert response.status == status, secret


def test_a_short_callback_secret_stops_startup() -> None:
    import pytest

    from talicada.settings import SettingsError, load

    for setting in ("callback_secret", "callback_secret_previous"):
        with pytest.raises(SettingsError, match=setting):
            load(environ={}, **{setting: "x"})
