"""The offer planner: free windows in a platform's calendar (docs/ARCHITECTURE.md §4.4). Pure code.

Given what the request needs, what the platform can hold and what is already
in use, find up to N windows, earliest first, each with at least the minimum
cores and memory free for the whole booking (preparation, the available
window and release), offering as much as is free up to the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from talicada.broker.calendar import Entry, Slots, Steps
from talicada.constants import BOOKING_POINTS


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks of one platform, in absolute times.

    ``earliest`` and ``latest`` bound when the available window may start.
    """

    cores: tuple[int, int]
    memory: tuple[int, int]
    duration: timedelta
    preparation: timedelta
    release: timedelta
    earliest: datetime
    latest: datetime


@dataclass(frozen=True, slots=True)
class Window:
    """One offer's place in the calendar."""

    preparing: datetime
    available: datetime
    releasing: datetime
    done: datetime
    entry: Entry


def search_range(demand: Demand, slots: Slots) -> tuple[int, int]:
    """The slots the planner may look at for ``demand``: read this much usage."""
    first = slots.floor(demand.earliest - demand.preparation)
    last = slots.ceil(demand.latest + demand.duration + demand.release) + 1
    return first, last


def plan(
    demand: Demand,
    usage: Steps,
    capacity: tuple[int, int],
    slots: Slots,
    platform: str,
    limit: int,
) -> list[Window]:
    """Up to ``limit`` windows for ``demand``; each later one starts after the last ends.

    Offers are spaced by the requested duration so they are real alternatives
    (now, or after that, …) rather than near-copies holding the same capacity.
    ``usage`` is not changed.
    """
    view = usage.copy()
    windows: list[Window] = []
    start = demand.earliest
    while len(windows) < limit and start <= demand.latest:
        found = _first_fit(demand, view, capacity, start, slots)
        if found is None:
            break
        available, cores, memory = found
        first, last = booking(available, demand.preparation, demand.duration, demand.release, slots)
        entry = Entry(platform, first, last, cores, memory)
        view.add(entry)
        windows.append(
            Window(
                preparing=available - demand.preparation,
                available=available,
                releasing=available + demand.duration,
                done=available + demand.duration + demand.release,
                entry=entry,
            )
        )
        start = available + max(demand.duration, slots.length)
    return windows


def booking(
    available: datetime,
    preparation: timedelta,
    duration: timedelta,
    release: timedelta,
    slots: Slots,
) -> tuple[int, int]:
    """The slots [first, last) a window starting at ``available`` books, rounded outwards."""
    return slots.floor(available - preparation), slots.ceil(available + duration + release)


def _first_fit(
    demand: Demand,
    usage: Steps,
    capacity: tuple[int, int],
    start: datetime,
    slots: Slots,
) -> tuple[datetime, int, int] | None:
    """The earliest start from ``start`` whose booking fits, and the size that fits there.

    Candidates are ``start`` itself (so the first offer begins as soon as
    preparation allows) and then slot boundaries. Rather than trying each
    boundary, a candidate that does not fit jumps past the last stretch of
    the calendar that blocked it: every start before that would overlap it
    too. So the search costs the stretches it passes, not the minutes.

    A booking may span at most ``constants.BOOKING_POINTS`` change points
    (holding it costs one store operation per point): a window spanning more
    is blocked up to the end of the stretch after which it would span few
    enough.
    """
    room = (capacity[0] - demand.cores[0], capacity[1] - demand.memory[0])
    candidate = start
    while candidate <= demand.latest:
        low, high = booking(candidate, demand.preparation, demand.duration, demand.release, slots)
        blocked_until: int | None = None
        peak_cores = peak_memory = 0
        segments = list(usage.segments(low, high))
        spanned = len(segments) - 1  # change points strictly inside the booking
        if spanned > BOOKING_POINTS:
            # Any start before this stretch ends keeps BOOKING_POINTS + 1 points.
            blocked_until = segments[spanned - BOOKING_POINTS - 1][1]
        for _, end, cores, memory in segments:
            if cores > room[0] or memory > room[1]:
                blocked_until = max(end, blocked_until or end)
            peak_cores, peak_memory = max(peak_cores, cores), max(peak_memory, memory)
        if blocked_until is None:
            return (
                candidate,
                min(capacity[0] - peak_cores, demand.cores[1]),
                min(capacity[1] - peak_memory, demand.memory[1]),
            )
        # The first slot boundary whose booking begins at or after the blockage.
        candidate = slots.start(slots.ceil(slots.start(blocked_until) + demand.preparation))
    return None
