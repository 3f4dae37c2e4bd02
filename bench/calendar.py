"""Benchmark: offer latency and Redis time per offer set, by window length and bookings.

Issue 7 / docs/ARCHITECTURE.md §11: offer latency and Redis time at P7D within 1.5× of
PT10M; with 10,000 bookings within 2× of none; no Redis script longer than 5 ms.

This drives the broker service directly (no HTTP): the same
:class:`talicada.broker.service.Broker` the ``POST /requests`` handler calls, on
the Redis store (``--store memory`` for the in-memory one), through the public
broker and store API only, so it measures whatever calendar the store has.

Calendars, each under its own Redis key prefix with one platform ``big``
(20,000 cores, 20,000 GiB, ``max_duration`` 30 days): one per booking count
(default 0, 1,000 and 10,000), filled through the broker (request, then accept:
``Broker.direct``) with bookings of 1 core and 1 GiB, 5 to 60 minutes long,
starting at random (seeded) in the next 24 hours, so every timed window
overlaps them all (``--layout even``: PT5M each, evenly spaced, as the first
version of this bench did; many short evenly spaced bookings leave long
stretches at one level, which flatters a step-function calendar).
The timed request is a ping with 1–2 cores for PT10M, P1D, P7D or P30D and no
start (the next 24 hours, up to four offers). Every (window, calendar) cell
gets the same requests in rounds, in alternating order, so drift hits all
alike; each offer set is rejected right after it is timed, so the calendars
stay as they were. The time is that of ``Broker.request`` alone (validation is
done before the timer starts). Around each request the script reads ``INFO
commandstats`` and takes the difference: the Redis time of that offer set
(every command but the bench's own probes; ``evalsha`` is the Lua scripts).
Long windows on a per-slot calendar are expensive, so each cell also has a
time budget: it gets fewer requests when they are slow (at least three).

``slowlog-log-slower-than`` is set to 1,000 µs for the run (and restored): the
script lists the longest entries under its own key prefixes.

This reports; it does not gate: the exit code is 0 whatever the figures.
Every Redis key it writes is under a unique prefix and deleted at the end.

    .venv/bin/python bench/calendar.py            # ~2-3 min
    .venv/bin/python bench/calendar.py --quick    # ~30 s
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
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import structlog  # noqa: E402

from bench._support import (  # noqa: E402
    SlowLog,
    commandstats,
    delete_prefix,
    machine_busy_seconds,
    machine_line,
    percentile,
    redis_cpu_seconds,
    script_name,
    stats_delta,
    store_scripts,
    verdict,
)
from talicada.broker.records import LiveSession  # noqa: E402
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
PLATFORM = "big"
CAPACITY = 20_000
MAX_DURATION = 30 * 24 * 3600.0
BOOKING_DURATION = "PT5M"
SPREAD = timedelta(hours=24)
OWNER = "bench"
WINDOWS = ("PT10M", "P1D", "P7D", "P30D")
TARGET_WINDOW = 1.5  # P7D / PT10M
TARGET_BOOKINGS = 2.0  # 10,000 bookings / none
TARGET_SCRIPT_MS = 5.0


def timed_request(duration: str) -> dict[str, Any]:
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"kind": COMPUTE_KIND, "cores": {"min": 1, "max": 2}},
        "schedule": {"requested": {"duration": duration}},
    }


@dataclass
class Cell:
    """One (window, calendar) combination and what was measured on it."""

    window: str
    bookings: int
    latency: list[float] = field(default_factory=list)
    redis_us: list[int] = field(default_factory=list)
    script_us: list[int] = field(default_factory=list)
    redis_calls: list[int] = field(default_factory=list)
    offers: list[int] = field(default_factory=list)
    spent: float = 0.0
    parts: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self) -> float:
        return percentile(self.latency, 50) * 1000

    def redis_median_us(self) -> float:
        return percentile([float(v) for v in self.redis_us], 50)


class Parts:
    """Times the store's calls on the offer path (whichever the store has), when on."""

    def __init__(self) -> None:
        self.into: dict[str, list[float]] | None = None

    def wrap(self, store: Any, names: tuple[str, ...]) -> None:
        for name in names:
            method = getattr(store, name, None)
            if method is None or not callable(method):
                continue
            setattr(store, name, self._timed(name, method))

    def _timed(
        self, name: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                if self.into is not None:
                    self.into.setdefault(name, []).append(time.perf_counter() - began)

        return timed


# -- filling a calendar ------------------------------------------------------


async def fill(
    settings: Settings, store: Store, count: int, width: int, layout: str
) -> tuple[int, float]:
    """``count`` accepted 1-core bookings over the next 24 hours (``Broker.direct``).

    ``even``: PT5M each, starts evenly spaced. ``random`` (seeded): starts anywhere
    in the 24 hours, 5 to 60 minutes long, so neighbouring slots rarely hold the
    same total (an even layout of many short bookings makes long flat stretches).
    """
    broker = Broker(msgspec.structs.replace(settings, max_offers=1), store)
    now = utc_now()
    step = SPREAD / max(1, count)
    rng = random.Random(count)
    next_index = 0
    booked = 0

    async def booker() -> None:
        nonlocal next_index, booked
        while next_index < count:
            index = next_index
            next_index += 1
            if layout == "even":
                start = now + timedelta(minutes=1) + index * step
                duration = BOOKING_DURATION
            else:
                # From the time of this booking, not of the fill's start: on a
                # busy machine the fill can take longer than a start interval.
                start = utc_now() + timedelta(minutes=1) + rng.random() * SPREAD
                duration = f"PT{rng.randint(5, 60)}M"
            doc = {
                "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
                "compute": {"kind": COMPUTE_KIND, "cores": {"min": 1, "max": 1}},
                "schedule": {
                    "requested": {
                        "start": f"{format_instant(start)}/PT1M",
                        "duration": duration,
                    }
                },
            }
            result = await broker.direct(parse_request(doc, now=utc_now()), OWNER)
            if isinstance(result, LiveSession) and result.phase == "ACCEPTED":
                booked += 1

    began = time.perf_counter()
    await asyncio.gather(*(booker() for _ in range(width)))
    return booked, time.perf_counter() - began


async def calendar_figures(store: Store) -> str:
    """How many bookings and holds a calendar has, when the store can say."""
    entries = getattr(store, "entries", None)
    if entries is None:
        return "(the store lists no entries)"
    found = await entries(PLATFORM)
    booked = sum(1 for _, state, _ in found if state == "B")
    return f"{booked} bookings, {len(found) - booked} holds"


# -- timing offers -----------------------------------------------------------


async def offer_once(
    broker: Broker, document: dict[str, Any], cell: Cell | None, admin: aioredis.Redis | None
) -> None:
    """Time one request's offers (and its Redis time), then reject them all."""
    valid = parse_request(document, now=utc_now())
    before = await commandstats(admin) if admin is not None and cell is not None else None
    began = time.perf_counter()
    view = await broker.request(valid, OWNER)
    elapsed = time.perf_counter() - began
    if cell is not None:
        cell.latency.append(elapsed)
        cell.offers.append(len(view.offers))
        if admin is not None and before is not None:
            delta = stats_delta(before, await commandstats(admin))
            cell.redis_us.append(sum(usec for _, usec in delta.values()))
            cell.redis_calls.append(sum(calls for calls, _ in delta.values()))
            cell.script_us.append(
                sum(usec for name, (_, usec) in delta.items() if name.startswith("eval"))
            )
    for offer in view.offers:
        await broker.update_phase(offer.record.uuid, OWNER, "REJECTED", "bench")


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


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
        platforms=[
            msgspec.structs.replace(
                LOCAL,
                name=PLATFORM,
                cores=CAPACITY,
                memory=CAPACITY,
                max_duration=MAX_DURATION,
            )
        ],
    )
    counts = sorted({int(x) for x in options.bookings.split(",")})
    windows = [w for w in options.windows.split(",") if w]
    print("# Offer latency and Redis time by window and bookings (issue 7; ARCHITECTURE §11)")
    print(machine_line())
    print(
        f"msgspec {msgspec.__version__}, redis-py {redis.__version__}, Redis server "
        f"{redis_version}; store: {options.store}; this process pinned to core {cores[0]} of "
        f"{cores}" + (", Redis not pinned" if admin is not None else "")
    )
    print(
        f"platform {PLATFORM!r}: cores={CAPACITY:,}, memory={CAPACITY:,} GiB, max_duration 30 "
        f"days, slot {settings.slot} s, max_offers={settings.max_offers}"
    )
    shape = (
        f"{BOOKING_DURATION} each, starts spread evenly over the next 24 h"
        if options.layout == "even"
        else "5–60 min each, starts at random (seeded) in the next 24 h"
    )
    print(
        f"calendars: {', '.join(f'{n:,}' for n in counts)} accepted bookings of 1 core / 1 GiB, "
        f"{shape} (layout {options.layout})"
    )
    print(
        f"timed: Broker.request for a ping, 1–2 cores, duration {', '.join(windows)}, no start "
        f"(the next 24 h); up to {options.requests} per cell (after {options.warmup} warm-up) "
        f"in {options.rounds} rounds, at most {options.cell_seconds:g} s per cell (at least 3); "
        f"each offer set rejected after it is timed"
    )
    if admin is not None:
        print(f"Redis key prefixes {run}-* (deleted at the end); slowlog threshold 1,000 µs")
    print()

    stores: list[Store] = []
    removed = left = 0
    slow_entries: list[Any] = []
    scripts: dict[str, str] = {}
    try:
        async with _slowlog(admin) as slowlog:
            calendars: dict[int, tuple[Store, Broker, Parts]] = {}
            for count in counts:
                store: Store
                if options.store == "redis":
                    store = await RedisStore.connect(options.redis_url, prefix=f"{run}-{count}")
                    scripts.update(store_scripts(store))
                else:
                    store = MemoryStore()
                stores.append(store)
                if count:
                    print(f"filling: {count:,} bookings …", flush=True)
                    booked, seconds = await fill(
                        settings, store, count, options.fill_width, options.layout
                    )
                    print(
                        f"  {booked:,} booked in {seconds:.1f} s ({booked / seconds:.0f}/s "
                        f"through Broker.direct, {options.fill_width} at a time); "
                        f"{await calendar_figures(store)}"
                    )
                    if booked != count:
                        print(f"WARNING: only {booked} of {count} requests were booked")
                parts = Parts()
                parts.wrap(store, ("usage", "steps", "window", "hold"))
                calendars[count] = (store, Broker(settings, store), parts)

            cells = {(w, n): Cell(w, n) for w in windows for n in counts}
            documents = {w: timed_request(w) for w in windows}
            for (window, count), _cell in cells.items():
                _store, broker, _ = calendars[count]
                for _ in range(options.warmup):
                    await offer_once(broker, documents[window], None, None)
            print("timing …", flush=True)
            per_round = max(1, math.ceil(options.requests / options.rounds))
            budget = options.cell_seconds / options.rounds
            order = list(cells)
            redis0 = await redis_cpu_seconds(admin) if admin is not None else 0.0
            busy0, began, cpu0 = machine_busy_seconds(), time.perf_counter(), time.process_time()
            for number in range(options.rounds):
                for key in order if number % 2 == 0 else order[::-1]:
                    cell = cells[key]
                    _store, broker, parts = calendars[cell.bookings]
                    parts.into = cell.parts
                    start = time.perf_counter()
                    for index in range(per_round):
                        if (
                            index
                            and time.perf_counter() - start > budget
                            and len(cell.latency) >= 3
                        ):
                            break
                        await offer_once(broker, documents[cell.window], cell, admin)
                    parts.into = None
                    cell.spent += time.perf_counter() - start
            wall = time.perf_counter() - began
            ours = time.process_time() - cpu0
            busy = machine_busy_seconds() - busy0
            redis_cpu = (await redis_cpu_seconds(admin) - redis0) if admin is not None else 0.0
            others = max(0.0, busy - ours - redis_cpu) / wall
            for count in counts:
                print(f"calendar {count:>6,} after: {await calendar_figures(calendars[count][0])}")
            if slowlog is not None:
                slow_entries = await slowlog.collect([run])
    finally:
        for store in stores:
            await store.close()
        if admin is not None:
            removed, left = await delete_prefix(admin, f"{run}-*")
            await admin.aclose()
    print()

    print(
        f"{'window':<6} {'bookings':>8} {'n':>4} {'median ms':>9} {'p95 ms':>8} {'max ms':>8} "
        f"{'Redis µs':>9} {'scripts µs':>10} {'cmds':>5} {'offers':>6}  where (medians, ms)"
    )
    for (window, count), cell in cells.items():
        where = ", ".join(
            f"{name} {ms(values, 50):.2f}×{len(values) / max(1, len(cell.latency)):.1f}"
            for name, values in sorted(cell.parts.items())
        )
        print(
            f"{window:<6} {count:>8,} {len(cell.latency):>4} {cell.median_ms():>9.2f} "
            f"{ms(cell.latency, 95):>8.2f} {ms(cell.latency, 100):>8.2f} "
            f"{cell.redis_median_us():>9.0f} "
            f"{percentile([float(v) for v in cell.script_us], 50):>10.0f} "
            f"{percentile([float(v) for v in cell.redis_calls], 50):>5.0f} "
            f"{min(cell.offers, default=0)}–{max(cell.offers, default=0)}  {where}"
        )
    print(
        "  Redis µs: median per offer set of the INFO commandstats usec taken around it (all "
        "commands; scripts = evalsha); cmds: Redis commands per offer set; where: the store "
        "calls on the offer path, median ms × calls per request"
    )
    print(
        f"CPU while timing ({wall:.0f} s): this process {ours / wall * 100:.0f}% of a core, "
        f"redis-server {redis_cpu / wall * 100:.0f}%, every other process {others * 100:.0f}%"
    )
    print()

    print("## Against the issue 7 targets")
    low, high = counts[0], counts[-1]
    if "PT10M" in windows and "P7D" in windows:
        for count in sorted({low, high}):
            short, long = cells[("PT10M", count)], cells[("P7D", count)]
            lat = ratio(long.median_ms(), short.median_ms())
            red = ratio(long.redis_median_us(), short.redis_median_us())
            print(
                f"P7D / PT10M at {count:,} bookings: latency {lat:.2f}×: "
                f"{verdict(lat <= TARGET_WINDOW)}; Redis time {red:.2f}×: "
                f"{'-' if admin is None else verdict(red <= TARGET_WINDOW)} (target ≤ 1.5×)"
            )
    for window in windows:
        if low == high:
            break
        empty, full = cells[(window, low)], cells[(window, high)]
        lat = ratio(full.median_ms(), empty.median_ms())
        red = ratio(full.redis_median_us(), empty.redis_median_us())
        print(
            f"{high:,} / {low:,} bookings at {window}: latency {lat:.2f}×: "
            f"{verdict(lat <= TARGET_BOOKINGS)}; Redis time {red:.2f}×: "
            f"{'-' if admin is None else verdict(red <= TARGET_BOOKINGS)} (target ≤ 2×)"
        )
    if admin is not None:
        longest = slow_entries[0].micros / 1000 if slow_entries else 0.0
        over = sum(1 for e in slow_entries if e.micros > TARGET_SCRIPT_MS * 1000)
        print(
            f"SLOWLOG (≥ 1 ms, our keys only): {len(slow_entries)} entries, {over} over 5 ms; "
            f"longest {longest:.2f} ms: {verdict(longest <= TARGET_SCRIPT_MS)} (target ≤ 5 ms)"
        )
        for entry in slow_entries[:5]:
            print(
                f"  {entry.micros / 1000:8.2f} ms  {script_name(entry.command, scripts)}  "
                f"{entry.command[:90]}"
            )
    incomplete = [c for c in cells.values() if min(c.offers, default=0) < settings.max_offers]
    if incomplete:
        print("WARNING: some requests got fewer offers than max_offers")
    if admin is not None:
        print()
        print(f"cleanup: {removed} Redis keys under {run}-* deleted, {left} left")
    return 0


def _slowlog(admin: aioredis.Redis | None) -> Any:
    if admin is None:
        import contextlib

        return contextlib.nullcontext(None)
    return SlowLog(admin, threshold_us=1000, keep=1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--quick", action="store_true", help="small calendars, few requests")
    parser.add_argument(
        "--bookings", default="0,1000,10000", help="bookings of each calendar (comma-separated)"
    )
    parser.add_argument(
        "--layout",
        choices=["random", "even"],
        default="random",
        help="bookings at random times and lengths, or PT5M evenly spaced (the old bench)",
    )
    parser.add_argument("--windows", default=",".join(WINDOWS), help="durations timed")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per cell")
    parser.add_argument("--cell-seconds", type=float, default=8.0, help="time budget per cell")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per cell")
    parser.add_argument("--rounds", type=int, default=4, help="passes over all cells")
    parser.add_argument("--fill-width", type=int, default=32, help="bookings made at once")
    options = parser.parse_args()
    if options.quick:
        options.bookings = "0,1000"
        options.requests, options.cell_seconds, options.warmup, options.rounds = 30, 1.5, 1, 2
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
