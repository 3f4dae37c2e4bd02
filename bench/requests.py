"""Benchmark: ``POST /requests`` against an aiohttp hello-world POST handler.

docs/ARCHITECTURE.md §11: ``POST /requests`` (JSON) at ≥ 25% of a hello-world aiohttp POST
handler's requests/s on one core, and p99 < 10 ms at half the maximum rate.

Each server under test runs in its own process pinned to one core; the load
generator runs here, pinned to another core, with one aiohttp ClientSession
and a fixed number of connections. Phase 1 is closed-loop (fixed concurrency,
fixed request count after a warm-up) for: hello-world, talicada on the memory
store, talicada on the Redis store, and hello-world again (a bracketing
baseline, to see drift). Phase 2 is open-loop against talicada on Redis at half
the rate phase 1 measured for it: requests are sent on a fixed schedule and
latency is counted from the scheduled send time.

This reports; it does not gate: the exit code is 0 whatever the figures
(non-zero only when the benchmark itself cannot run). Redis keys are written
under a unique prefix and deleted at the end.

    .venv/bin/python bench/requests.py [--requests 5000] [--concurrency 16]
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
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiohttp import web  # noqa: E402

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
BODY = msgspec.json.encode(REQUEST)
#: Calendar capacity of the benchmark's platform: every request holds up to
#: four offers (2 cores, 1 GiB each) until they expire, so it must never fill.
CAPACITY = 1_000_000
TOKEN = "bench-token-" + "x" * 16
PRINCIPAL = "bench"

TARGET_RATIO = 0.25
TARGET_P99_MS = 10.0


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
    runner = web.AppRunner(app)  # as `talicada serve` does
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    if store is not None:
        await store.close()


def serve_main(args: argparse.Namespace) -> None:
    """The child process: pin to one core, serve until SIGTERM."""
    os.sched_setaffinity(0, {args.core})
    asyncio.run(_serve(args))


@dataclass
class Server:
    """A server process under test."""

    kind: str
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/requests"

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_server(
    kind: str, core: int, options: argparse.Namespace, prefix: str, tokens: Path, workdir: Path
) -> Server:
    log = workdir / f"{kind}.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            _SCRIPT,
            "--serve",
            kind,
            "--core",
            str(core),
            "--prefix",
            prefix,
            "--redis-url",
            options.redis_url,
            "--offer-ttl",
            str(options.offer_ttl),
            "--tokens",
            str(tokens),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    except TimeoutError:
        line = b""
    if not line.startswith(b"PORT "):
        process.kill()
        await process.wait()
        raise RuntimeError(f"the {kind} server did not start; see {log}:\n{log.read_text()}")
    return Server(kind, process, int(line.split()[1]), log)


# -- the load generator ------------------------------------------------------


class _Answer(msgspec.Struct):
    result: str = ""


_answer = msgspec.json.Decoder(_Answer)


def check_talicada(status: int, body: bytes) -> str:
    """``ok`` for an offer set with offers, else what went wrong."""
    if status != 200:
        return f"HTTP {status}"
    try:
        result = _answer.decode(body).result
    except msgspec.DecodeError:
        return "undecodable"
    return "ok" if result == "YES" else f"result {result or '?'}"


def check_hello(status: int, body: bytes) -> str:
    return "ok" if status == 200 else f"HTTP {status}"


Check = Callable[[int, bytes], str]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Run:
    """One measured load run."""

    label: str
    requests: int
    seconds: float
    latencies: list[float]
    outcomes: Counter[str]
    server_cpu: float
    client_cpu: float
    redis_cpu: float | None
    other_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "ok")

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(client: aioredis.Redis | None) -> float | None:
    if client is None:
        return None
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def closed_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    count: int,
    width: int,
    check: Check,
) -> tuple[float, list[float], Counter[str]]:
    """``count`` requests from ``width`` concurrent senders: elapsed, latencies, outcomes."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    remaining = count

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            async with session.post(url, data=BODY, headers=headers) as response:
                body = await response.read()
            latencies.append(time.perf_counter() - began)
            outcomes[check(response.status, body)] += 1

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(width)))
    return time.perf_counter() - began, latencies, outcomes


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
    server_cpu: float = 0.0
    redis_pings: list[float] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "ok")


async def open_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    rate: float,
    count: int,
    check: Check,
) -> OpenRun:
    """``count`` requests, one every 1/``rate`` s, each timed from when it was due."""
    run = OpenRun(rate, 0.0, [], [], [], [], Counter(), 0)
    in_flight = 0
    start = time.perf_counter() + 0.05

    async def one(due: float) -> None:
        nonlocal in_flight
        sent = time.perf_counter()
        run.lateness.append(sent - due)
        in_flight += 1
        run.peak = max(run.peak, in_flight)
        try:
            async with session.post(url, data=BODY, headers=headers) as response:
                body = await response.read()
        finally:
            in_flight -= 1
        done = time.perf_counter()
        run.from_due.append(done - due)
        run.from_send.append(done - sent)
        if done - due > TARGET_P99_MS / 1000:
            run.slow.append((due - start, done - due))
        run.outcomes[check(response.status, body)] += 1

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


async def measure_open(
    server: Server,
    options: argparse.Namespace,
    rate: float,
    check: Check,
    headers: dict[str, str],
    redis_client: aioredis.Redis,
) -> OpenRun:
    count = max(200, min(options.open_max, int(rate * options.open_seconds)))
    print(f"running: talicada (Redis store), open loop: {count} requests at {rate:.0f}/s …")
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Open the connections first, as the closed-loop warm-up did.
        width = options.concurrency
        await closed_loop(session, server.url, headers, width * 4, width, check)
        stop = asyncio.Event()
        pings: list[float] = []
        probe = asyncio.create_task(ping_probe(redis_client, stop, pings))
        cpu0 = server.cpu_seconds()
        run = await open_loop(session, server.url, headers, rate, count, check)
        run.server_cpu = (server.cpu_seconds() - cpu0) / run.seconds
        stop.set()
        await probe
        run.redis_pings = pings
    return run


async def measure(
    label: str,
    count: int,
    server: Server,
    options: argparse.Namespace,
    check: Check,
    headers: dict[str, str],
    redis_client: aioredis.Redis | None,
) -> Run:
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await closed_loop(session, server.url, headers, options.warmup, options.concurrency, check)
        cpu0, client0, redis0 = (
            server.cpu_seconds(),
            time.process_time(),
            await redis_cpu_seconds(redis_client),
        )
        busy0 = machine_busy_seconds()
        seconds, latencies, outcomes = await closed_loop(
            session, server.url, headers, count, options.concurrency, check
        )
        busy1 = machine_busy_seconds()
        cpu1, client1, redis1 = (
            server.cpu_seconds(),
            time.process_time(),
            await redis_cpu_seconds(redis_client),
        )
    redis_cpu = None if redis0 is None or redis1 is None else (redis1 - redis0) / seconds
    ours = (cpu1 - cpu0) / seconds + (client1 - client0) / seconds + (redis_cpu or 0.0)
    return Run(
        label=label,
        requests=count,
        seconds=seconds,
        latencies=latencies,
        outcomes=outcomes,
        server_cpu=(cpu1 - cpu0) / seconds,
        client_cpu=(client1 - client0) / seconds,
        redis_cpu=redis_cpu,
        other_cpu=max(0.0, (busy1 - busy0) / seconds - ours),
    )


# -- the report --------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def print_table(runs: list[Run]) -> None:
    print(
        f"{'server':<26} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'failed':>6} {'server':>6} {'client':>6} {'redis':>6} {'others':>6}"
    )
    for run in runs:
        print(
            f"{run.label:<26} {run.requests:>8} {run.rate:>7.0f} {run.ms(50):>7.2f} "
            f"{run.ms(99):>7.2f} {run.ms(100):>7.2f} {run.failures:>6} "
            f"{_pct(run.server_cpu):>6} {_pct(run.client_cpu):>6} {_pct(run.redis_cpu):>6} "
            f"{_pct(run.other_cpu):>6}"
        )
        bad = {outcome: n for outcome, n in run.outcomes.items() if outcome != "ok"}
        if bad:
            print(f"  {run.label}: failures {bad}")
    print(
        "  CPU columns: CPU time / wall time of the server process (100% = its core is "
        "saturated), the load generator, redis-server, and every other process on the machine"
    )


def print_open(run: OpenRun) -> None:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.2f}"

    sent = len(run.from_due)
    print(
        f"rate {run.rate:.0f}/s (half of {run.rate * 2:.0f}), {sent} requests in "
        f"{run.seconds:.1f} s (achieved {sent / run.seconds:.0f}/s), failed {run.failures}, "
        f"most in flight {run.peak}, server CPU {_pct(run.server_cpu)}"
    )
    print(
        f"latency from scheduled send: p50 {ms(run.from_due, 50)} ms, "
        f"p99 {ms(run.from_due, 99)} ms, max {ms(run.from_due, 100)} ms"
    )
    print(
        f"latency from actual send:    p50 {ms(run.from_send, 50)} ms, "
        f"p99 {ms(run.from_send, 99)} ms, max {ms(run.from_send, 100)} ms"
    )
    print(
        f"send lateness (load generator): p50 {ms(run.lateness, 50)} ms, "
        f"p99 {ms(run.lateness, 99)} ms"
    )
    print(
        f"Redis PING every 10 ms meanwhile ({len(run.redis_pings)}): p50 "
        f"{ms(run.redis_pings, 50)} ms, p99 {ms(run.redis_pings, 99)} ms, "
        f"max {ms(run.redis_pings, 100)} ms"
    )
    if run.slow:
        worst = sorted(run.slow, key=lambda item: -item[1])[:3]
        where = ", ".join(f"{latency * 1000:.0f} ms at {at:.2f} s" for at, latency in worst)
        print(f"answers over {TARGET_P99_MS:.0f} ms: {len(run.slow)}; worst: {where}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def server_log_problems(server: Server) -> int:
    """Error lines and tracebacks in a server's log."""
    if not server.log.exists():
        return 0
    text = server.log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if '"level": "error"' in line or "Traceback" in line)


async def cleanup(client: aioredis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(await client.unlink(*batch))
            batch = []
    if batch:
        removed += int(await client.unlink(*batch))
    return removed


async def bench(options: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0]
    client_core = cores[1] if len(cores) > 1 else cores[0]
    os.sched_setaffinity(0, {client_core})

    redis_client = aioredis.Redis.from_url(options.redis_url)
    try:
        await redis_client.ping()
    except redis.RedisError as error:
        print(f"bench: Redis at {options.redis_url} does not answer: {error}", file=sys.stderr)
        return 2
    redis_info = await redis_client.info("server")
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    plain = {"Content-Type": "application/json"}

    print("# POST /requests vs aiohttp hello-world (docs/ARCHITECTURE.md §11)")
    print(
        f"python {platform.python_version()} ({sys.implementation.name}), aiohttp "
        f"{aiohttp.__version__}, msgspec {msgspec.__version__}, redis-py {redis.__version__}, "
        f"Redis server {redis_info.get('redis_version', '?')}, asyncio default loop"
    )
    print(
        f"cpus available: {cores} ({platform.machine()}); server process pinned to core "
        f"{server_core}, load generator pinned to core {client_core}; Redis not pinned"
    )
    if len(cores) < 2:
        print("WARNING: one core only: server and load generator share it")
    print(
        f"load: {options.concurrency} connections (one ClientSession, TCPConnector "
        f"limit={options.concurrency}), keep-alive; per server {options.warmup} warm-up "
        f"requests, then {options.hello_requests} measured (hello-world) or "
        f"{options.requests} (talicada)"
    )
    print(
        f"talicada: platform 'local' with cores={CAPACITY:,} memory={CAPACITY:,} GiB (never "
        f"fills: each request holds up to 4 offers of 2 cores, 1 GiB), max_offers=4, "
        f"offer_ttl={options.offer_ttl:g} s, expiry timers on, bearer-token auth on, JSON logs "
        f"to a file; Redis key prefix {prefix!r} (deleted at the end)"
    )
    if options.offer_ttl > 120:
        print(
            "  no offer expires during the run, so the expiry work each offer causes later "
            "(one Lua finish per offer) is not in these figures"
        )
    print(f"request body ({len(BODY)} bytes): {BODY.decode()}")
    print()

    workdir = Path(tempfile.mkdtemp(prefix="talicada-bench-"))
    tokens = workdir / "tokens"
    tokens.write_text(f"{TOKEN} {PRINCIPAL}\n", encoding="utf-8")
    runs: list[Run] = []
    half: OpenRun | None = None
    problems: dict[str, int] = {}
    plan: list[tuple[str, str, Check, dict[str, str]]] = [
        ("hello", "hello-world", check_hello, plain),
        ("memory", "talicada (memory store)", check_talicada, auth),
        ("redis", "talicada (Redis store)", check_talicada, auth),
        ("hello", "hello-world (again)", check_hello, plain),
    ]
    try:
        for kind, label, check, headers in plan:
            print(f"running: {label} …", flush=True)
            server = await start_server(kind, server_core, options, prefix, tokens, workdir)
            try:
                client = redis_client if kind == "redis" else None
                count = options.hello_requests if kind == "hello" else options.requests
                run = await measure(label, count, server, options, check, headers, client)
                runs.append(run)
                if kind == "redis":
                    half = await measure_open(
                        server, options, run.rate / 2, check, headers, redis_client
                    )
            finally:
                await server.stop()
                problems[label] = server_log_problems(server)
    finally:
        removed = await cleanup(redis_client, prefix)
        left = [key async for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
        await redis_client.aclose()
        if not any(problems.values()):
            shutil.rmtree(workdir)
    print()

    print("## Phase 1: maximum throughput (closed loop)")
    print_table(runs)
    hellos = [run for run in runs if run.label.startswith("hello")]
    hello = max(hellos, key=lambda run: run.rate)
    spread = abs(hellos[0].rate - hellos[-1].rate) / hello.rate
    print(
        f"hello-world baseline: {hello.rate:.0f} req/s (the higher of its two runs, which "
        f"differ by {spread * 100:.1f}%)"
    )
    capacity = hello.rate / hello.server_cpu if hello.server_cpu > 0 else math.nan
    if hello.server_cpu < 0.9:
        print(
            f"  NOTE: hello-world's server used {_pct(hello.server_cpu)} of its core: the load "
            "generator limits the baseline, which understates hello-world's one-core maximum "
            f"(estimated from its CPU per request: {capacity:.0f} req/s) and so flatters the "
            "ratios below"
        )
    noisy = [run.label for run in runs if run.other_cpu > 0.25]
    if noisy:
        print(
            f"  NOTE: other processes used more than a quarter of a core during: "
            f"{', '.join(noisy)}; those figures are disturbed"
        )
    print()

    print("## Phase 2: latency at half the maximum rate (open loop, talicada on Redis)")
    p99 = math.nan
    if half is not None:
        print_open(half)
        p99 = percentile(half.from_due, 99) * 1000
    print()

    print("## Against the docs/ARCHITECTURE.md §11 targets")
    for run in runs:
        if run.label.startswith("talicada"):
            ratio = run.rate / hello.rate
            print(
                f"throughput talicada/hello, {run.label[9:].strip('()')}: {ratio:.3f} "
                f"({run.rate:.0f} / {hello.rate:.0f} req/s), target ≥ {TARGET_RATIO:.2f}: "
                f"{verdict(ratio >= TARGET_RATIO and run.failures == 0)}"
            )
            if hello.server_cpu < 0.9:
                print(
                    f"  against hello-world's estimated one-core capacity ({capacity:.0f} "
                    f"req/s): {run.rate / capacity:.3f}"
                )
    ok = p99 < TARGET_P99_MS and half is not None and half.failures == 0
    print(
        f"p99 at half rate, Redis store (from scheduled send): {p99:.2f} ms, "
        f"target < {TARGET_P99_MS:.0f} ms: {verdict(ok)}"
    )
    print()
    print(f"cleanup: {removed} Redis keys under {prefix!r} deleted, {len(left)} left")
    for label, count in problems.items():
        if count:
            print(f"WARNING: {count} error lines in the {label} server log ({workdir})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--requests", type=int, default=5000, help="measured requests per talicada server"
    )
    parser.add_argument(
        "--hello-requests", type=int, default=20000, help="measured requests per hello-world run"
    )
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per server")
    parser.add_argument("--concurrency", type=int, default=16, help="connections")
    parser.add_argument(
        "--offer-ttl", type=float, default=300.0, help="seconds an offer holds its capacity"
    )
    parser.add_argument(
        "--open-seconds", type=float, default=10.0, help="length of the half-rate phase"
    )
    parser.add_argument(
        "--open-max", type=int, default=4000, help="most requests in the half-rate phase"
    )
    # The server process (internal).
    parser.add_argument("--serve", choices=["hello", "memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve_main(options)
        return 0
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
