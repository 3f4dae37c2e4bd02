"""Sibling offers hold their envelope, not their sum (issue 10).

The offers of one offer set are alternatives: at most one is ever accepted.
So on a platform they hold, per slot, the most cores and (apart) the most
memory of any of the set's still-OFFERED offers. Checked against a model of
one counter per slot, on both stores side by side, over random holds,
accepts, rejections, expiries, cancellations and resizes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talicada.broker.calendar import Entry
from talicada.broker.engine import Change, Rebook
from talicada.broker.records import Booking, OfferSetRecord, SessionRecord, Transition
from talicada.broker.service import Broker, OfferSetView
from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.broker.store.redis import RedisStore
from talicada.constants import Keys
from talicada.settings import PlatformSettings
from tests.test_store import OFFERED, FakeClock, broker_on, ping, valid

#: Slots the random calendars use; every booking ends before twice this.
SPAN = 60
CAPACITY = {"a": (6, 8), "b": (4, 6)}
FIRST = OFFERED
EIGHT = PlatformSettings(name="eight", cores=8, memory=16, max_duration=86400)

_TEMPLATE: dict[str, SessionRecord] = {}


async def template() -> SessionRecord:
    """One real offer record, to make random offers from (made once)."""
    if not _TEMPLATE:
        clock = FakeClock()
        view = await broker_on(MemoryStore(), clock, EIGHT).request(valid(ping(), clock), "alice")
        _TEMPLATE["offer"] = view.offers[0].record
    return _TEMPLATE["offer"]


_ids = itertools.count()


def new_id(kind: str) -> str:
    return f"{kind}-{next(_ids):08d}"


def transition(source: str, target: str) -> Transition:
    return Transition(time="2030-01-01T12:00:00Z", source=source, target=target, cause="test")


@dataclass
class Model:
    """The calendar the slow way: per platform, bookings and each set's OFFERED holds."""

    bookings: dict[str, Entry] = field(default_factory=dict)
    holds: dict[str, Entry] = field(default_factory=dict)  # uuid → hold (names its set)
    sets: dict[str, list[str]] = field(default_factory=dict)  # set → its offers

    def usage(self, platform: str) -> tuple[list[int], list[int]]:
        cores, memory = [0] * (2 * SPAN), [0] * (2 * SPAN)
        for entry in self.bookings.values():
            if entry.platform == platform:
                for slot in range(entry.first, entry.last):
                    cores[slot] += entry.cores
                    memory[slot] += entry.memory
        for offers in self.sets.values():
            held = [self.holds[u] for u in offers if u in self.holds]
            held = [entry for entry in held if entry.platform == platform]
            for slot in range(2 * SPAN):
                covering = [entry for entry in held if entry.first <= slot < entry.last]
                cores[slot] += max((entry.cores for entry in covering), default=0)
                memory[slot] += max((entry.memory for entry in covering), default=0)
        return cores, memory

    def within(self) -> bool:
        """Whether every platform stays within its capacity in every slot."""
        for platform, (cap_cores, cap_memory) in CAPACITY.items():
            cores, memory = self.usage(platform)
            if max(cores) > cap_cores or max(memory) > cap_memory:
                return False
        return True

    def fits(self, entry: Entry) -> bool:
        cores, memory = self.usage(entry.platform)
        cap_cores, cap_memory = CAPACITY[entry.platform]
        return all(
            cores[slot] + entry.cores <= cap_cores and memory[slot] + entry.memory <= cap_memory
            for slot in range(entry.first, entry.last)
        )

    def entry(self, uuid: str) -> Entry:
        return self.holds.get(uuid) or self.bookings[uuid]


class Stores:
    """The memory store and the Redis store, told the same things."""

    def __init__(self, stores: Sequence[Store]) -> None:
        self.stores = stores
        self.records: dict[str, SessionRecord] = {}

    async def hold(self, offers: list[Entry], expect: int | None) -> list[str]:
        """Hold one offer set of ``offers``; the uuids of its offers."""
        base = await template()
        offerset = new_id("set")
        records = [
            msgspec.structs.replace(
                base,
                uuid=new_id("offer"),
                offerset=offerset,
                platform=entry.platform,
                expires=2**42,
                booking=Booking(entry.first, entry.last, entry.cores, entry.memory),
            )
            for entry in offers
        ]
        record = OfferSetRecord(
            uuid=offerset,
            owner="alice",
            dialect=base.dialect,
            created=0,
            expires=2**42,
            result="YES",
            offers=[offer.uuid for offer in records],
        )
        for store in self.stores:
            assert await store.hold(record, records, CAPACITY, [FIRST] * len(records)) == expect
        if expect is None:
            self.records.update((offer.uuid, offer) for offer in records)
        return [offer.uuid for offer in records]

    async def accept(self, uuid: str) -> None:
        for store in self.stores:
            outcome = await store.accept(uuid, 1, transition("OFFERED", "ACCEPTED"))
            assert outcome.ok, outcome

    async def finish(self, uuid: str, target: str) -> None:
        for store in self.stores:
            outcome = await store.finish(uuid, {"OFFERED"}, transition("OFFERED", target))
            assert outcome.ok, outcome

    async def commit(self, uuid: str, phase: Any, last: int | None, expect: str) -> None:
        for store in self.stores:
            loaded = await store.load(uuid)
            assert loaded is not None
            live, version = loaded
            record = live.record
            rebook = None
            if last is not None:
                booking = msgspec.structs.replace(record.booking, last=last)
                record = msgspec.structs.replace(record, booking=booking)
                rebook = Rebook(last, CAPACITY[record.platform])
            change = Change(record=record, phase=phase or live.phase, rebook=rebook)
            assert await store.commit(uuid, version, change, None) == expect

    async def agree_with(self, model: Model) -> None:
        for store in self.stores:
            for platform in CAPACITY:
                usage = await store.usage(platform, 0, 2 * SPAN)
                assert usage.per_slot(0, 2 * SPAN) == model.usage(platform), (store, platform)


async def run(stores: Stores, operations: list[tuple[Any, ...]]) -> Model:
    """Apply ``operations`` to the stores and the model; after each, they agree."""
    model = Model()
    for operation in operations:
        kind, *args = operation
        offered, booked = sorted(model.holds), sorted(model.bookings)
        if kind == "hold":
            offers = [
                Entry(platform, first, first + length, cores, memory)
                for platform, first, length, cores, memory in args[0]
            ]
            clash = next((i for i, entry in enumerate(offers) if not model.fits(entry)), None)
            uuids = await stores.hold(offers, clash)
            if clash is None:
                offerset = stores.records[uuids[0]].offerset
                model.sets[offerset] = uuids
                for uuid, entry in zip(uuids, offers, strict=True):
                    model.holds[uuid] = entry
        elif kind in ("accept", "reject", "expire") and offered:
            uuid = offered[args[0] % len(offered)]
            if kind == "accept":
                await stores.accept(uuid)
                offerset = stores.records[uuid].offerset
                model.bookings[uuid] = model.holds[uuid]
                for sibling in model.sets[offerset]:
                    model.holds.pop(sibling, None)
            else:
                await stores.finish(uuid, "REJECTED" if kind == "reject" else "EXPIRED")
                del model.holds[uuid]
        elif kind == "cancel" and booked:
            uuid = booked[args[0] % len(booked)]
            await stores.commit(uuid, "CANCELLED", None, "ok")
            del model.bookings[uuid]
        elif kind == "resize" and (offered or booked):
            live = offered + booked
            uuid = live[args[0] % len(live)]
            entry = model.entry(uuid)
            moved = dataclasses.replace(entry, last=entry.first + args[1])
            table = model.holds if uuid in model.holds else model.bookings
            table[uuid] = moved
            room = model.within()
            if not room:
                table[uuid] = entry
            await stores.commit(uuid, None, moved.last, "ok" if room else "full")
        assert model.within()
        await stores.agree_with(model)
    return model


async def free_everything(stores: Stores, model: Model) -> None:
    for uuid in sorted(model.holds):
        await stores.finish(uuid, "REJECTED")
    for uuid in sorted(model.bookings):
        await stores.commit(uuid, "CANCELLED", None, "ok")
    for store in stores.stores:
        for platform in CAPACITY:
            assert await store.entries(platform) == []
            whole = await store.usage(platform, -(10**9), 10**9)
            assert (whole.points, whole.cores, whole.memory) == ([-(10**9)], [0], [0])


offer = st.tuples(
    st.sampled_from(sorted(CAPACITY)),
    st.integers(0, SPAN - 1),
    st.integers(1, SPAN // 2),
    st.integers(1, 4),
    st.integers(1, 5),
)
operation = st.one_of(
    st.tuples(st.just("hold"), st.lists(offer, min_size=1, max_size=4)),
    st.tuples(st.sampled_from(["accept", "reject", "expire", "cancel"]), st.integers(0, 99)),
    st.tuples(st.just("resize"), st.integers(0, 99), st.integers(1, SPAN)),
)
_examples = itertools.count()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, max_size=25))
async def test_both_stores_count_each_offer_sets_holds_as_their_envelope(
    redis_url: str, redis_key_prefix: str, operations: list[tuple[Any, ...]]
) -> None:
    # Given the memory store and a Redis store (a fresh key prefix per example)
    client = redis.asyncio.Redis.from_url(redis_url)
    prefix = f"{redis_key_prefix}{next(_examples)}"
    stores = Stores([MemoryStore(), RedisStore(client, prefix=prefix)])
    try:
        # When any sequence of holds (sets of one to four offers on two platforms),
        # accepts, rejections, expiries, cancellations and resizes is applied,
        # then after each step both calendars are the model's: bookings summed,
        # each set's OFFERED offers as their envelope, never over capacity
        model = await run(stores, operations)
        # And once everything is freed, both calendars are empty
        await free_everything(stores, model)
    finally:
        await client.aclose()


async def shape_of(broker: Broker, made: OfferSetView) -> SessionRecord:
    """The first offer of ``made``, to copy; every offer of it rejected (nothing held)."""
    for offer in made.offers:
        await broker.update_phase(offer.record.uuid, "alice", "REJECTED", "client")
    return made.offers[0].record


def eight_cores(store: Store, clock: FakeClock) -> Broker:
    return broker_on(store, clock, EIGHT, max_offers=4)


async def test_four_overlapping_siblings_of_two_cores_hold_two_and_others_get_offers(
    store: Store,
) -> None:
    clock = FakeClock()
    broker = eight_cores(store, clock)
    soon = "2030-01-01T12:05:00Z/PT1M"
    # Given a client holding an offer set of four offers of 2 cores in one window
    # (the shape of any set whose offers overlap)
    made = await broker.request(valid(ping(cores=(2, 2), start=soon), clock), "alice")
    shape = await shape_of(broker, made)
    offerset = msgspec.structs.replace(made.record, uuid="set-of-four", offers=[])
    siblings = [
        msgspec.structs.replace(shape, uuid=f"sibling-{i}", offerset=offerset.uuid)
        for i in range(4)
    ]
    offerset.offers = [s.uuid for s in siblings]
    assert await store.hold(offerset, siblings, broker.capacities, [FIRST] * 4) is None
    # Then the calendar holds 2 cores there, not 8
    booking = shape.booking
    usage = await store.usage("eight", booking.first, booking.last)
    assert usage.peak(booking.first, booking.last) == (2, booking.memory)
    # And three more clients each still get an offer of 2 cores in that very window
    # (summed, the siblings would have held all eight cores: each a NO)
    for owner in ("bob", "carol", "dave"):
        theirs = await broker.request(valid(ping(cores=(2, 2), start=soon), clock), owner)
        assert theirs.record.result == "YES", owner
        assert theirs.offers[0].record.booking.first == booking.first
    usage = await store.usage("eight", booking.first, booking.last)
    assert usage.peak(booking.first, booking.last)[0] == 8
    # When one sibling is accepted, it is booked and the rest let go: still 2 cores
    await broker.update_phase("sibling-2", "alice", "ACCEPTED", "client")
    usage = await store.usage("eight", booking.first, booking.last)
    assert usage.peak(booking.first, booking.last)[0] == 8
    found = {uuid: state for uuid, state, _ in await store.entries("eight")}
    assert found["sibling-2"] == "B"
    assert not {"sibling-0", "sibling-1", "sibling-3"} & set(found)


async def test_a_sibling_leaving_leaves_the_envelope_of_the_rest(store: Store) -> None:
    clock = FakeClock()
    broker = eight_cores(store, clock)
    made = await broker.request(valid(ping(cores=(2, 2)), clock), "alice")
    shape = await shape_of(broker, made)
    b = shape.booking
    # Given a set of a long small offer and a short large one, overlapping
    long_small = msgspec.structs.replace(
        shape, uuid="long", offerset="pair", booking=Booking(b.first, b.first + 30, 1, 4)
    )
    short_large = msgspec.structs.replace(
        shape, uuid="short", offerset="pair", booking=Booking(b.first + 10, b.first + 20, 5, 1)
    )
    pair = msgspec.structs.replace(made.record, uuid="pair", offers=["long", "short"])
    assert await store.hold(pair, [long_small, short_large], broker.capacities, [FIRST] * 2) is None
    usage = await store.usage("eight", b.first, b.first + 30)
    # Then each resource counts its own largest: 5 cores and 4 GiB where they overlap
    assert usage.level(b.first + 15) == (5, 4)
    assert usage.level(b.first + 25) == (1, 4)
    # When the large one expires, the small one's hold is what is left
    await store.finish("short", {"OFFERED"}, transition("OFFERED", "EXPIRED"))
    usage = await store.usage("eight", b.first, b.first + 30)
    assert usage.per_slot(b.first, b.first + 30) == ([1] * 30, [4] * 30)
    # And when that one is rejected too, nothing is held
    await store.finish("long", {"OFFERED"}, transition("OFFERED", "REJECTED"))
    assert await store.entries("eight") == []
    assert (await store.usage("eight", b.first, b.first + 30)).peak(b.first, b.first + 30) == (0, 0)


async def test_a_redis_hold_names_its_offer_set_in_the_calendar_entry(
    redis_url: str, redis_key_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=redis_key_prefix)
    try:
        stores = Stores([store])
        await stores.hold([Entry("a", 0, 10, 1, 1), Entry("a", 5, 15, 2, 2)], None)
        raw = await client.hgetall(Keys(redis_key_prefix).calendar_entries("a"))
        offerset = next(iter(stores.records.values())).offerset
        texts = [value.decode() if isinstance(value, bytes) else value for value in raw.values()]
        assert sorted(texts) == [
            f"H|0|10|1|1|{offerset}",
            f"H|5|15|2|2|{offerset}",
        ]
    finally:
        await client.aclose()


@pytest.mark.parametrize("cores", [1, 3])
def test_the_model_counts_a_set_as_its_largest_offer_per_slot(cores: int) -> None:
    model = Model()
    model.sets["s"] = ["x", "y"]
    model.holds["x"] = Entry("a", 0, 2, cores, 1)
    model.holds["y"] = Entry("a", 1, 3, 2, 2)
    assert model.usage("a")[0][:4] == [cores, max(cores, 2), 2, 0]
