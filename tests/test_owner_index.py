"""A live session stays in its owner's list however far ahead it is booked (issue 9).

The Redis store used to prune the owner index by creation time on every new
offer, so a session booked 30 or more days ahead vanished from
``GET /sessions`` while still ACCEPTED. Entries now leave the index only once
their session's keys have expired (after it finished and its retention ran out).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from talicada.broker.store import Store
from talicada.broker.store.redis import RedisStore
from talicada.schema.iso8601 import format_instant
from tests.conftest import ClientFactory
from tests.lifecycle_support import ACCEPT


def request_starting(start: datetime) -> dict[str, object]:
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "schedule": {
            "requested": {"duration": "PT1H", "start": f"{format_instant(start)}/P1D"},
        },
    }


async def test_a_session_booked_forty_days_ahead_stays_listed_after_thirty_days(
    make_client: ClientFactory,
) -> None:
    now = [datetime.now(UTC).replace(microsecond=0)]
    client = await make_client(clock=lambda: now[0], timers=False)
    offers = await (
        await client.post("/requests", json=request_starting(now[0] + timedelta(days=40)))
    ).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    assert (await client.post(f"/sessions/{uuid}", json=ACCEPT)).status == 200
    # Thirty-one days on, the owner asks for something else (this used to prune).
    now[0] += timedelta(days=31)
    later = await client.post("/requests", json=request_starting(now[0] + timedelta(hours=1)))
    assert later.status == 200
    listed = await (await client.get("/sessions", params={"phase": "ACCEPTED"})).json()
    assert uuid in [item["meta"]["uuid"] for item in listed["sessions"]], listed


async def test_sessions_whose_keys_expired_leave_the_index_when_listed(
    store: Store, make_client: ClientFactory
) -> None:
    if not isinstance(store, RedisStore):
        return  # the memory store forgets a session and its index entry together
    client = await make_client(timers=False)
    offers = await (await client.post("/requests", json=request_starting(datetime.now(UTC)))).json()
    gone, kept = offers["offers"][0]["meta"]["uuid"], offers["offers"][1]["meta"]["uuid"]
    await store.client.unlink(store.keys.session(gone))  # as if retention ran out
    listed = await (await client.get("/sessions", params={"offers": "true"})).json()
    uuids = [item["meta"]["uuid"] for item in listed["sessions"]]
    assert kept in uuids
    assert gone not in uuids
    assert await store.client.zscore(store.keys.owner_index("anonymous"), gone) is None
    assert await store.client.zscore(store.keys.owner_index("anonymous"), kept) is not None
