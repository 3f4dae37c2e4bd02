"""Fair holds: one owner's pending offers hold no more than a cap, and a NO says why.

Offers hold capacity until they expire (or are accepted or rejected), so
without a bound one client could keep a whole platform held by offers it
never takes. Here:

- in the calendar, the offers of one set hold their envelope, not their sum
  (per slot the most cores and, apart, the most memory any of them holds:
  ``calendar.envelope_change``), so a set of four overlapping 2-core offers
  keeps 2 cores from other clients, not 8;
- what an owner holds on a platform is, per offer set, its largest offer
  there (siblings are alternatives: at most one is ever accepted), summed over
  the owner's unexpired offer sets;
- a request whose minimum no longer fits under the owner's cap gets NO
  saying what the owner holds and when those offers expire; otherwise its
  maximum is narrowed to what is left under the cap;
- a request that finds no window learns whether the capacity is booked or
  only held by pending offers, which expire by a stated instant.

The cap is read before planning, to narrow what is planned, and checked
again where the offers are held (in the hold script, with the owner's running
sums), so two requests of one owner racing on two replicas cannot together
pass it: the later hold is refused and its request planned again. It
applies only when callers authenticate: with authentication off (embedded
mode) everyone is the one owner ``anonymous``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from talicada.broker.calendar import Slots, Steps
from talicada.broker.planner import Demand, plan, search_range
from talicada.broker.store import Store
from talicada.schema import messages as msg
from talicada.schema.messages import MessageItem
from talicada.settings import PlatformSettings


def owner_cap(platform: PlatformSettings) -> tuple[int, int]:
    """Most cores and GiB one owner's pending offers may hold on ``platform``.

    Configured (``max_held_cores``, ``max_held_memory``), or half the
    platform, but never less than one session's maximum, so the largest
    session can always be offered.
    """
    cores = platform.max_held_cores or max(math.ceil(platform.cores / 2), platform.session_cores)
    memory = platform.max_held_memory or max(
        math.ceil(platform.memory / 2), platform.session_memory
    )
    return cores, memory


def caps(platforms: Iterable[PlatformSettings]) -> dict[str, tuple[int, int]]:
    """Each platform's cap on one owner's pending offers, as the store checks it."""
    return {platform.name: owner_cap(platform) for platform in platforms}


def within_cap(
    platform: PlatformSettings, demand: Demand, held: tuple[int, int, int]
) -> tuple[Demand | None, MessageItem | None]:
    """``demand`` narrowed to what the owner may still hold, or None and the NO reason."""
    cap_cores, cap_memory = owner_cap(platform)
    held_cores, held_memory, expires = held
    room = (cap_cores - held_cores, cap_memory - held_memory)
    if demand.cores[0] > room[0] or demand.memory[0] > room[1]:
        last = datetime.fromtimestamp(expires / 1000, UTC)
        return None, msg.make(
            msg.HELD_CAP,
            platform=platform.name,
            cores=held_cores,
            memory=held_memory,
            cap_cores=cap_cores,
            cap_memory=cap_memory,
            expires=last,
        )
    narrowed = replace(
        demand,
        cores=(demand.cores[0], min(demand.cores[1], room[0])),
        memory=(demand.memory[0], min(demand.memory[1], room[1])),
    )
    return narrowed, None


async def held_not_booked(
    store: Store, platform: PlatformSettings, demand: Demand, slots: Slots
) -> bool:
    """Whether ``demand`` would fit if pending offers held nothing (only bookings count)."""
    first, last = search_range(demand, slots)
    booked = Steps.empty()
    for _, state, entry in await store.entries(platform.name):
        if state == "B" and entry.first < last and entry.last > first:
            booked.add(entry)
    capacity = (platform.cores, platform.memory)
    return bool(plan(demand, booked, capacity, slots, platform.name, 1))


def no_capacity_held(
    platform: PlatformSettings, demand: Demand, expires_by: datetime
) -> MessageItem:
    """The NO reason when only pending offers (not bookings) stand in the way."""
    return msg.make(
        msg.NO_CAPACITY_HELD,
        platform=platform.name,
        cores=demand.cores[0],
        memory=demand.memory[0],
        expires=expires_by,
    )


def expiry_bound(now: datetime, offer_ttl: float) -> datetime:
    """No offer held now outlives this instant (offers live ``offer_ttl`` seconds)."""
    return now + timedelta(seconds=offer_ttl)
