"""The calendar's step function, against a brute-force model of one counter per slot."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talicada.broker.calendar import Entry, Steps
from talicada.broker.service import Broker
from talicada.broker.store import Store
from talicada.schema.messages import Conflict, NotFound
from talicada.schema.model import StringValueUpdate
from talicada.settings import PlatformSettings, load
from tests.test_store import FakeClock, ping, valid

SPAN = 120
entries = st.tuples(
    st.integers(0, SPAN - 1), st.integers(1, SPAN), st.integers(1, 5), st.integers(0, 5)
)


def brute(live: list[Entry]) -> tuple[list[int], list[int]]:
    cores, memory = [0] * (2 * SPAN), [0] * (2 * SPAN)
    for entry in live:
        for slot in range(entry.first, entry.last):
            cores[slot] += entry.cores
            memory[slot] += entry.memory
    return cores, memory


def assert_minimal(steps: Steps) -> None:
    """No point repeats the level before it: the cost is the number of changes."""
    for index, _ in enumerate(steps.points):
        before = (steps.cores[index - 1], steps.memory[index - 1]) if index else (0, 0)
        assert (steps.cores[index], steps.memory[index]) != before


@settings(max_examples=200, deadline=None)
@given(operations=st.lists(st.tuples(st.booleans(), entries), max_size=40), probe=entries)
def test_steps_agree_with_a_counter_per_slot(
    operations: list[tuple[bool, tuple[int, int, int, int]]], probe: tuple[int, int, int, int]
) -> None:
    steps = Steps()
    live: list[Entry] = []
    for remove, (first, length, cores, memory) in operations:
        if remove and live:
            steps.add(live.pop(first % len(live)), -1)
        else:
            entry = Entry("p", first, first + length, cores, memory)
            steps.add(entry)
            live.append(entry)
        assert steps.per_slot(0, 2 * SPAN) == brute(live)
        assert_minimal(steps)
    first, length, _, _ = probe
    in_use, held = brute(live)
    expected = (max(in_use[first : first + length]), max(held[first : first + length]))
    assert steps.peak(first, first + length) == expected
    window = steps.window(first, first + length)
    assert window.per_slot(first, first + length) == steps.per_slot(first, first + length)


def test_a_booking_costs_points_not_minutes() -> None:
    thirty_days = 30 * 24 * 60
    steps = Steps()
    steps.add(Entry("p", 0, thirty_days, 4, 8))
    assert steps.points == [0, thirty_days]  # two change points for a month of slots
    steps.add(Entry("p", 0, thirty_days, 4, 8), -1)
    assert steps.points == []


BUSY = PlatformSettings(name="small", cores=4, memory=8, max_duration=30 * 86400)


def broker_for(store: Store, clock: FakeClock) -> Broker:
    settings = msgspec.structs.replace(load(environ={}, max_offers=2), platforms=[BUSY])
    return Broker(settings, store, clock=clock)


def envelope_per_slot(holds: list[Entry]) -> tuple[list[int], list[int]]:
    """Per slot, the most cores and the most memory any of ``holds`` holds (slot by slot)."""
    cores, memory = [0] * (2 * SPAN), [0] * (2 * SPAN)
    for entry in holds:
        for slot in range(entry.first, entry.last):
            cores[slot] = max(cores[slot], entry.cores)
            memory[slot] = max(memory[slot], entry.memory)
    return cores, memory


holds = st.lists(entries, max_size=5)


@settings(max_examples=300, deadline=None)
@given(base=st.lists(entries, max_size=6), before=holds, after=holds, room=st.integers(0, 12))
def test_reshaping_counts_the_envelope_of_the_holds_after_instead_of_before(
    base: list[tuple[int, int, int, int]],
    before: list[tuple[int, int, int, int]],
    after: list[tuple[int, int, int, int]],
    room: int,
) -> None:
    def made(raw: list[tuple[int, int, int, int]]) -> list[Entry]:
        return [Entry("p", first, first + length, c, m) for first, length, c, m in raw]

    steps = Steps()
    for entry in made(base):
        steps.add(entry)
    # Given a calendar counting one set's holds ``before`` as their envelope
    assert steps.reshape([], made(before))
    used = brute(made(base))
    was = envelope_per_slot(made(before))
    now = envelope_per_slot(made(after))
    total = [[u + w for u, w in zip(used[i], was[i], strict=True)] for i in (0, 1)]
    assert steps.per_slot(0, 2 * SPAN) == (total[0], total[1])
    # When the set's holds become ``after``, with ``room`` over the peak for each resource
    capacity = (max(total[0]) + room, max(total[1]) + room)
    expected = [[u + n for u, n in zip(used[i], now[i], strict=True)] for i in (0, 1)]
    grows = [
        slot
        for slot in range(2 * SPAN)
        if now[0][slot] > was[0][slot] or now[1][slot] > was[1][slot]
    ]
    fits = all(
        expected[0][slot] <= capacity[0] and expected[1][slot] <= capacity[1] for slot in grows
    )
    # Then it changes only where the envelope grows and has room, to exactly the new envelope
    assert steps.reshape(made(before), made(after), capacity) == fits
    assert steps.per_slot(0, 2 * SPAN) == ((expected[0], expected[1]) if fits else tuple(total))
    assert_minimal(steps)


def model_usage(
    found: list[tuple[str, str, Entry]], first: int, last: int
) -> tuple[list[int], list[int]]:
    """Per slot of [first, last), what a calendar of these entries counts, the slow
    way: every booking (and hold of no set) alone, each offer set's holds as their
    envelope (per slot the most cores and, apart, the most memory of any)."""
    cores, memory = [0] * (last - first), [0] * (last - first)
    sets: dict[str, list[Entry]] = {}
    for uuid, state, entry in found:
        if state == "H" and entry.offerset:
            sets.setdefault(entry.offerset, []).append(entry)
        else:
            sets[f"alone {uuid}"] = [entry]
    for held in sets.values():
        most: dict[int, tuple[int, int]] = {}
        for entry in held:
            for slot in range(max(entry.first, first), min(entry.last, last)):
                was = most.get(slot, (0, 0))
                most[slot] = (max(was[0], entry.cores), max(was[1], entry.memory))
        for slot, (c, m) in most.items():
            cores[slot - first] += c
            memory[slot - first] += m
    return cores, memory


async def calendar_matches_entries(store: Store, first: int, last: int) -> None:
    """The store's step function is what its entries add up to (each offer set's holds
    as their envelope), and never over capacity."""
    expected = model_usage(await store.entries("small"), first, last)
    usage = await store.usage("small", first, last)
    assert usage.per_slot(first, last) == expected
    peak = usage.peak(first, last)
    assert peak[0] <= BUSY.cores
    assert peak[1] <= BUSY.memory


@pytest.mark.parametrize("seed", range(6))
async def test_any_sequence_of_steps_keeps_the_calendar_equal_to_its_entries(
    store: Store, seed: int
) -> None:
    # Given a broker taking random requests, accepts, rejects, cancels, expiries and resizes
    chance = random.Random(seed)
    clock = FakeClock()
    broker = broker_for(store, clock)
    sessions: list[str] = []
    first = last = None
    for _ in range(30):
        action = chance.choice(["request", "request", "accept", "reject", "cancel", "resize"])
        if action == "request" or not sessions:
            cores = chance.randint(1, 4)
            minutes = chance.choice([10, 60, 600, 3 * 24 * 60])
            doc: dict[str, Any] = ping(cores=(cores, cores))
            doc["schedule"]["requested"]["duration"] = f"PT{minutes}M"
            view = await broker.request(valid(doc, clock), "alice")
            sessions += view.record.offers
            for offer in view.offers:
                booking = offer.record.booking
                first = booking.first if first is None else min(first, booking.first)
                last = booking.last if last is None else max(last, booking.last)
        else:
            uuid = chance.choice(sessions)
            try:
                if action == "accept":
                    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
                elif action == "reject":
                    await broker.update_phase(uuid, "alice", "REJECTED", "client")
                elif action == "cancel":
                    await broker.update_phase(uuid, "alice", "CANCELLED", "client")
                else:
                    hours = chance.choice(["PT5M", "PT2H", "P2D"])
                    update = StringValueUpdate(path="schedule.available.duration", value=hours)
                    await broker.update(uuid, "alice", update)
            except (Conflict, NotFound):
                pass  # not allowed in that phase, no room, or long gone: nothing changed
        if chance.random() < 0.2:
            clock.now += timedelta(minutes=6)  # offers expire
            await broker.driver.run_due()
        # Then after every step the calendar is exactly its entries, within capacity
        assert first is not None
        assert last is not None
        await calendar_matches_entries(store, first - 10, last + 5000)


async def test_a_calendar_kept_per_slot_is_migrated_to_change_points(
    redis_url: str, redis_key_prefix: str
) -> None:
    import redis.asyncio

    from talicada.broker.store.redis import RedisStore
    from talicada.constants import Keys

    # Given a calendar written by the broker before it kept change points
    keys = Keys(redis_key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    old = keys.calendar_usage("small")
    await client.hset(keys.calendar_entries("small"), "a", "B|100|160|2|4")
    await client.hset(keys.calendar_entries("small"), "b", "H|130|200|1|1")
    await client.hset(old, mapping={f"c{slot}": 2 for slot in range(100, 160)})
    # When a broker of this version connects
    store = await RedisStore.connect(redis_url, prefix=redis_key_prefix)
    try:
        # Then the calendar holds both bookings as change points, and the old hash is gone
        usage = await store.usage("small", 90, 210)
        assert usage.per_slot(90, 210)[0] == [0] * 10 + [2] * 30 + [3] * 30 + [1] * 40 + [0] * 10
        assert usage.points == [90, 100, 130, 160, 200]
        assert await client.exists(old) == 0
    finally:
        await store.close()
        await client.aclose()


async def test_the_migration_counts_each_offer_sets_holds_as_their_envelope(
    redis_url: str, redis_key_prefix: str
) -> None:
    import redis.asyncio

    from talicada.broker.store.redis import RedisStore
    from talicada.constants import Keys

    # Given a per-slot calendar whose entries are a booking, a set's two holds, and
    # a hold written before holds named their set
    keys = Keys(redis_key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.hset(
        keys.calendar_entries("small"),
        mapping={
            "booked": "B|100|160|2|4",
            "one": "H|130|200|1|3|set",
            "two": "H|150|220|2|1|set",
            "old": "H|210|230|1|1",
        },
    )
    await client.hset(keys.calendar_usage("small"), mapping={"c100": 2})
    # When a broker of this version connects
    store = await RedisStore.connect(redis_url, prefix=redis_key_prefix)
    try:
        # Then the booking and the old hold count alone, the set as its envelope
        usage = await store.usage("small", 100, 230)
        expected = model_usage(await store.entries("small"), 100, 230)
        assert usage.per_slot(100, 230) == expected
        assert usage.level(155) == (2 + 2, 4 + 3)  # the set: most cores of one, memory of other
        assert usage.level(215) == (2 + 1, 1 + 1)
    finally:
        await store.close()
        await client.aclose()
