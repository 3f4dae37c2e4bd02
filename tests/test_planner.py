"""The planner and calendar arithmetic: pure functions, no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from talicada.broker.calendar import Entry, Slots, Usage
from talicada.broker.planner import Demand, plan, search_range

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


def usage_for(d: Demand) -> Usage:
    first, last = search_range(d, SLOTS)
    return Usage.empty(first, last)


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
    usage.add(Entry("p", usage.first, usage.last, 5, 0))
    (window,) = plan(d, usage, (8, 16), SLOTS, "p", 1)
    assert window.entry.cores == 3


def test_a_busy_window_is_skipped_for_the_first_free_one() -> None:
    d = demand(cores=(4, 4))
    usage = usage_for(d)
    busy_until = SLOTS.ceil(NOW + timedelta(minutes=30))
    usage.add(Entry("p", usage.first, busy_until, 6, 0))
    (window,) = plan(d, usage, (8, 16), SLOTS, "p", 1)
    assert window.entry.first >= busy_until


def test_no_window_when_the_minimum_never_fits() -> None:
    d = demand(cores=(9, 9))
    assert plan(d, usage_for(d), (8, 16), SLOTS, "p", 4) == []


def test_no_window_when_the_start_interval_has_no_free_capacity() -> None:
    d = demand(cores=(2, 2), window=timedelta(minutes=5))
    usage = usage_for(d)
    usage.add(Entry("p", usage.first, usage.last, 8, 0))
    assert plan(d, usage, (8, 16), SLOTS, "p", 4) == []


def test_planning_does_not_change_the_usage_it_is_given() -> None:
    d = demand()
    usage = usage_for(d)
    before = list(usage.cores)
    plan(d, usage, (8, 16), SLOTS, "p", 4)
    assert usage.cores == before


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
    for start, length, cores in busy:
        first = usage.first + start
        usage.add(Entry("p", first, first + length, cores, 0))
    windows = plan(d, usage, (8, 1000), SLOTS, "p", 4)
    combined = Usage(usage.first, list(usage.cores), list(usage.memory))
    for window in windows:
        assert low <= window.entry.cores <= low + extra
        combined.add(window.entry)
    for before, after in zip(usage.cores, combined.cores, strict=True):
        # Wherever an offer added load, the slot stays within capacity.
        assert after == before or after <= 8


def test_slots_round_outwards() -> None:
    instant = NOW + timedelta(seconds=30)
    assert SLOTS.floor(instant) == SLOTS.floor(NOW)
    assert SLOTS.ceil(instant) == SLOTS.floor(NOW) + 1
    assert SLOTS.start(SLOTS.floor(NOW)) == NOW


def test_calendar_entries_round_trip_through_their_encoding() -> None:
    entry = Entry("p", 10, 20, 3, 4)
    assert Entry.decode("p", entry.encode("B")) == ("B", entry)


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
