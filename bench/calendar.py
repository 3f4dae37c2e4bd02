"""Benchmark: offer latency with 10,000 bookings in a calendar vs an empty one.

docs/ARCHITECTURE.md §11: "Offer latency with 10,000 bookings in a calendar within 2× of an
empty one." This drives the broker service directly (no HTTP): the same
:class:`talicada.broker.service.Broker` code the ``POST /requests`` handler
calls, on the Redis store (``--store memory`` for the in-memory one).

Two calendars, each under its own Redis key prefix with one platform ``big``
(20,000 cores, 20,000 GiB): one empty, one filled with 10,000 accepted
bookings of 1 core and 1 GiB, their 5-minute windows spread evenly over the
next 24 hours (made through the broker too: request, then accept). Then the
same ping request (1–2 cores, PT10M, up to four offers, no start given: the
next 24 hours) is timed against each calendar, alternating between them in
rounds so drift hits both alike; every offer set is rejected straight after,
so each calendar stays as it was. The time is that of ``Broker.request``
alone (validation happens before the timer starts).

This reports; it does not gate: the exit code is 0 whatever the figures.
Every Redis key it writes is under a unique prefix and deleted at the end.

    .venv/bin/python bench/calendar.py [--bookings 10000] [--requests 500]
"""

from __future__ import annotations

import os
import sys

# This file shares its name with a standard-library module; keep its directory
# off the import path, and make the working tree's talicada importable.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import structlog  # noqa: E402

from talicada.broker.calendar import Usage  # noqa: E402
from talicada.broker.records import LiveSession, OfferSetRecord, SessionRecord, Transition  # noqa: E402
from talicada.broker.service import Broker, utc_now  # noqa: E402
from talicada.broker.store import Store  # noqa: E402
from talicada.broker.store.memory import MemoryStore  # noqa: E402
from talicada.broker.store.redis import RedisStore  # noqa: E402
from talicada.schema.iso8601 import format_instant  # noqa: E402
from talicada.schema.validation import parse_request  # noqa: E402
from talicada.settings import LOCAL, Settings, load  # noqa: E402

COMPUTE_KIND = (
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/simple-compute-resource-1.0"
)
#: The timed request: a ping, 1–2 cores for ten minutes, any time in the next 24 hours.
REQUEST: dict[str, Any] = {
    "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
    "compute": {"kind": COMPUTE_KIND, "cores": {"min": 1, "max": 2}},
    "schedule": {"requested": {"duration": "PT10M"}},
}
PLATFORM = "big"
CAPACITY = 20_000
BOOKING_DURATION = "PT5M"
SPREAD = timedelta(hours=24)
OWNER = "bench"
TARGET = 2.0


class Timings:
    """Time spent in the store's two calls on the offer path, when recording."""

    def __init__(self) -> None:
        self.recording = False
        self.usage: list[float] = []
        self.hold: list[float] = []

    def add(self, into: list[float], began: float) -> None:
        if self.recording:
            into.append(time.perf_counter() - began)


def instrument(store: RedisStore | MemoryStore, timings: Timings) -> None:
    """Time ``store``'s calendar reads and holds (either implementation)."""
    usage, hold = store.usage, store.hold

    async def timed_usage(platform: str, first: int, last: int) -> Usage:
        began = time.perf_counter()
        try:
            return await usage(platform, first, last)
        finally:
            timings.add(timings.usage, began)

    async def timed_hold(
        offerset: OfferSetRecord,
        offers: Sequence[SessionRecord],
        capacity: Mapping[str, tuple[int, int]],
        history: Sequence[Transition],
    ) -> int | None:
        began = time.perf_counter()
        try:
            return await hold(offerset, offers, capacity, history)
        finally:
            timings.add(timings.hold, began)

    # Instance attributes shadow the methods for this one store.
    setattr(store, "usage", timed_usage)  # noqa: B010
    setattr(store, "hold", timed_hold)  # noqa: B010


async def open_store(kind: str, url: str, prefix: str) -> tuple[Store, Timings]:
    timings = Timings()
    store: RedisStore | MemoryStore
    if kind == "redis":
        store = await RedisStore.connect(url, prefix=prefix)
    else:
        store = MemoryStore()
    instrument(store, timings)
    return store, timings


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(client: aioredis.Redis | None) -> float:
    """CPU time redis-server has used (0 without Redis)."""
    if client is None:
        return 0.0
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- filling a calendar ------------------------------------------------------


async def fill(settings: Settings, store: Store, count: int, width: int) -> tuple[int, float]:
    """``count`` accepted 1-core bookings spread over the next 24 hours.

    Made as a client would: a request for a 1-minute start interval, then the
    offer accepted (``Broker.direct``). Returns how many were booked and the time.
    """
    broker = Broker(msgspec.structs.replace(settings, max_offers=1), store)
    now = utc_now()
    step = SPREAD / count
    next_index = 0
    booked = 0

    async def booker() -> None:
        nonlocal next_index, booked
        while next_index < count:
            index = next_index
            next_index += 1
            start = now + timedelta(minutes=1) + index * step
            doc = {
                "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
                "compute": {"kind": COMPUTE_KIND, "cores": {"min": 1, "max": 1}},
                "schedule": {
                    "requested": {
                        "start": f"{format_instant(start)}/PT1M",
                        "duration": BOOKING_DURATION,
                    }
                },
            }
            result = await broker.direct(parse_request(doc, now=utc_now()), OWNER)
            if isinstance(result, LiveSession) and result.phase == "ACCEPTED":
                booked += 1

    began = time.perf_counter()
    await asyncio.gather(*(booker() for _ in range(width)))
    return booked, time.perf_counter() - began


# -- timing offers -----------------------------------------------------------


async def offer_once(broker: Broker, into: list[float] | None) -> int:
    """Time one request's offers, then reject them all; returns how many offers."""
    valid = parse_request(REQUEST, now=utc_now())
    began = time.perf_counter()
    view = await broker.request(valid, OWNER)
    elapsed = time.perf_counter() - began
    if into is not None:
        into.append(elapsed)
    for offer in view.offers:
        await broker.update_phase(offer.record.uuid, OWNER, "REJECTED", "bench")
    return len(view.offers)


async def calendar_figures(store: Store) -> str:
    """How many bookings and counters a calendar holds (and, on Redis, their encoding)."""
    entries = await store.entries(PLATFORM)
    booked = sum(1 for _, state, _ in entries if state == "B")
    held = len(entries) - booked
    text = f"{booked} bookings, {held} holds"
    if isinstance(store, RedisStore):
        client = store.client
        usage = store.keys.calendar_usage(PLATFORM)
        counters = int(await client.hlen(usage))
        encoding = await client.object("encoding", usage) if counters else b"-"
        entry_key = store.keys.calendar_entries(PLATFORM)
        entries_encoding = await client.object("encoding", entry_key) if entries else b"-"
        text += (
            f"; usage hash {counters} counters ({_text(encoding)}), "
            f"entries hash {_text(entries_encoding)}"
        )
    return text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def summary(values: list[float]) -> str:
    return (
        f"median {percentile(values, 50) * 1000:6.2f} ms, p95 "
        f"{percentile(values, 95) * 1000:6.2f} ms, max {percentile(values, 100) * 1000:6.2f} ms"
    )


async def cleanup(client: aioredis.Redis, pattern: str) -> int:
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(await client.unlink(*batch))
            batch = []
    if batch:
        removed += int(await client.unlink(*batch))
    return removed


async def bench(options: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    # The broker logs each offer set at info level; keep the report readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    run = f"bench-cal-{uuid.uuid4().hex[:12]}"
    admin: aioredis.Redis | None = None
    redis_version = "-"
    if options.store == "redis":
        admin = aioredis.Redis.from_url(options.redis_url)
        try:
            info = await admin.info("server")
        except redis.RedisError as error:
            print(f"bench: Redis at {options.redis_url} does not answer: {error}", file=sys.stderr)
            return 2
        redis_version = str(info.get("redis_version", "?"))

    settings = load(
        environ={},
        platforms=[msgspec.structs.replace(LOCAL, name=PLATFORM, cores=CAPACITY, memory=CAPACITY)],
    )
    print("# Offer latency: a calendar with bookings vs an empty one (docs/ARCHITECTURE.md §11)")
    print(
        f"python {platform.python_version()}, msgspec {msgspec.__version__}, redis-py "
        f"{redis.__version__}, Redis server {redis_version}; store: {options.store}; "
        f"this process pinned to core {cores[0]} of {cores}"
        + (", Redis not pinned" if admin is not None else "")
    )
    print(
        f"platform {PLATFORM!r}: cores={CAPACITY:,}, memory={CAPACITY:,} GiB, slot "
        f"{settings.slot} s, max_offers={settings.max_offers}, offer_ttl {settings.offer_ttl:g} s"
    )
    print(
        f"full calendar: {options.bookings:,} accepted bookings of 1 core / 1 GiB, "
        f"{BOOKING_DURATION} each, starts spread evenly over the next 24 h"
    )
    print(
        f"timed: Broker.request for {msgspec.json.encode(REQUEST).decode()} "
        f"({options.requests} per calendar after {options.warmup} warm-up, alternating in "
        f"{options.rounds} rounds; each offer set rejected after it is timed)"
    )
    if admin is not None:
        print(f"Redis key prefixes {run}-empty and {run}-full (deleted at the end)")
    print()

    stores: list[Store] = []
    removed = left = 0
    try:
        empty, empty_timings = await open_store(options.store, options.redis_url, f"{run}-empty")
        stores.append(empty)
        full, full_timings = await open_store(options.store, options.redis_url, f"{run}-full")
        stores.append(full)

        print(f"filling: {options.bookings:,} bookings …", flush=True)
        booked, seconds = await fill(settings, full, options.bookings, options.fill_width)
        print(
            f"filled in {seconds:.1f} s ({booked / seconds:.0f} bookings/s through "
            f"Broker.direct, {options.fill_width} at a time)"
        )
        if booked != options.bookings:
            print(f"WARNING: only {booked} of {options.bookings} requests were booked")

        brokers = {"empty": Broker(settings, empty), "full": Broker(settings, full)}
        timings = {"empty": empty_timings, "full": full_timings}
        latencies: dict[str, list[float]] = {"empty": [], "full": []}
        offers: dict[str, list[int]] = {"empty": [], "full": []}
        for broker in brokers.values():
            for _ in range(options.warmup):
                await offer_once(broker, None)
        print(f"empty calendar: {await calendar_figures(empty)}")
        print(f"full calendar:  {await calendar_figures(full)}")
        print("timing …", flush=True)
        per_round = max(1, options.requests // options.rounds)
        redis0 = await redis_cpu_seconds(admin)
        busy0, began = machine_busy_seconds(), time.perf_counter()
        cpu0 = time.process_time()
        for number in range(options.rounds):
            order = ["empty", "full"] if number % 2 == 0 else ["full", "empty"]
            for name in order:
                timings[name].recording = True
                for _ in range(per_round):
                    offers[name].append(await offer_once(brokers[name], latencies[name]))
                timings[name].recording = False
        wall = time.perf_counter() - began
        ours = time.process_time() - cpu0
        busy = machine_busy_seconds() - busy0
        redis_cpu = await redis_cpu_seconds(admin) - redis0
        others = max(0.0, busy - ours - redis_cpu) / wall
        print(f"full calendar after: {await calendar_figures(full)}")
        print()

        print(f"{'calendar':<10} {'offer latency (Broker.request)':<52} offers/request")
        for name in ("empty", "full"):
            counts = offers[name]
            print(f"{name:<10} {summary(latencies[name])}  {min(counts)}–{max(counts)}")
        print("where the time goes (medians):")
        for name in ("empty", "full"):
            usage = percentile(timings[name].usage, 50) * 1000
            hold = percentile(timings[name].hold, 50) * 1000
            reads = len(timings[name].usage) / max(1, len(latencies[name]))
            print(
                f"  {name:<8} calendar read {usage:6.2f} ms ({reads:.1f} per request), "
                f"hold {hold:6.2f} ms"
            )
        print(
            f"CPU while timing: this process {ours / wall * 100:.0f}% of a core, redis-server "
            f"{redis_cpu / wall * 100:.0f}%, every other process {others * 100:.0f}%"
        )
        print()

        median = percentile(latencies["full"], 50) / percentile(latencies["empty"], 50)
        p95 = percentile(latencies["full"], 95) / percentile(latencies["empty"], 95)
        print("## Against the docs/ARCHITECTURE.md §11 target (within 2× of an empty calendar)")
        print(f"full/empty, median: {median:.2f}×: {'PASS' if median <= TARGET else 'FAIL'}")
        print(f"full/empty, p95:    {p95:.2f}×: {'PASS' if p95 <= TARGET else 'FAIL'}")
        all_offered = min(offers["empty"] + offers["full"]) == settings.max_offers
        if not all_offered:
            print("WARNING: some requests got fewer offers than max_offers")
    finally:
        for store in stores:
            await store.close()
        if admin is not None:
            removed = await cleanup(admin, f"{run}-*")
            left = len([key async for key in admin.scan_iter(match=f"{run}-*", count=1000)])
            await admin.aclose()
    if admin is not None:
        print()
        print(f"cleanup: {removed} Redis keys under {run}-* deleted, {left} left")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--bookings", type=int, default=10_000, help="bookings in the full one")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per calendar")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per calendar")
    parser.add_argument("--rounds", type=int, default=10, help="alternations between calendars")
    parser.add_argument("--fill-width", type=int, default=32, help="bookings made at once")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
