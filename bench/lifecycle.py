"""Benchmark: ping sessions from accept to COMPLETED through Redis streams and worker processes.

Issue 7 / docs/ARCHITECTURE.md §11: a lifecycle step (a worker taking an event, acting,
calling back, the broker applying the report and publishing what follows) no
costlier than an arq job that does nothing, on the same Redis in the same run.

The deployment is the production shape: ``talicada serve`` (Redis store) and
four ``talicada worker ROLE --backend B`` processes (prepare-data/local,
image-cache/none, launch/local, release/local: the back ends of the ``local``
platform), sharing one Redis under a fresh key prefix. The platform's
preparation times are zero, so a session is prepared as soon as it is
accepted and the run measures work, not configured waits. N requests (one offer
each) are made first, untimed; then all N offers are accepted (16 at a time)
and the clock runs until every session is COMPLETED (or FAILED). A *step* is
one event a worker handled: the entries of the four worker streams. The
lifecycle stream's entries (phase and component transitions) are counted too.
CPU is read from /proc for every process (with the task subprocesses the
launcher starts: each ping is a real ``python -m talicada.workers.tasks``).

The baseline is arq (installed for the bench only, into its own directory,
because arq pins redis-py < 6): N no-op jobs enqueued, then one arq worker in
burst mode runs them all; jobs/s and CPU per job (worker + Redis).

It also reports the Redis memory of a finished session: ``MEMORY USAGE`` of
every key of a sample of the completed sessions (its hash, history, applied
set and offer set).

This reports; it does not gate: exit code 0 whatever the figures. Every Redis
key it writes is under a unique prefix and deleted at the end.

    .venv/bin/python bench/lifecycle.py            # 200 sessions, ~1 min
    .venv/bin/python bench/lifecycle.py --quick    # 30 sessions, ~20 s
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bench._support import (  # noqa: E402
    ROOT,
    Child,
    SlowLog,
    delete_prefix,
    ensure_target,
    kib,
    log_problems,
    machine_busy_seconds,
    machine_line,
    percentile,
    process_cpu_seconds,
    redis_cpu_seconds,
    spawn,
    verdict,
    wait_http,
)
from talicada.constants import Keys  # noqa: E402

TOKEN = secrets.token_hex(16)
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
REQUEST: dict[str, Any] = {
    "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
    "compute": {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
        "simple-compute-resource-1.0",
        "cores": {"min": 1, "max": 1},
    },
    "schedule": {"requested": {"duration": "PT10M"}},
}
#: (role, back end) of the local platform's workers.
WORKERS = (
    ("prepare-data", "local"),
    ("image-cache", "none"),
    ("launch", "local"),
    ("release", "local"),
)
CONFIG = """
max_offers = 1

[[platforms]]
name = "local"
cores = 100000
memory = 100000

[platforms.preparation]
image = {}
data = {}
storage = 0.0
launch = 0.0
release = 0.0
"""
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "REJECTED"}
ARQ_DIR = Path(
    os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "talicada-bench", "arq"
)
#: The arq baseline, run in a child process with arq's own redis-py first on the path.
ARQ_SCRIPT = r"""
import asyncio, json, resource, sys, time
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

async def noop(ctx):
    return None

async def main():
    url, prefix, count, poll = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    queue = f"{prefix}:arq:queue"
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    began = time.perf_counter()
    for index in range(count):
        await pool.enqueue_job("noop", _job_id=f"{prefix}-{index}", _queue_name=queue)
    enqueue = time.perf_counter() - began
    print("READY", flush=True)
    sys.stdin.readline()
    worker = Worker(functions=[noop], redis_pool=pool, queue_name=queue, burst=True,
                    keep_result=0, handle_signals=False, log_results=False, poll_delay=poll,
                    health_check_key=f"{prefix}:arq:health-check")
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    await worker.async_run()
    seconds = time.perf_counter() - began
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    print("ARQ " + json.dumps({"jobs": worker.jobs_complete, "failed": worker.jobs_failed,
          "seconds": seconds, "cpu": cpu, "enqueue": enqueue}), flush=True)
    await worker.close()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def make_offers(url: str, count: int, width: int) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    offers: list[str] = []
    remaining = count
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with http.post(f"{url}/requests", json=REQUEST) as response:
                    body = await response.json()
                if response.status != 200 or body.get("result") != "YES":
                    raise RuntimeError(f"request refused: {response.status} {body}")
                offers.append(body["offers"][0]["meta"]["uuid"])

        await asyncio.gather(*(one() for _ in range(width)))
    return offers


async def accept_all(url: str, offers: list[str], width: int) -> list[float]:
    """Accept every offer; the latency of each accept."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    queue = list(offers)
    latencies: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one() -> None:
            while queue:
                offer = queue.pop()
                began = time.perf_counter()
                async with http.post(f"{url}/sessions/{offer}", json=ACCEPT) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"accept refused: {response.status}")
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(one() for _ in range(width)))
    return latencies


async def wait_final(
    admin: aioredis.Redis, keys: Keys, offers: list[str], within: float
) -> tuple[dict[str, str], float]:
    """Poll the sessions' phases until all are final; phases and when the last one was."""
    began = time.perf_counter()
    phases: dict[str, str] = {}
    pending = list(offers)
    while pending and time.perf_counter() - began < within:
        async with admin.pipeline(transaction=False) as pipe:
            for offer in pending:
                pipe.hget(keys.session(offer), "phase")
            replies = await pipe.execute()
        still = []
        for offer, phase in zip(pending, replies, strict=True):
            text = phase.decode() if phase else "?"
            if text in FINAL:
                phases[offer] = text
            else:
                still.append(offer)
        pending = still
        if pending:
            await asyncio.sleep(0.02)
    for offer in pending:
        phases[offer] = "unfinished"
    return phases, time.perf_counter() - began


async def session_memory(admin: aioredis.Redis, keys: Keys, offers: list[str]) -> dict[str, float]:
    """Mean ``MEMORY USAGE`` per key kind over a sample of sessions."""
    totals: dict[str, list[int]] = {"session": [], "history": [], "applied": [], "offerset": []}
    from talicada.broker.store.redis import RedisStore

    store = RedisStore(admin, prefix=keys.prefix)
    for offer, live in zip(offers, await store.sessions(offers), strict=True):
        offerset = live.record.offerset if live is not None else None
        names = {
            "session": keys.session(offer),
            "history": keys.history(offer),
            "applied": keys.applied(offer),
        }
        if offerset:
            names["offerset"] = keys.offerset(offerset)
        for kind, key in names.items():
            used = await admin.memory_usage(key, samples=0)
            totals[kind].append(int(used or 0))
    return {kind: sum(v) / len(v) if v else 0.0 for kind, v in totals.items()}


async def run_arq(
    url: str, prefix: str, count: int, poll: float, admin: aioredis.Redis
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ARQ_DIR)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ARQ_SCRIPT,
        url,
        prefix,
        str(count),
        str(poll),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=120)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"arq did not start: {line!r}")
        redis0 = await redis_cpu_seconds(admin)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        redis_cpu = await redis_cpu_seconds(admin) - redis0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    found = next((x for x in out.decode().splitlines() if x.startswith("ARQ ")), None)
    if found is None:
        raise RuntimeError(f"arq gave no figures: {out.decode()[-1000:]} {err.decode()[-2000:]}")
    figures: dict[str, Any] = json.loads(found[4:])
    figures["redis_cpu"] = redis_cpu
    return figures


async def bench(options: argparse.Namespace) -> int:
    if not ensure_target("arq", ARQ_DIR, "arq"):
        print(f"bench: could not install arq into {ARQ_DIR}", file=sys.stderr)
        return 2
    admin = aioredis.Redis.from_url(options.redis_url)
    try:
        info = await admin.info("server")
    except redis.RedisError as error:
        print(f"bench: Redis at {options.redis_url} does not answer: {error}", file=sys.stderr)
        return 2
    prefix = f"bench-life-{uuid.uuid4().hex[:12]}"
    keys = Keys(prefix)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="talicada-bench-life-"))
    (workdir / "tokens").write_text(f"{TOKEN} bench\n", encoding="utf-8")
    (workdir / "talicada.toml").write_text(CONFIG, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TALICADA_CONFIG": str(workdir / "talicada.toml"),
        "TALICADA_REDIS_URL": options.redis_url,
        "TALICADA_KEY_PREFIX": prefix,
        "TALICADA_CALLBACK_SECRET": secrets.token_hex(32),
        # The suite's file servers are on loopback, which production refuses.
        "TALICADA_ALLOW_LOOPBACK_FETCH": "true",
        "TALICADA_AUTH_TOKENS_FILE": str(workdir / "tokens"),
        "TALICADA_PORT": str(port),
        "TALICADA_BROKER_URL": url,
        "TALICADA_WORK_DIR": str(workdir / "work"),
        "TALICADA_LOG_FORMAT": "json",
    }
    print("# Lifecycle: ping sessions through Redis streams and worker processes vs arq")
    print(machine_line())
    print(f"redis-py {redis.__version__}, Redis server {info.get('redis_version', '?')}")
    print(
        f"deployment: talicada serve + workers {', '.join(f'{r}/{b}' for r, b in WORKERS)}, "
        f"each its own process, not pinned; Redis key prefix {prefix!r} (deleted at the end)"
    )
    print(
        f"{options.sessions} ping sessions (1 core, PT10M, one offer each, preparation times 0); "
        f"accepted {options.width} at a time; timed from the first accept to the last COMPLETED"
    )
    print(
        f"baseline: arq, {options.arq_jobs} no-op jobs, one worker in burst mode (max_jobs 10, "
        f"poll_delay {options.arq_poll:g} s, keep_result 0), jobs enqueued before the clock starts"
    )
    print()

    children: list[Child] = []
    problems: dict[str, int] = {}
    result: dict[str, Any] = {}
    try:
        async with SlowLog(admin, threshold_us=1000) as slowlog:
            children.append(
                await spawn("serve", [sys.executable, "-m", "talicada", "serve"], workdir, env=env)
            )
            for role, backend in WORKERS:
                children.append(
                    await spawn(
                        role,
                        [sys.executable, "-m", "talicada", "worker", role, "--backend", backend],
                        workdir,
                        env=env,
                    )
                )
            await wait_http(f"{url}/readyz", children[0])
            await asyncio.sleep(1.0)  # the workers create their consumer groups
            print(f"making {options.sessions} offers …", flush=True)
            offers = await make_offers(url, options.sessions, options.width)
            streams = [keys.stream(f"{role}:{backend}") for role, backend in WORKERS]
            lifecycle = keys.stream("lifecycle")
            transitions0 = int(await admin.xlen(lifecycle))
            cpu0 = {c.name: process_cpu_seconds(c.pid) for c in children}
            cpu_children0 = {c.name: c.cpu() for c in children}
            redis0 = await redis_cpu_seconds(admin)
            busy0 = machine_busy_seconds()
            print("accepting and waiting for COMPLETED …", flush=True)
            began = time.perf_counter()
            waiter = asyncio.create_task(wait_final(admin, keys, offers, options.timeout))
            accepts = await accept_all(url, offers, options.width)
            phases, _ = await waiter
            elapsed = time.perf_counter() - began
            busy = machine_busy_seconds() - busy0
            redis_cpu = await redis_cpu_seconds(admin) - redis0
            own = {c.name: process_cpu_seconds(c.pid) - cpu0[c.name] for c in children}
            total = {c.name: c.cpu() - cpu_children0[c.name] for c in children}
            steps_by_stream = {s: int(await admin.xlen(s)) for s in streams}
            async with admin.pipeline(transaction=False) as pipe:
                for offer in offers:
                    pipe.scard(keys.applied(offer))
                reports = sum(int(n) for n in await pipe.execute())
            transitions = int(await admin.xlen(lifecycle)) - transitions0
            completed = [o for o, p in phases.items() if p == "COMPLETED"]
            sample = completed[: options.memory_sample]
            memory = await session_memory(admin, keys, sample) if sample else {}
            slow = await slowlog.collect([prefix])
            result.update(
                elapsed=elapsed,
                busy=busy,
                redis_cpu=redis_cpu,
                own=own,
                total=total,
                steps=steps_by_stream,
                transitions=transitions,
                reports=reports,
                phases=phases,
                memory=memory,
                accepts=accepts,
                slow=slow,
                sampled=len(sample),
            )
            for child in children:
                await child.stop()
            children.clear()
            print(f"running arq with {options.arq_jobs} no-op jobs …", flush=True)
            result["arq"] = await run_arq(
                options.redis_url, prefix, options.arq_jobs, options.arq_poll, admin
            )
    finally:
        for child in children:
            await child.stop()
        for name in ("serve", *(role for role, _ in WORKERS)):
            problems[name] = log_problems(workdir / f"{name}.log")
        removed, left = await delete_prefix(admin, f"{prefix}:*")
        arq_removed, arq_left = await delete_prefix(admin, f"arq:*{prefix}-*")
        await admin.aclose()
        if not any(problems.values()) and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not result:
        return 1

    counts: dict[str, int] = {}
    for phase in result["phases"].values():
        counts[phase] = counts.get(phase, 0) + 1
    steps = sum(result["steps"].values())
    elapsed = result["elapsed"]
    cpu_total = sum(result["total"].values()) + result["redis_cpu"]
    arq = result["arq"]
    arq_rate = arq["jobs"] / arq["seconds"] if arq["seconds"] else math.nan
    arq_cpu = (arq["cpu"] + arq["redis_cpu"]) / max(1, arq["jobs"])
    step_wall = elapsed / max(1, steps)
    step_cpu = cpu_total / max(1, steps)
    python_cpu = sum(result["own"].values())
    task_cpu = sum(result["total"].values()) - python_cpu

    print()
    print("## Talicada")
    print(
        f"{options.sessions} sessions in {elapsed:.2f} s: {options.sessions / elapsed:.1f} "
        f"sessions/s; final phases {counts}"
    )
    print(
        f"steps (worker events handled): {steps} ({steps / max(1, options.sessions):.1f} per "
        f"session: "
        + ", ".join(f"{s.rsplit(':stream:', 1)[1]} {n}" for s, n in result["steps"].items())
        + f"); {steps / elapsed:.0f} steps/s; lifecycle stream entries {result['transitions']} "
        f"({result['transitions'] / max(1, options.sessions):.1f} per session)"
    )
    print(
        f"worker reports applied by the broker (callbacks): {result['reports']} "
        f"({result['reports'] / max(1, options.sessions):.1f} per session)"
    )
    print(
        f"accept latency: p50 {percentile(result['accepts'], 50) * 1000:.1f} ms, p99 "
        f"{percentile(result['accepts'], 99) * 1000:.1f} ms"
    )
    print("CPU seconds during the run (own / with reaped children such as the ping tasks):")
    for name in result["own"]:
        print(f"  {name:<13} {result['own'][name]:6.2f} / {result['total'][name]:6.2f}")
    print(f"  redis-server  {result['redis_cpu']:6.2f}")
    print(
        f"  all of these {cpu_total:.2f} s (Python processes {python_cpu:.2f} s, ping task "
        f"subprocesses {task_cpu:.2f} s); the whole machine {result['busy']:.2f} s over "
        f"{elapsed:.2f} s on {os.cpu_count()} cores"
    )
    print(
        f"per step: {step_wall * 1000:.2f} ms of wall time, {step_cpu * 1000:.2f} ms of CPU "
        f"({(cpu_total - task_cpu) / max(1, steps) * 1000:.2f} ms without the ping tasks, "
        f"{task_cpu / max(1, options.sessions) * 1000:.0f} ms of CPU per ping subprocess)"
    )
    memory = result["memory"]
    per_session = sum(memory.values())
    if memory:
        print(
            f"Redis memory per COMPLETED session (MEMORY USAGE, mean of {result['sampled']}): "
            + ", ".join(f"{kind} {kib(v)}" for kind, v in memory.items())
            + f"; total {kib(per_session)}"
        )
    print()
    print("## arq baseline (same Redis, same run)")
    print(
        f"{arq['jobs']} no-op jobs in {arq['seconds']:.2f} s: {arq_rate:.0f} jobs/s "
        f"(failed {arq['failed']}; enqueueing took {arq['enqueue']:.2f} s, not counted); "
        f"CPU: worker {arq['cpu']:.2f} s, redis-server {arq['redis_cpu']:.2f} s; per job "
        f"{1000 / arq_rate:.2f} ms wall, {arq_cpu * 1000:.2f} ms CPU"
    )
    print()
    print("## Against the issue 7 targets")
    wall_ratio = step_wall * arq_rate
    cpu_ratio = step_cpu / arq_cpu if arq_cpu else math.nan
    print(
        f"per step / per arq job, wall time: {wall_ratio:.2f}× ({step_wall * 1000:.2f} ms vs "
        f"{1000 / arq_rate:.2f} ms): {verdict(wall_ratio <= 1.0)} (target ≤ 1×)"
    )
    print(
        f"per step / per arq job, CPU (all processes and Redis): {cpu_ratio:.2f}× "
        f"({step_cpu * 1000:.2f} ms vs {arq_cpu * 1000:.2f} ms): {verdict(cpu_ratio <= 1.0)}"
    )
    bare = (cpu_total - task_cpu) / max(1, steps) / arq_cpu if arq_cpu else math.nan
    print(
        f"  the same without the ping subprocesses (the broker's and workers' own work): "
        f"{bare:.2f}×: {verdict(bare <= 1.0)}"
    )
    if memory:
        print(
            f"Redis per finished session: {kib(per_session)}: {verdict(per_session <= 4096)} "
            f"(target ≤ 4 KiB)"
        )
    slow = result["slow"]
    longest = slow[0].micros / 1000 if slow else 0.0
    print(
        f"SLOWLOG (≥ 1 ms, our keys): {len(slow)} entries; longest {longest:.2f} ms: "
        f"{verdict(longest <= 5.0)} (target ≤ 5 ms)"
    )
    for entry in slow[:3]:
        print(f"  {entry.micros / 1000:.2f} ms {entry.command[:100]}")
    print()
    print(
        f"cleanup: {removed + arq_removed} Redis keys deleted ({prefix}:* and arq:*{prefix}-*), "
        f"{left + arq_left} left"
    )
    for name, count in problems.items():
        if count:
            print(f"WARNING: {count} error lines in the {name} log ({workdir})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="30 sessions, 500 arq jobs")
    parser.add_argument("--sessions", type=int, default=200, help="ping sessions")
    parser.add_argument("--width", type=int, default=16, help="accepts in flight")
    parser.add_argument("--arq-jobs", type=int, default=2000, help="no-op jobs for arq")
    parser.add_argument(
        "--arq-poll", type=float, default=0.01, help="arq's poll_delay (s; arq's default 0.5)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="most seconds to wait")
    parser.add_argument("--memory-sample", type=int, default=50, help="sessions measured")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    options = parser.parse_args()
    if options.quick:
        options.sessions, options.arq_jobs, options.timeout = 30, 500, 60.0
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
