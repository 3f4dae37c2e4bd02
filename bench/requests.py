"""Benchmark: ``POST /requests`` against an aiohttp hello-world POST handler, driven by wrk.

Issue 7 / docs/ARCHITECTURE.md §11: ``POST /requests`` (JSON, Redis store) at ≥ 25% of a
hello-world aiohttp POST handler's requests/s on one core; p99 < 10 ms at half
the maximum rate (Redis store); memory store p99 < 20 ms (at half rate too).

Each server runs in its own process pinned with ``taskset`` to one core; the
load generator is Debian's ``wrk`` (C, one thread) pinned to the other core, with
a Lua script that sends the body and checks every answer. Phase 1 is closed
loop at a fixed connection count (maximum throughput) for hello-world, talicada
on the memory store and on the Redis store (JSON and YAML bodies), and
hello-world again (the baseline is the higher of its two runs). Phase 2 paces
wrk to half of each talicada store's phase-1 JSON rate: every connection waits
``connections / (rate / 2)`` seconds between an answer and its next request
(wrk's Lua ``delay()``; wrk2 is not in Debian), and wrk's ``--latency``
percentiles are read. For the Redis store the phase also runs an open-loop
Python sender (requests sent on a fixed schedule, latency counted from the
scheduled send, so a stall is not hidden by the pacing) with a Redis PING probe.
Phase 3 samples the Redis-store server with py-spy under full load (a separate
run, so the profiler does not disturb the figures) and prints the top frames.

This reports; it does not gate: the exit code is 0 whatever the figures
(non-zero only when the benchmark itself cannot run). Redis keys are written
under a unique prefix and deleted at the end.

    .venv/bin/python bench/requests.py            # ~2 min
    .venv/bin/python bench/requests.py --quick    # ~30 s
"""

from __future__ import annotations

import os
import sys

# This file shares its name with a well-known module; keep its directory off
# the import path, and make the working tree's talicada importable.
_SCRIPT = os.path.abspath(__file__)
_HERE = os.path.dirname(_SCRIPT)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from bench._support import (  # noqa: E402
    WRK_LUA,
    Child,
    WrkRun,
    cores,
    delete_prefix,
    ensure_module,
    ensure_wrk,
    log_problems,
    machine_busy_seconds,
    machine_line,
    pct,
    percentile,
    profile_summary,
    py_spy,
    read_port,
    redis_cpu_seconds,
    spawn,
    verdict,
    write_wrk_spec,
)

#: The request every talicada run sends: a ping on the local platform.
REQUEST: dict[str, Any] = {
    "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
    "compute": {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
        "simple-compute-resource-1.0",
        "cores": {"min": 1, "max": 2},
    },
    "schedule": {"requested": {"duration": "PT10M"}},
}
BODY_JSON = msgspec.json.encode(REQUEST)
BODY_YAML = yaml.safe_dump(REQUEST, sort_keys=False).encode()
#: Calendar capacity of the benchmark's platform: every request holds up to
#: four offers (2 cores, 1 GiB each) until they expire, so it must never fill.
CAPACITY = 1_000_000
TOKEN = "bench-token-" + "x" * 16
PRINCIPAL = "bench"

TARGET_RATIO = 0.25
TARGET_P99_REDIS_MS = 10.0
TARGET_P99_MEMORY_MS = 20.0

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Authorization": f"Bearer {TOKEN}",
}
YAML_HEADERS = {
    "Content-Type": "application/yaml",
    "Accept": "application/yaml",
    "Authorization": f"Bearer {TOKEN}",
}
#: What a good talicada answer contains (an offer set with offers).
EXPECT_JSON = '"result":"YES"'
EXPECT_YAML = "result: 'YES'"


# -- the server processes ----------------------------------------------------


async def _hello(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"ok": True, "received": len(body)})


def _hello_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/requests", _hello)
    return app


async def _talicada_app(args: argparse.Namespace) -> tuple[web.Application, Any]:
    from talicada import logs
    from talicada.broker.app import create_app
    from talicada.settings import LOCAL, load

    settings = load(
        environ={},
        auth_tokens_file=args.tokens,
        offer_ttl=args.offer_ttl,
        log_format="json",
        max_offers=args.max_offers,
        platforms=[msgspec.structs.replace(LOCAL, cores=CAPACITY, memory=CAPACITY)],
    )
    logs.configure(settings.log_format)  # stderr is the log file the parent gave us
    store: Any
    if args.serve == "redis":
        from talicada.broker.store.redis import RedisStore

        store = await RedisStore.connect(args.redis_url, prefix=args.prefix)
    else:
        from talicada.broker.store.memory import MemoryStore

        store = MemoryStore()
    return create_app(settings, store=store, timers=True), store


async def _serve(args: argparse.Namespace) -> None:
    store: Any = None
    if args.serve == "hello":
        app = _hello_app()
    else:
        app, store = await _talicada_app(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    runner = web.AppRunner(app, access_log=None)  # as `talicada serve` does
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    if args.serve != "hello":
        from talicada import heap

        heap.settle()  # as `talicada serve` does once it listens
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    if store is not None:
        await store.close()


def serve_main(args: argparse.Namespace) -> None:
    """The child process (already pinned by taskset): serve until SIGTERM."""
    if args.uvloop:
        import importlib

        importlib.import_module("uvloop").run(_serve(args))
    else:
        asyncio.run(_serve(args))


async def start_server(
    kind: str,
    core: int,
    options: argparse.Namespace,
    prefix: str,
    tokens: Path,
    workdir: Path,
    *,
    max_offers: int = 4,
    name: str | None = None,
) -> tuple[Child, str]:
    """A server process pinned to ``core``; returns it and its base URL."""
    argv = [
        sys.executable,
        _SCRIPT,
        "--serve",
        kind,
        "--prefix",
        prefix,
        "--redis-url",
        options.redis_url,
        "--offer-ttl",
        str(options.offer_ttl),
        "--tokens",
        str(tokens),
        "--max-offers",
        str(max_offers),
        *(["--uvloop"] if options.uvloop else []),
    ]
    child = await spawn(name or kind, argv, workdir, core=core, stdout_pipe=True)
    port = await read_port(child)
    return child, f"http://127.0.0.1:{port}"


# -- load ----------------------------------------------------------------------


async def measured_wrk(
    label: str,
    url: str,
    spec: Path,
    script: Path,
    server: Child,
    *,
    seconds: float,
    connections: int,
    core: int,
    redis_client: aioredis.Redis | None,
    pause_ms: int = 0,
) -> WrkRun:
    """A wrk run with the CPU of the server, wrk, redis-server and everyone else."""
    cpu0 = server.cpu()
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    redis0 = await redis_cpu_seconds(redis_client) if redis_client is not None else None
    busy0 = machine_busy_seconds()
    began = time.perf_counter()
    run = await run_wrk_checked(
        label, url, spec, script, seconds, connections, core, pause_ms=pause_ms
    )
    wall = time.perf_counter() - began
    busy = machine_busy_seconds() - busy0
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu() - cpu0
    client_cpu = (wrk1.ru_utime - wrk0.ru_utime) + (wrk1.ru_stime - wrk0.ru_stime)
    redis_cpu = None
    if redis_client is not None and redis0 is not None:
        redis_cpu = await redis_cpu_seconds(redis_client) - redis0
    run.server_cpu = server_cpu / run.seconds
    run.client_cpu = client_cpu / run.seconds
    run.redis_cpu = None if redis_cpu is None else redis_cpu / run.seconds
    ours = server_cpu + client_cpu + (redis_cpu or 0.0)
    run.other_cpu = max(0.0, busy - ours) / wall
    return run


async def run_wrk_checked(
    label: str,
    url: str,
    spec: Path,
    script: Path,
    seconds: float,
    connections: int,
    core: int,
    *,
    pause_ms: int = 0,
) -> WrkRun:
    from bench._support import run_wrk

    return await run_wrk(
        label,
        url,
        spec,
        script,
        seconds=seconds,
        connections=connections,
        core=core,
        pause_ms=pause_ms,
    )


# -- the Python open loop (Redis store, half rate) -------------------------------


@dataclass
class OpenRun:
    """One open-loop run: requests sent on a fixed schedule whatever the answers."""

    rate: float
    seconds: float
    from_due: list[float]  # scheduled send → answer read
    from_send: list[float]  # actual send → answer read
    lateness: list[float]  # scheduled send → actual send
    slow: list[tuple[float, float]]  # (when, latency) of answers over the target
    outcomes: Counter[str]
    peak: int
    redis_pings: list[float] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "ok")


def _check(status: int, body: bytes) -> str:
    if status != 200:
        return f"HTTP {status}"
    return "ok" if EXPECT_JSON.encode() in body else "not YES"


async def open_loop(url: str, rate: float, count: int, width: int) -> OpenRun:
    """``count`` requests, one every 1/``rate`` s, each timed from when it was due."""
    run = OpenRun(rate, 0.0, [], [], [], [], Counter(), 0)
    in_flight = 0
    connector = aiohttp.TCPConnector(limit=width)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Open the connections first.
        async def warm() -> None:
            for _ in range(4):
                async with session.post(url, data=BODY_JSON, headers=JSON_HEADERS) as response:
                    await response.read()

        await asyncio.gather(*(warm() for _ in range(width)))
        start = time.perf_counter() + 0.05

        async def one(due: float) -> None:
            nonlocal in_flight
            sent = time.perf_counter()
            run.lateness.append(sent - due)
            in_flight += 1
            run.peak = max(run.peak, in_flight)
            try:
                async with session.post(url, data=BODY_JSON, headers=JSON_HEADERS) as response:
                    body = await response.read()
            finally:
                in_flight -= 1
            done = time.perf_counter()
            run.from_due.append(done - due)
            run.from_send.append(done - sent)
            if done - due > TARGET_P99_REDIS_MS / 1000:
                run.slow.append((due - start, done - due))
            run.outcomes[_check(response.status, body)] += 1

        interval = 1 / rate
        tasks: list[asyncio.Task[None]] = []
        for index in range(count):
            due = start + index * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - start
    return run


async def ping_probe(client: aioredis.Redis, stop: asyncio.Event, into: list[float]) -> None:
    """PING Redis every 10 ms until ``stop``: shows stalls of the shared Redis itself."""
    while not stop.is_set():
        began = time.perf_counter()
        await client.ping()
        into.append(time.perf_counter() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.01)


# -- the report --------------------------------------------------------------


def print_table(runs: list[WrkRun]) -> None:
    print(
        f"{'server':<34} {'conns':>5} {'pause':>5} {'requests':>8} {'req/s':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'failed':>6} {'server':>6} {'wrk':>5} {'redis':>6} "
        f"{'others':>6}"
    )
    for run in runs:
        print(
            f"{run.label:<34} {run.connections:>5} {run.pause_ms:>5} {run.requests:>8} "
            f"{run.rate:>7.0f} {run.p50:>7.2f} {run.p99:>7.2f} {run.max:>7.2f} "
            f"{run.failures:>6} {pct(run.server_cpu):>6} {pct(run.client_cpu):>5} "
            f"{pct(run.redis_cpu):>6} {pct(run.other_cpu):>6}"
        )
        if run.failures:
            print(
                f"  {run.label}: {run.bad} bad answers (statuses {run.statuses or '-'}), "
                f"{run.errors} socket/status errors, {run.timeouts} timeouts"
            )
    print(
        "  pause: ms each connection waits between an answer and its next request (wrk's "
        "delay()); CPU columns: CPU time / wall time of the server process (100% = its core "
        "is saturated), wrk, redis-server, and every other process on the machine"
    )


def print_open(run: OpenRun) -> None:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.2f}"

    sent = len(run.from_due)
    print(
        f"Python open loop at {run.rate:.0f}/s: {sent} requests in {run.seconds:.1f} s "
        f"(achieved {sent / run.seconds:.0f}/s), failed {run.failures}, most in flight {run.peak}"
    )
    print(
        f"  latency from scheduled send: p50 {ms(run.from_due, 50)} ms, "
        f"p99 {ms(run.from_due, 99)} ms, max {ms(run.from_due, 100)} ms"
    )
    print(
        f"  latency from actual send:    p50 {ms(run.from_send, 50)} ms, "
        f"p99 {ms(run.from_send, 99)} ms; send lateness p99 {ms(run.lateness, 99)} ms"
    )
    print(
        f"  Redis PING every 10 ms meanwhile ({len(run.redis_pings)}): p50 "
        f"{ms(run.redis_pings, 50)} ms, p99 {ms(run.redis_pings, 99)} ms, "
        f"max {ms(run.redis_pings, 100)} ms"
    )
    if run.slow:
        worst = sorted(run.slow, key=lambda item: -item[1])[:3]
        where = ", ".join(f"{latency * 1000:.0f} ms at {at:.2f} s" for at, latency in worst)
        print(f"  answers over {TARGET_P99_REDIS_MS:.0f} ms: {len(run.slow)}; worst: {where}")


async def bench(options: argparse.Namespace) -> int:
    if ensure_wrk() is None:
        print("bench: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if options.uvloop and not ensure_module("uvloop", "uvloop"):
        print("bench: uvloop could not be installed", file=sys.stderr)
        return 2
    server_core, client_core = cores()
    os.sched_setaffinity(0, {client_core})

    redis_client = aioredis.Redis.from_url(options.redis_url)
    try:
        await redis_client.ping()
    except redis.RedisError as error:
        print(f"bench: Redis at {options.redis_url} does not answer: {error}", file=sys.stderr)
        return 2
    redis_info = await redis_client.info("server")
    prefix = f"bench-req-{uuid.uuid4().hex[:12]}"
    wrk_version = "?"
    with contextlib.suppress(Exception):
        process = await asyncio.create_subprocess_exec(
            "wrk", "-v", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await process.communicate()
        wrk_version = out.decode().split("\n", 1)[0].split(" [")[0]

    print("# POST /requests vs aiohttp hello-world (issue 7; docs/ARCHITECTURE.md §11)")
    print(machine_line())
    print(
        f"aiohttp {aiohttp.__version__}, msgspec {msgspec.__version__}, redis-py "
        f"{redis.__version__}, Redis server {redis_info.get('redis_version', '?')}, "
        f"{wrk_version}, event loop: {'uvloop' if options.uvloop else 'asyncio default'}"
    )
    print(
        f"each server: its own process pinned with taskset to core {server_core}; wrk (1 "
        f"thread) pinned to core {client_core}; Redis not pinned"
    )
    print(
        f"load: wrk -t1 -c{options.connections} --latency, {options.seconds:g} s measured "
        f"after {options.warmup:g} s of warm-up per run; keep-alive; every answer checked in "
        f"Lua (200 and, for talicada, result YES)"
    )
    print(
        f"talicada: platform 'local' with cores={CAPACITY:,} memory={CAPACITY:,} GiB (never "
        f"fills), max_offers=4, offer_ttl={options.offer_ttl:g} s (no offer expires during "
        f"the run), expiry timers on, bearer-token auth on, JSON logs to a file; Redis key "
        f"prefix {prefix!r} (deleted at the end)"
    )
    print(f"JSON body ({len(BODY_JSON)} bytes): {BODY_JSON.decode()}")
    print(f"YAML body: {len(BODY_YAML)} bytes, the same request")
    print()

    workdir = Path(tempfile.mkdtemp(prefix="talicada-bench-req-"))
    tokens = workdir / "tokens"
    tokens.write_text(f"{TOKEN} {PRINCIPAL}\n", encoding="utf-8")
    script = workdir / "bench.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    hello_spec = write_wrk_spec(
        workdir / "hello.spec.lua", body=BODY_JSON, headers={"Content-Type": "application/json"}
    )
    json_spec = write_wrk_spec(
        workdir / "json.spec.lua", body=BODY_JSON, headers=JSON_HEADERS, expect=EXPECT_JSON
    )
    yaml_spec = write_wrk_spec(
        workdir / "yaml.spec.lua", body=BODY_YAML, headers=YAML_HEADERS, expect=EXPECT_YAML
    )

    runs: list[WrkRun] = []
    paced: dict[str, WrkRun] = {}
    python_open: OpenRun | None = None
    profile: list[str] = []
    problems: dict[str, int] = {}
    plan = [
        ("hello", "hello-world"),
        ("memory", "talicada (memory store)"),
        ("redis", "talicada (Redis store)"),
        ("hello", "hello-world (again)"),
    ]
    seconds, conns = options.seconds, options.connections
    try:
        for kind, label in plan:
            print(f"running: {label} …", flush=True)
            server, base = await start_server(
                kind, server_core, options, prefix, tokens, workdir, name=f"{kind}-{len(runs)}"
            )
            url = f"{base}/requests"
            client = redis_client if kind == "redis" else None
            try:
                specs = [("", hello_spec)] if kind == "hello" else [(" JSON", json_spec)]
                if kind != "hello":
                    specs.append((" YAML", yaml_spec))
                for suffix, spec in specs:
                    await run_wrk_checked(
                        "warm-up", url, spec, script, options.warmup, conns, client_core
                    )
                    run = await measured_wrk(
                        label + suffix,
                        url,
                        spec,
                        script,
                        server,
                        seconds=seconds,
                        connections=conns,
                        core=client_core,
                        redis_client=client,
                    )
                    runs.append(run)
                if kind == "hello":
                    continue
                maximum = next(r for r in runs if r.label == label + " JSON").rate
                # Half the maximum rate: each connection waits conns/(rate/2) s between
                # an answer and its next request.
                pause = max(1, round(conns * 1000 / (maximum / 2)))
                print(f"running: {label}, paced to about {maximum / 2:.0f}/s …", flush=True)
                paced_spec = write_wrk_spec(
                    workdir / f"paced-{kind}.spec.lua",
                    body=BODY_JSON,
                    headers=JSON_HEADERS,
                    expect=EXPECT_JSON,
                    pause_ms=pause,
                )
                paced[kind] = await measured_wrk(
                    f"{label} JSON, half rate",
                    url,
                    paced_spec,
                    script,
                    server,
                    seconds=options.paced_seconds,
                    connections=conns,
                    core=client_core,
                    redis_client=client,
                    pause_ms=pause,
                )
                paced[kind].extra["target"] = maximum / 2
                if kind == "redis" and options.open_seconds > 0:
                    print(f"running: {label}, Python open loop …", flush=True)
                    count = max(200, int(maximum / 2 * options.open_seconds))
                    stop = asyncio.Event()
                    pings: list[float] = []
                    probe = asyncio.create_task(ping_probe(redis_client, stop, pings))
                    try:
                        python_open = await open_loop(url, maximum / 2, count, conns)
                    finally:
                        stop.set()
                        await probe
                    python_open.redis_pings = pings
                if kind == "redis" and options.profile_seconds > 0:
                    print(f"running: {label}, py-spy under full load …", flush=True)
                    samples = workdir / "redis-server.pyspy.txt"
                    sampler = asyncio.create_task(
                        py_spy(server.pid, options.profile_seconds, samples)
                    )
                    await asyncio.sleep(0.5)
                    await run_wrk_checked(
                        "profiled",
                        url,
                        json_spec,
                        script,
                        options.profile_seconds,
                        conns,
                        client_core,
                    )
                    found = await sampler
                    profile = profile_summary(found) if found else ["(py-spy did not run)"]
            finally:
                await server.stop()
                problems[label] = log_problems(server.log)
    finally:
        removed, left = await delete_prefix(redis_client, f"{prefix}:*")
        await redis_client.aclose()
        if not any(problems.values()) and not options.keep:
            shutil.rmtree(workdir)
    print()

    print("## Phase 1: maximum throughput (closed loop, wrk)")
    print_table(runs)
    hellos = [run for run in runs if run.label.startswith("hello")]
    hello = max(hellos, key=lambda run: run.rate)
    spread = abs(hellos[0].rate - hellos[-1].rate) / hello.rate
    print(
        f"hello-world baseline: {hello.rate:.0f} req/s (the higher of its two runs, which "
        f"differ by {spread * 100:.1f}%); its server used {pct(hello.server_cpu)} of its core"
    )
    if hello.server_cpu < 0.9:
        print(
            "  NOTE: hello-world's server did not saturate its core: the baseline is understated "
            "and the ratios flattered"
        )
    noisy = [run.label for run in runs if run.other_cpu > 0.25]
    if noisy:
        print(f"  NOTE: other processes used > 25% of a core during: {', '.join(noisy)}")
    print()

    print("## Phase 2: latency at half the maximum rate (wrk paced with delay())")
    print_table(list(paced.values()))
    print(
        "  wrk is closed-loop: each connection sends its next request only after the answer "
        "and the pause, so a stall delays the following sends instead of queueing them "
        "(coordinated omission); the Python open loop below counts from the scheduled send"
    )
    if python_open is not None:
        print_open(python_open)
    print()

    if profile:
        print("## Phase 3: where the Redis-store server's time goes (py-spy, full load)")
        for line in profile:
            print(line)
        print()

    print("## Against the issue 7 targets")
    for run in runs:
        if run.label.startswith("talicada"):
            ratio = run.rate / hello.rate
            target = " (target ≥ 0.25)" if "Redis" in run.label and "JSON" in run.label else ""
            print(
                f"throughput {run.label} / hello-world: {ratio:.3f} ({run.rate:.0f} / "
                f"{hello.rate:.0f} req/s){target}"
                + (f": {verdict(ratio >= TARGET_RATIO and run.failures == 0)}" if target else "")
            )
    for kind, limit in (("redis", TARGET_P99_REDIS_MS), ("memory", TARGET_P99_MEMORY_MS)):
        half_run = paced.get(kind)
        if half_run is None:
            continue
        ok = half_run.p99 < limit and half_run.failures == 0
        print(
            f"p99 at half rate, {kind} store (wrk paced, {half_run.rate:.0f}/s of a "
            f"{half_run.extra['target']:.0f}/s target): {half_run.p99:.2f} ms, "
            f"target < {limit:.0f} ms: {verdict(ok)}"
        )
    if python_open is not None:
        p99 = percentile(python_open.from_due, 99) * 1000
        ok = p99 < TARGET_P99_REDIS_MS and python_open.failures == 0
        print(
            f"p99 at half rate, Redis store (Python open loop, from scheduled send): {p99:.2f} ms, "
            f"target < {TARGET_P99_REDIS_MS:.0f} ms: {verdict(ok)}"
        )
    print()
    print(f"cleanup: {removed} Redis keys under {prefix!r} deleted, {left} left")
    for label, count in problems.items():
        if count:
            print(f"WARNING: {count} error lines in the {label} server log ({workdir})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="short runs (about 30 s in all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--paced-seconds", type=float, default=10.0, help="length of each half-rate run"
    )
    parser.add_argument(
        "--open-seconds",
        type=float,
        default=10.0,
        help="length of the Python open-loop run (0: skip)",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=8.0, help="py-spy sampling (0: skip)"
    )
    parser.add_argument(
        "--offer-ttl", type=float, default=300.0, help="seconds an offer holds its capacity"
    )
    parser.add_argument("--uvloop", action="store_true", help="serve with uvloop")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    # The server process (internal).
    parser.add_argument("--serve", choices=["hello", "memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    parser.add_argument("--max-offers", type=int, default=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve_main(options)
        return 0
    if options.quick:
        options.seconds, options.warmup, options.paced_seconds = 3.0, 1.0, 3.0
        options.open_seconds, options.profile_seconds = 3.0, 3.0
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
