"""The offer planner: free windows in a platform's calendar (docs/ARCHITECTURE.md §4.4). Pure code.

Given what the request needs, what the platform can hold and what is already
in use, find up to N windows, earliest first, each with at least the minimum
cores and memory free for the whole booking (preparation, the available
window and release), offering as much as is free up to the maximum.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from talicada.broker.calendar import Entry, Slots, Usage


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
    usage: Usage,
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
    view = Usage(usage.first, list(usage.cores), list(usage.memory))
    windows: list[Window] = []
    start = demand.earliest
    while len(windows) < limit and start <= demand.latest:
        found = _first_fit(demand, view, capacity, _candidates(start, demand.latest, slots), slots)
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


def _candidates(start: datetime, latest: datetime, slots: Slots) -> Iterator[datetime]:
    """Start times to try: ``start`` itself (the earliest possible), then each slot boundary.

    Trying ``start`` unrounded lets the first offer begin as soon as preparation
    allows rather than at the next boundary; later ones align to slots.
    """
    yield start
    slot = slots.floor(start) + 1
    while (boundary := slots.start(slot)) <= latest:
        yield boundary
        slot += 1


def _first_fit(
    demand: Demand,
    usage: Usage,
    capacity: tuple[int, int],
    candidates: Iterator[datetime],
    slots: Slots,
) -> tuple[datetime, int, int] | None:
    """The earliest candidate whose booking fits, and the size that fits there.

    A sliding-window maximum (monotonic deques) makes this one pass over the
    slots: both ends of the booking only move forwards from one candidate to
    the next, so a busy calendar costs the same per slot as an empty one.
    """
    need_cores, need_memory = demand.cores[0], demand.memory[0]
    cores_window: deque[tuple[int, int]] = deque()
    memory_window: deque[tuple[int, int]] = deque()
    next_slot: int | None = None  # next slot to push into the window

    def used(series: list[int], slot: int) -> int:
        index = slot - usage.first
        return series[index] if 0 <= index < len(series) else 0

    for candidate in candidates:
        low, high = booking(candidate, demand.preparation, demand.duration, demand.release, slots)
        if next_slot is None:
            next_slot = low
        while next_slot < high:
            for window, series in ((cores_window, usage.cores), (memory_window, usage.memory)):
                value = used(series, next_slot)
                while window and window[-1][1] <= value:
                    window.pop()
                window.append((next_slot, value))
            next_slot += 1
        for window in (cores_window, memory_window):
            while window and window[0][0] < low:
                window.popleft()
        free_cores = capacity[0] - (cores_window[0][1] if cores_window else 0)
        free_memory = capacity[1] - (memory_window[0][1] if memory_window else 0)
        if free_cores >= need_cores and free_memory >= need_memory:
            return candidate, min(free_cores, demand.cores[1]), min(free_memory, demand.memory[1])
    return None
