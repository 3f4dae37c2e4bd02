"""What an owner's pending offers hold: running sums in the store, checked where offers are held.

The owner's cap (fair holds) is read for every request, so it must not cost the
owner's history: the store keeps per owner and platform the sum of its pending
offer sets' shares (each set's largest offer), updated by hold, accept, reject
and expiry, and the hold itself refuses a set that would pass the cap, so
requests racing on two replicas cannot pass it together. Run on both stores.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import msgspec

from talicada.broker import fairness
from talicada.broker.service import Broker
from talicada.broker.store import OVER_CAP, Held, Store
from talicada.broker.store.memory import MemoryStore
from talicada.broker.store.redis import RedisStore
from talicada.settings import load
from tests.test_store import OFFERED, SMALL, FakeClock, broker_on, ping, valid


async def held(store: Store, owner: str, clock: FakeClock) -> Held:
    return await store.held(owner, int(clock.now.timestamp() * 1000))


def shares(view_offers: list[tuple[int, int]]) -> tuple[int, int]:
    """The share an offer set of (cores, GiB) offers holds: its largest of each."""
    return max(c for c, _ in view_offers), max(m for _, m in view_offers)


async def test_a_sets_share_is_its_largest_offer_until_its_last_offer_is_rejected(
    store: Store,
) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(cores=(1, 2)), clock), "alice")
    sizes = [(o.record.booking.cores, o.record.booking.memory) for o in view.offers]
    assert len(sizes) > 1
    cores, memory = shares(sizes)
    assert await held(store, "alice", clock) == {"small": (cores, memory, view.record.expires)}
    assert await held(store, "bob", clock) == {}

    # Rejecting all but one leaves the set pending, and still holding its share.
    *others, last = view.record.offers
    for uuid in others:
        await broker.update_phase(uuid, "alice", "REJECTED", "client")
    assert (await held(store, "alice", clock))["small"][:2] == (cores, memory)
    await broker.update_phase(last, "alice", "REJECTED", "client")
    assert await held(store, "alice", clock) == {}


async def test_accepting_or_expiry_ends_a_sets_share(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    taken = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    left = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    assert (await held(store, "alice", clock))["small"][0] == 2
    await broker.update_phase(taken.record.offers[0], "alice", "ACCEPTED", "client")
    assert (await held(store, "alice", clock))["small"][0] == 1  # the other set still pends
    clock.now += timedelta(minutes=5)
    assert await broker.driver.run_due() >= len(left.record.offers)
    assert await held(store, "alice", clock) == {}


async def test_a_hold_past_the_owners_cap_is_refused_and_writes_nothing(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    first = await broker.request(valid(ping(cores=(2, 2)), clock), "alice")
    assert (await held(store, "alice", clock))["small"][0] == 2
    # A second set planned as if the first held nothing, held against a cap of 3 cores.
    second = await broker.request(valid(ping(cores=(2, 2)), clock), "bob")
    offers = [
        msgspec.structs.replace(live.record, owner="alice", uuid=f"{live.record.uuid[:-4]}beef")
        for live in second.offers[:1]
    ]
    offerset = msgspec.structs.replace(
        second.record, owner="alice", uuid="00000000-0000-4000-8000-00000000cafe"
    )
    history = [OFFERED]
    before = await store.entries("small")
    result = await store.hold(offerset, offers, {"small": (4, 8)}, history, {"small": (3, 64)})
    assert result == OVER_CAP
    assert await store.offerset(offerset.uuid) is None
    assert await store.sessions([offers[0].uuid]) == [None]
    assert await store.entries("small") == before
    assert (await held(store, "alice", clock))["small"][0] == 2
    # Within the cap, the same hold is saved and counted.
    assert (
        await store.hold(offerset, offers, {"small": (64, 64)}, history, {"small": (4, 64)}) is None
    )
    assert (await held(store, "alice", clock))["small"][0] == 4
    assert first.record.result == "YES"


async def test_requests_racing_on_two_replicas_never_pass_the_owners_cap(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    # Given a platform of 64 cores whose owner cap is 4 cores, and two replicas
    platform = msgspec.structs.replace(SMALL, cores=64, memory=128, max_held_cores=4)
    tokens = tmp_path / "tokens"
    tokens.write_text("a" * 24 + " alice\n")
    settings = msgspec.structs.replace(
        load(environ={}, auth_tokens_file=str(tokens)), platforms=[platform]
    )
    clock = FakeClock()
    other_store = (
        await RedisStore.connect(redis_url, prefix=store.keys.prefix)
        if isinstance(store, RedisStore)
        else store
    )
    replicas = [Broker(settings, store, clock=clock), Broker(settings, other_store, clock=clock)]
    try:
        # When one owner sends sixteen 1-core requests at once, half to each
        views = await asyncio.gather(
            *(
                replicas[i % 2].request(valid(ping(cores=(1, 1)), clock), "alice", max_offers=1)
                for i in range(16)
            )
        )
    finally:
        if other_store is not store:
            assert isinstance(other_store, RedisStore)
            await other_store.close()
    # Then exactly the cap's worth got offers, the rest a NO naming the cap
    granted = [v for v in views if v.record.result == "YES"]
    assert len(granted) == fairness.owner_cap(platform)[0] == 4
    assert (await held(store, "alice", clock))["small"][0] == 4
    refused = [v for v in views if v.record.result == "NO"]
    assert all(m.kind == "urn:talicada:error:held-cap" for v in refused for m in v.record.messages)


async def test_sums_restart_once_every_set_they_count_has_expired(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    first = await broker.request(valid(ping(cores=(1, 1)), clock), "alice", max_offers=1)
    # A share whose release is lost (a failover dropping a write, an older replica)…
    if isinstance(store, RedisStore):
        await store.client.hdel(store.keys.offerset(first.record.uuid), "held")
    else:
        assert isinstance(store, MemoryStore)
        store._shares.pop(first.record.uuid)
    await broker.update_phase(first.record.offers[0], "alice", "REJECTED", "client")
    assert (await held(store, "alice", clock))["small"][0] == 1  # stuck
    late = await broker.request(valid(ping(cores=(1, 1)), clock), "alice", max_offers=1)
    assert (await held(store, "alice", clock))["small"][0] == 2
    # …counts nothing once its latest expiry has passed
    clock.now += timedelta(minutes=5, seconds=1)
    assert await held(store, "alice", clock) == {}
    # and a set held before the expiry timers run restarts the sums; the expired
    # sets' late releases then take nothing off the new ones.
    pending = await broker.request(valid(ping(cores=(1, 1)), clock), "alice", max_offers=1)
    second = await broker.request(valid(ping(cores=(2, 2)), clock), "alice", max_offers=1)
    assert (await held(store, "alice", clock))["small"][0] == 3
    assert pending.record.result == second.record.result == "YES"
    # The late set's expiry timer runs now; its share went with the restart.
    assert await broker.driver.run_due() == 1
    (expired,) = await store.sessions(late.record.offers)
    assert expired is not None
    assert expired.phase == "EXPIRED"
    assert (await held(store, "alice", clock))["small"][0] == 3
