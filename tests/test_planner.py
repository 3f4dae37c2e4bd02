"""The planner and calendar arithmetic: pure functions, no I/O."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from talicada.broker.calendar import Entry, Slots, Steps
from talicada.broker.planner import Demand, booking, plan, plan_reading, search_range

SLOTS = Slots(60)
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def demand(
    cores: tuple[int, int] = (1, 2),
    memory: tuple[int, int] = (1, 2),
    minutes: int = 10,
    window: timedelta = timedelta(hours=1),
) -> Demand:
    return Demand(
        cores=cores,
        memory=memory,
        duration=timedelta(minutes=minutes),
        preparation=timedelta(seconds=70),
        release=timedelta(seconds=10),
        earliest=NOW + timedelta(seconds=70),
        latest=NOW + window,
    )


def usage_for(d: Demand) -> Steps:
    """An empty calendar for ``d`` (its search range is ``search_range(d, SLOTS)``)."""
    return Steps.empty()


def span(d: Demand) -> tuple[int, int]:
    return search_range(d, SLOTS)


def busy_usage(d: Demand, busy: list[tuple[int, int, int, int]]) -> Steps:
    """A calendar for ``d`` with (start, length, cores, memory) bookings from its first slot."""
    usage = usage_for(d)
    first_slot, _ = span(d)
    for start, length, cores, memory in busy:
        usage.add(Entry("p", first_slot + start, first_slot + start + length, cores, memory))
    return usage


def test_an_empty_calendar_offers_the_maximum_at_the_earliest_start() -> None:
    d = demand()
    windows = plan(d, usage_for(d), (8, 16), SLOTS, "p", 4)
    assert len(windows) == 4
    first = windows[0]
    assert first.entry.cores == 2
    assert first.entry.memory == 2
    assert first.available >= d.earliest
    assert first.available - first.preparing == d.preparation
    assert [w.available for w in windows] == sorted(w.available for w in windows)


def test_later_offers_start_after_the_previous_window_ends() -> None:
    d = demand(minutes=10)
    windows = plan(d, usage_for(d), (8, 16), SLOTS, "p", 4)
    for earlier, later in itertools.pairwise(windows):
        assert later.available >= earlier.releasing


def test_offers_get_what_is_free_when_that_is_between_min_and_max() -> None:
    d = demand(cores=(1, 8))
    usage = usage_for(d)
    usage.add(Entry("p", *span(d), 5, 0))
    (window,) = plan(d, usage, (8, 16), SLOTS, "p", 1)
    assert window.entry.cores == 3


def test_a_busy_window_is_skipped_for_the_first_free_one() -> None:
    d = demand(cores=(4, 4))
    usage = usage_for(d)
    busy_until = SLOTS.ceil(NOW + timedelta(minutes=30))
    usage.add(Entry("p", span(d)[0], busy_until, 6, 0))
    (window,) = plan(d, usage, (8, 16), SLOTS, "p", 1)
    assert window.entry.first >= busy_until


def test_no_window_when_the_minimum_never_fits() -> None:
    d = demand(cores=(9, 9))
    assert plan(d, usage_for(d), (8, 16), SLOTS, "p", 4) == []


def test_no_window_when_the_start_interval_has_no_free_capacity() -> None:
    d = demand(cores=(2, 2), window=timedelta(minutes=5))
    usage = usage_for(d)
    usage.add(Entry("p", *span(d), 8, 0))
    assert plan(d, usage, (8, 16), SLOTS, "p", 4) == []


def test_planning_does_not_change_the_usage_it_is_given() -> None:
    d = demand()
    usage = usage_for(d)
    usage.add(Entry("p", span(d)[0], span(d)[0] + 5, 3, 1))
    before = usage.copy()
    plan(d, usage, (8, 16), SLOTS, "p", 4)
    assert (usage.points, usage.cores, usage.memory) == (before.points, before.cores, before.memory)


@settings(max_examples=80, deadline=None)
@given(
    busy=st.lists(
        st.tuples(st.integers(0, 90), st.integers(1, 30), st.integers(0, 8)), max_size=12
    ),
    low=st.integers(1, 4),
    extra=st.integers(0, 4),
)
def test_no_offer_ever_exceeds_capacity_in_any_slot(
    busy: list[tuple[int, int, int]], low: int, extra: int
) -> None:
    d = demand(cores=(low, low + extra))
    usage = usage_for(d)
    first_slot, _ = span(d)
    for start, length, cores in busy:
        first = first_slot + start
        usage.add(Entry("p", first, first + length, cores, 0))
    windows = plan(d, usage, (8, 1000), SLOTS, "p", 4)
    # The offers are alternatives: each fits on the usage alone, so their
    # envelope (what the set holds) does too.
    held = usage.copy()
    assert held.reshape([], [w.entry for w in windows], (8, 1000))
    for window in windows:
        assert low <= window.entry.cores <= low + extra
        assert usage.fits(window.entry, (8, 1000))


def test_siblings_are_planned_on_the_calendar_alone_not_on_each_other() -> None:
    # Given two cores free, and a request of two cores whose windows overlap in
    # preparation and release
    d = demand(cores=(2, 2), minutes=1)
    usage = usage_for(d)
    usage.add(Entry("p", *span(d), 6, 0))
    windows = plan(d, usage, (8, 16), SLOTS, "p", 4)
    # Then every offer gets the two cores, though together they overlap
    assert len(windows) == 4
    assert all(w.entry.cores == 2 for w in windows)
    assert windows[0].entry.last > windows[1].entry.first


def brute_force_plan(d: Demand, usage: Steps, capacity: tuple[int, int], limit: int) -> list[Any]:
    """The planner's rules applied the slow way: every candidate start, every slot.
    Each offer on the usage alone (siblings are alternatives: held as their envelope)."""
    first_slot, last_slot = span(d)
    cores, memory = usage.per_slot(first_slot, last_slot + 200)
    cores, memory = list(cores), list(memory)
    found: list[Any] = []
    start = d.earliest
    while len(found) < limit and start <= d.latest:
        candidates = [start] + [
            SLOTS.start(slot) for slot in range(SLOTS.floor(start) + 1, SLOTS.floor(d.latest) + 1)
        ]
        hit = None
        for candidate in candidates:
            low, high = booking(candidate, d.preparation, d.duration, d.release, SLOTS)
            peak_c = max(cores[low - first_slot : high - first_slot])
            peak_m = max(memory[low - first_slot : high - first_slot])
            free_c, free_m = capacity[0] - peak_c, capacity[1] - peak_m
            if free_c >= d.cores[0] and free_m >= d.memory[0]:
                hit = (candidate, low, high, min(free_c, d.cores[1]), min(free_m, d.memory[1]))
                break
        if hit is None:
            break
        candidate, low, high, got_c, got_m = hit
        found.append((candidate, low, high, got_c, got_m))
        start = candidate + max(d.duration, SLOTS.length)
    return found


@settings(max_examples=150, deadline=None)
@given(
    busy=st.lists(
        st.tuples(st.integers(0, 200), st.integers(1, 60), st.integers(0, 8), st.integers(0, 16)),
        max_size=15,
    ),
    low=st.integers(1, 4),
    extra=st.integers(0, 4),
    minutes=st.integers(1, 40),
)
def test_the_planner_finds_what_a_brute_force_search_finds(
    busy: list[tuple[int, int, int, int]], low: int, extra: int, minutes: int
) -> None:
    d = demand(cores=(low, low + extra), minutes=minutes)
    usage = busy_usage(d, busy)
    windows = plan(d, usage, (8, 16), SLOTS, "p", 4)
    expected = brute_force_plan(d, usage, (8, 16), 4)
    got = [
        (w.available, w.entry.first, w.entry.last, w.entry.cores, w.entry.memory) for w in windows
    ]
    assert got == expected


def test_slots_round_outwards() -> None:
    instant = NOW + timedelta(seconds=30)
    assert SLOTS.floor(instant) == SLOTS.floor(NOW)
    assert SLOTS.ceil(instant) == SLOTS.floor(NOW) + 1
    assert SLOTS.start(SLOTS.floor(NOW)) == NOW


def test_calendar_entries_round_trip_through_their_encoding() -> None:
    entry = Entry("p", 10, 20, 3, 4)
    assert Entry.decode("p", entry.encode("B")) == ("B", entry)
    held = Entry("p", 10, 20, 3, 4, offerset="set-uuid")
    assert held.encode("H") == "H|10|20|3|4|set-uuid"
    assert Entry.decode("p", held.encode("H")) == ("H", held)
    # Written before holds named their set: a hold of no set (it counts alone).
    assert Entry.decode("p", "H|10|20|3|4") == ("H", entry)


def test_offer_uuids_are_random_version_4_uuids() -> None:
    import uuid

    from talicada.broker.offers import new_uuid

    made = {new_uuid() for _ in range(1000)}
    assert len(made) == 1000
    for text in made:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def reader_over(usage: Steps, last: int, reads: list[int]) -> Any:
    """A store's ``usage`` read over ``usage``; ``reads`` collects the points each read returned."""

    async def read(start: int, end: int, most: int) -> Steps:
        assert end == last
        head = usage.window(start, end, most)
        reads.append(len(head.points) - 1)
        return head

    return read


@settings(max_examples=150, deadline=None)
@given(
    busy=st.lists(
        st.tuples(st.integers(0, 400), st.integers(1, 60), st.integers(0, 8), st.integers(0, 16)),
        max_size=300,
    ),
    low=st.integers(1, 4),
    minutes=st.integers(1, 120),
    limit=st.integers(1, 4),
)
def test_reading_the_calendar_a_head_at_a_time_finds_what_reading_it_whole_finds(
    busy: list[tuple[int, int, int, int]], low: int, minutes: int, limit: int
) -> None:
    d = demand(cores=(low, low + 2), minutes=minutes, window=timedelta(hours=6))
    usage = busy_usage(d, busy)
    _, last_slot = span(d)
    whole = plan(d, usage, (8, 16), SLOTS, "p", limit)
    reads: list[int] = []
    read = reader_over(usage, last_slot, reads)
    assert asyncio.run(plan_reading(read, d, (8, 16), SLOTS, "p", limit)) == whole
    assert sum(reads) <= len(usage.points)  # nothing is read twice


def test_a_short_request_on_a_busy_calendar_reads_only_the_head_it_needs() -> None:
    # Given 3,000 one-core bookings spread over the next day of a roomy platform
    d = demand(cores=(1, 1), minutes=10, window=timedelta(hours=24))
    usage = usage_for(d)
    first_slot, last_slot = span(d)
    for i in range(3000):
        start = first_slot + (i * 7919) % 1440
        usage.add(Entry("p", start, start + 5 + i % 50, 1, 1))
    points = len(usage.window(first_slot, last_slot).points)
    reads: list[int] = []
    windows = asyncio.run(
        plan_reading(reader_over(usage, last_slot, reads), d, (10_000, 10_000), SLOTS, "p", 4)
    )
    # Then it finds its four windows from a fraction of the calendar
    assert len(windows) == 4
    assert windows == plan(d, usage, (10_000, 10_000), SLOTS, "p", 4)
    assert sum(reads) < points / 4, (reads, points)
