"""Fair holds (must show 2): one owner cannot hold more than its cap with pending offers,
a second owner still gets offers meanwhile, a NO says whether capacity is booked or only
held (and until when), and a client may ask for fewer offers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.settings import LOCAL, PlatformSettings
from tests.conftest import ClientFactory
from tests.lifecycle_support import ACCEPT, Client

ALICE, BOB = "a" * 24, "b" * 24
#: Eight cores; a session takes at most two, so one owner may hold four (half).
FAIR = msgspec.structs.replace(LOCAL, name="fair", cores=8, memory=16, max_cores=2, max_memory=4)


def request(**schedule: Any) -> dict[str, Any]:
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:delay-1.0"},
        "compute": {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
            "simple-compute-resource-1.0",
            "cores": {"min": 1, "max": 2},
            "memory": {"min": 1, "max": 2},
        },
        "schedule": {"requested": {"duration": "PT10M", **schedule}},
    }


async def ask(client: Client, token: str, body: dict[str, Any], **headers: str) -> Any:
    response = await client.post(
        "/requests", json=body, headers={"Authorization": f"Bearer {token}", **headers}
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def broker(make_client: ClientFactory, tmp_path: Path, platform: PlatformSettings) -> Client:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n")
    return await make_client(auth_tokens_file=str(tokens), platforms=[platform])


def held(offersets: list[Any]) -> int:
    """Cores the offer sets hold: each counts its largest offer (siblings are alternatives)."""
    return sum(
        max(o["compute"]["cores"]["min"] for o in s["offers"]) for s in offersets if s["offers"]
    )


async def test_one_owner_stops_at_its_cap_while_another_still_gets_offers(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await broker(make_client, tmp_path, FAIR)
    first = await ask(client, ALICE, request())
    second = await ask(client, ALICE, request())
    assert first["result"] == second["result"] == "YES"
    assert held([first, second]) == 4  # the cap: half of eight cores
    third = await ask(client, ALICE, request())
    assert third["result"] == "NO"
    (reason,) = third["meta"]["messages"]
    assert reason["kind"] == "urn:talicada:error:held-cap"
    assert reason["values"]["cores"] == "4"
    assert reason["values"]["cap_cores"] == "4"
    latest = max(parse_instant(s["expires"]) for s in (first, second))
    assert parse_instant(reason["values"]["expires"]) == latest

    # Bob, meanwhile, gets offers on the same platform.
    theirs = await ask(client, BOB, request())
    assert theirs["result"] == "YES"
    assert theirs["offers"]

    # Accepting one offer makes it a booking, not a pending offer: room again.
    chosen = first["offers"][0]["meta"]["uuid"]
    accepted = await client.post(
        f"/sessions/{chosen}", json=ACCEPT, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert accepted.status == 200
    again = await ask(client, ALICE, request())
    assert again["result"] == "YES"
    assert held([second, again]) <= 4


async def test_a_client_may_ask_for_fewer_offers(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await broker(make_client, tmp_path, FAIR)
    one = await ask(client, ALICE, request(), Prefer="offers=1")
    assert len(one["offers"]) == 1
    both = await ask(client, BOB, request(), Prefer="return=representation, offers=2")
    assert len(both["offers"]) == 2
    for bad in ("offers=0", "offers=33", "offers=²", "offers=x"):
        response = await client.post(
            "/requests",
            json=request(),
            headers={"Authorization": f"Bearer {BOB}", "Prefer": bad},
        )
        assert response.status == 400, bad
        assert (await response.json())["messages"][0]["values"]["path"] == "Prefer"


async def test_a_no_says_whether_capacity_is_held_by_offers_or_booked(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    small = msgspec.structs.replace(FAIR, cores=2, memory=4)
    client = await broker(make_client, tmp_path, small)
    now = datetime.now(UTC)
    soon = {"start": f"{format_instant(now)}/{format_instant(now + timedelta(minutes=1))}"}
    alices = await ask(client, ALICE, request(**soon), Prefer="offers=1")
    assert alices["result"] == "YES"
    held_only = await ask(client, BOB, request(**soon))
    assert held_only["result"] == "NO"
    (reason,) = held_only["meta"]["messages"]
    assert reason["kind"] == "urn:talicada:error:no-capacity-held"
    assert "held by pending offers" in reason["message"]
    assert parse_instant(reason["values"]["expires"]) >= parse_instant(alices["expires"])

    chosen = alices["offers"][0]["meta"]["uuid"]
    accepted = await client.post(
        f"/sessions/{chosen}", json=ACCEPT, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert accepted.status == 200
    booked = await ask(client, BOB, request(**soon))
    assert booked["result"] == "NO"
    (reason,) = booked["meta"]["messages"]
    assert reason["kind"] == "urn:talicada:error:no-capacity"
    assert "booked" in reason["message"]
