"""Benchmark: 100,000 stored sessions: GET and list-page latency, Redis memory per session.

Issue 7 / docs/ARCHITECTURE.md §11: GET /sessions/{uuid} p99 < 5 ms and a list page p99 < 20 ms
with 100,000 sessions stored; ≤ 4 KiB of Redis per finished session.

Filling: through the broker and store API (no HTTP), 32 at a time: a request
for a ping (four offers), one offer accepted (its three siblings become
REJECTED in the same script) and then finished as COMPLETED with
``Store.finish`` (the worker pipeline is skipped: ``bench/lifecycle.py`` runs
that, and measures the memory of sessions that went through it). So every
stored session is finished, a quarter COMPLETED and three quarters REJECTED,
all of one owner (the worst case for that owner's list).

Then a broker (Redis store, expiry timers off) runs in its own process pinned
with taskset to one core, and wrk, pinned to the other, sends (few
connections, so the figures are latencies, not a saturation test):
``GET /sessions/{uuid}`` over a random sample of the sessions; ``GET /sessions``
(the newest page of 50); ``GET /sessions?until=…`` (pages deep in the owner's
history). Redis memory: ``MEMORY USAGE`` of each key of a sample of sessions
(hash, history, offer set shared by four), plus their share of the owner index.

This reports; it does not gate: exit code 0 whatever the figures. Every Redis
key it writes is under a unique prefix and deleted at the end.

    .venv/bin/python bench/scale.py            # 100,000 sessions, ~3 min
    .venv/bin/python bench/scale.py --quick    # 4,000 sessions, ~30 s
"""

from __future__ import annotations

import os
import sys

_SCRIPT = os.path.abspath(__file__)
_HERE = os.path.dirname(_SCRIPT)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import structlog  # noqa: E402

from bench._support import (  # noqa: E402
    WRK_LUA,
    SlowLog,
    WrkRun,
    cores,
    delete_prefix,
    ensure_wrk,
    kib,
    log_problems,
    machine_line,
    mib,
    read_port,
    run_wrk,
    spawn,
    verdict,
    write_wrk_spec,
)

TOKEN = "bench-token-" + "s" * 16
OWNER = "bench"
CAPACITY = 10_000_000
REQUEST: dict[str, Any] = {
    "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
    "compute": {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
        "simple-compute-resource-1.0",
        "cores": {"min": 1, "max": 2},
    },
    "schedule": {"requested": {"duration": "PT10M"}},
}
TARGET_GET_MS = 5.0
TARGET_LIST_MS = 20.0
TARGET_BYTES = 4096


def _settings(tokens: str | None = None) -> Any:
    from talicada.settings import LOCAL, load

    return load(
        environ={},
        auth_tokens_file=tokens,
        log_format="json",
        offer_ttl=3600.0,
        platforms=[msgspec.structs.replace(LOCAL, cores=CAPACITY, memory=CAPACITY)],
    )


# -- the server process ----------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from talicada import logs
    from talicada.broker.app import create_app
    from talicada.broker.store.redis import RedisStore

    settings = _settings(args.tokens)
    logs.configure(settings.log_format)
    store = await RedisStore.connect(args.redis_url, prefix=args.prefix)
    app = create_app(settings, store=store, timers=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    from talicada import heap

    heap.settle()  # as `talicada serve` does once it listens
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await store.close()


# -- filling -----------------------------------------------------------------------


async def fill(url: str, prefix: str, count: int, width: int) -> tuple[list[str], list[int], float]:
    """``count`` finished sessions (4 per offer set); their uuids, creation times, seconds."""
    from talicada.broker.records import Transition
    from talicada.broker.service import Broker, utc_now
    from talicada.broker.store.redis import RedisStore
    from talicada.schema.iso8601 import format_instant
    from talicada.schema.validation import parse_request

    store = await RedisStore.connect(url, prefix=prefix)
    broker = Broker(_settings(), store)
    sets = count // 4
    made = 0
    uuids: list[str] = []
    created: list[int] = []
    began = time.perf_counter()
    last_print = began

    async def worker() -> None:
        nonlocal made, last_print
        while made < sets:
            made += 1
            view = await broker.request(parse_request(REQUEST, now=utc_now()), OWNER)
            chosen = view.offers[0].record.uuid
            await broker.update_phase(chosen, OWNER, "ACCEPTED", "bench")
            record = Transition(
                time=format_instant(utc_now()), source="ACCEPTED", target="COMPLETED", cause="bench"
            )
            outcome = await store.finish(chosen, {"ACCEPTED"}, record)
            if not outcome.ok:
                raise RuntimeError(f"finish: {outcome}")
            uuids.extend(offer.record.uuid for offer in view.offers)
            created.append(view.record.created)
            now = time.perf_counter()
            if now - last_print > 10:
                last_print = now
                print(f"  {len(uuids):,} sessions …", flush=True)

    try:
        await asyncio.gather(*(worker() for _ in range(width)))
    finally:
        await store.close()
    return uuids, created, time.perf_counter() - began


async def memory_per_session(
    admin: aioredis.Redis, prefix: str, sample: list[str], total: int
) -> dict[str, Any]:
    """MEMORY USAGE of a sample of sessions' keys, by phase."""
    from talicada.broker.store.redis import RedisStore
    from talicada.constants import Keys

    keys = Keys(prefix)
    store = RedisStore(admin, prefix=prefix)
    lives = await store.sessions(sample)
    by_phase: dict[str, list[int]] = {}
    parts: dict[str, list[int]] = {"session": [], "history": [], "offerset/4": []}
    for uuid_, live in zip(sample, lives, strict=True):
        if live is None:
            continue
        session = int(await admin.memory_usage(keys.session(uuid_), samples=0) or 0)
        history = int(await admin.memory_usage(keys.history(uuid_), samples=0) or 0)
        applied = int(await admin.memory_usage(keys.applied(uuid_), samples=0) or 0)
        offerset = int(
            await admin.memory_usage(keys.offerset(live.record.offerset), samples=0) or 0
        )
        parts["session"].append(session)
        parts["history"].append(history + applied)
        parts["offerset/4"].append(offerset // 4)
        by_phase.setdefault(live.phase, []).append(session + history + applied + offerset // 4)
    index = int(await admin.memory_usage(keys.owner_index(OWNER), samples=0) or 0)
    return {
        "parts": {k: sum(v) / len(v) for k, v in parts.items() if v},
        "phases": {k: (sum(v) / len(v), len(v)) for k, v in by_phase.items()},
        "index": index / max(1, total),
    }


async def bench(options: argparse.Namespace) -> int:
    if ensure_wrk() is None:
        print("bench: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    server_core, client_core = cores()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    admin = aioredis.Redis.from_url(options.redis_url)
    try:
        info = await admin.info("server")
    except redis.RedisError as error:
        print(f"bench: Redis at {options.redis_url} does not answer: {error}", file=sys.stderr)
        return 2
    prefix = f"bench-scale-{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix="talicada-bench-scale-"))
    tokens = workdir / "tokens"
    tokens.write_text(f"{TOKEN} {OWNER}\n", encoding="utf-8")
    script = workdir / "bench.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}

    print("# Scale: GET and list latency and Redis memory with many stored sessions (issue 7)")
    print(machine_line())
    print(f"redis-py {redis.__version__}, Redis server {info.get('redis_version', '?')}")
    print(
        f"{options.sessions:,} finished sessions of one owner (per offer set: 1 COMPLETED, "
        f"3 REJECTED) under Redis key prefix {prefix!r} (deleted at the end); broker pinned to "
        f"core {server_core}, wrk to core {client_core}; wrk -c{options.connections}, "
        f"{options.seconds:g} s per run"
    )
    print()

    runs: list[WrkRun] = []
    figures: dict[str, Any] = {}
    problems = 0
    server = None
    try:
        async with SlowLog(admin, threshold_us=1000) as slowlog:
            used0 = int((await admin.info("memory"))["used_memory"])
            print(f"filling {options.sessions:,} sessions …", flush=True)
            uuids, created, seconds = await fill(
                options.redis_url, prefix, options.sessions, options.width
            )
            used1 = int((await admin.info("memory"))["used_memory"])
            figures["fill"] = (len(uuids), seconds)
            figures["used"] = (used1 - used0) / max(1, len(uuids))
            print(f"  {len(uuids):,} in {seconds:.0f} s ({len(uuids) / seconds:.0f}/s)")
            server = await spawn(
                "server",
                [
                    sys.executable,
                    _SCRIPT,
                    "--serve",
                    "--prefix",
                    prefix,
                    "--redis-url",
                    options.redis_url,
                    "--tokens",
                    str(tokens),
                ],
                workdir,
                core=server_core,
                stdout_pipe=True,
            )
            port = await read_port(server)
            base = f"http://127.0.0.1:{port}"
            rng = random.Random(7)
            sample = rng.sample(uuids, min(2000, len(uuids)))
            created.sort()
            deep = [
                datetime.fromtimestamp(created[rng.randrange(len(created))] / 1000, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
                for _ in range(500)
            ]
            plans = [
                ("GET /sessions/{uuid}", [f"/sessions/{u}" for u in sample]),
                ("GET /sessions (newest 50)", ["/sessions?limit=50"]),
                (
                    "GET /sessions?until=… (deep, 50)",
                    [f"/sessions?limit=50&until={d}" for d in deep],
                ),
            ]
            for label, paths in plans:
                spec = write_wrk_spec(
                    workdir / f"spec-{len(runs)}.lua",
                    method="GET",
                    headers=headers,
                    paths=paths,
                )
                print(f"running: {label} …", flush=True)
                await run_wrk(
                    "warm-up",
                    base,
                    spec,
                    script,
                    seconds=1,
                    connections=options.connections,
                    core=client_core,
                )
                cpu0 = server.cpu()
                run = await run_wrk(
                    label,
                    base,
                    spec,
                    script,
                    seconds=options.seconds,
                    connections=options.connections,
                    core=client_core,
                )
                run.server_cpu = (server.cpu() - cpu0) / run.seconds
                runs.append(run)
            figures["memory"] = await memory_per_session(
                admin, prefix, sample[: options.memory_sample], len(uuids)
            )
            figures["slow"] = await slowlog.collect([prefix])
    finally:
        if server is not None:
            await server.stop()
            problems = log_problems(server.log)
        removed, left = await delete_prefix(admin, f"{prefix}:*")
        await admin.aclose()
        if not problems and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    count, seconds = figures["fill"]
    print()
    print(
        f"{'request':<34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'failed':>6} {'server':>6}"
    )
    for run in runs:
        print(
            f"{run.label:<34} {run.rate:>7.0f} {run.p50:>7.2f} {run.p99:>7.2f} {run.max:>7.2f} "
            f"{run.failures:>6} {run.server_cpu * 100:>5.0f}%"
        )
        if run.failures:
            print(f"  statuses {run.statuses}")
    memory = figures["memory"]
    print()
    print(
        f"Redis memory per finished session (MEMORY USAGE over {options.memory_sample} sampled): "
        + ", ".join(f"{k} {kib(v)}" for k, v in memory["parts"].items())
        + f", owner index share {kib(memory['index'])}"
    )
    for phase, (mean, n) in memory["phases"].items():
        print(f"  {phase:<10} {kib(mean + memory['index'])} (mean of {n})")
    overall = sum(memory["parts"].values()) + memory["index"]
    print(
        f"  all: {kib(overall)}; used_memory grew {mib(figures['used'] * count)} while filling "
        f"({kib(figures['used'])} per session; the shared Redis's other users included)"
    )
    print()
    print("## Against the issue 7 targets")
    get, first, deep_run = runs
    ok = get.p99 < TARGET_GET_MS and not get.failures
    print(f"GET /sessions/{{uuid}} p99 {get.p99:.2f} ms: {verdict(ok)} (target < 5 ms)")
    for run in (first, deep_run):
        ok = run.p99 < TARGET_LIST_MS and not run.failures
        print(f"{run.label} p99 {run.p99:.2f} ms: {verdict(ok)} (target < 20 ms)")
    completed = memory["phases"].get("COMPLETED", (overall, 0))[0] + memory["index"]
    print(
        f"Redis per finished session: {kib(overall)} (COMPLETED {kib(completed)}): "
        f"{verdict(overall <= TARGET_BYTES)} (target ≤ 4 KiB; a COMPLETED session that went "
        f"through the workers: see bench/lifecycle.py)"
    )
    slow = figures["slow"]
    longest = slow[0].micros / 1000 if slow else 0.0
    print(
        f"SLOWLOG (≥ 1 ms, our keys): {len(slow)} entries; longest {longest:.2f} ms: "
        f"{verdict(longest <= 5)}"
    )
    for entry in slow[:3]:
        print(f"  {entry.micros / 1000:.2f} ms {entry.command[:100]}")
    print()
    print(f"cleanup: {removed} Redis keys under {prefix!r} deleted, {left} left")
    if problems:
        print(f"WARNING: {problems} error lines in the server log ({workdir})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="4,000 sessions, short runs")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions stored")
    parser.add_argument("--width", type=int, default=32, help="offer sets made at once")
    parser.add_argument(
        "--connections", type=int, default=1, help="wrk connections (1: no queueing)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--memory-sample", type=int, default=400, help="sessions measured")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        asyncio.run(_serve(options))
        return 0
    if options.quick:
        options.sessions, options.seconds, options.memory_sample = 4000, 3.0, 100
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
