"""Benchmark: the broker's resident memory idle, under load and holding 100,000 sessions.

Issue 7: broker RSS idle, under the ``requests`` load, and after 100,000
sessions (memory store, where every session lives in the broker's process).

The broker is the same server ``bench/requests.py`` runs (its ``--serve memory``
mode: ``create_app`` on the memory store, bearer auth, JSON logs to a file,
expiry timers on, offers held for an hour so none expires), in its own process
pinned with taskset to one core; wrk, pinned to the other, sends the same
``POST /requests`` (JSON, a ping, four offers per request). RSS is read from
/proc every 0.2 s. Phases: idle after start-up; ``--seconds`` of full load;
then more requests until the store holds ``--sessions`` sessions (offers: four
per request); then idle again for a few seconds. An aiohttp hello-world server
measured the same way gives the baseline for idle and loaded RSS.

This reports; it does not gate: exit code 0 whatever the figures. It writes
nothing to Redis.

    .venv/bin/python bench/memory.py            # 100,000 sessions, ~1.5 min
    .venv/bin/python bench/memory.py --quick    # 10,000 sessions, ~20 s
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402

from bench._support import (  # noqa: E402
    WRK_LUA,
    Child,
    WrkRun,
    cores,
    ensure_wrk,
    kib,
    log_problems,
    machine_line,
    mib,
    read_port,
    run_wrk,
    spawn,
    write_wrk_spec,
)

REQUESTS_SCRIPT = Path(_HERE) / "requests.py"
TOKEN = "bench-token-" + "x" * 16
REQUEST = {
    "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
    "compute": {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/"
        "simple-compute-resource-1.0",
        "cores": {"min": 1, "max": 2},
    },
    "schedule": {"requested": {"duration": "PT10M"}},
}
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Authorization": f"Bearer {TOKEN}",
}


class Sampler:
    """RSS of one process every ``period`` s, while running."""

    def __init__(self, child: Child, period: float = 0.2) -> None:
        self.child = child
        self.period = period
        self.values: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.values.append(self.child.rss())
            await asyncio.sleep(self.period)

    def start(self) -> None:
        self.values = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> tuple[int, int]:
        """(peak, last) RSS since start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.values.append(self.child.rss())
        return max(self.values), self.values[-1]


async def server(kind: str, core: int, workdir: Path, tokens: Path) -> tuple[Child, str]:
    child = await spawn(
        f"{kind}-server",
        [
            sys.executable,
            str(REQUESTS_SCRIPT),
            "--serve",
            kind,
            "--tokens",
            str(tokens),
            "--offer-ttl",
            "3600",
        ],
        workdir,
        core=core,
        stdout_pipe=True,
    )
    port = await read_port(child)
    return child, f"http://127.0.0.1:{port}/requests"


async def bench(options: argparse.Namespace) -> int:
    if ensure_wrk() is None:
        print("bench: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    server_core, client_core = cores()
    workdir = Path(tempfile.mkdtemp(prefix="talicada-bench-mem-"))
    tokens = workdir / "tokens"
    tokens.write_text(f"{TOKEN} bench\n", encoding="utf-8")
    script = workdir / "bench.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    body = msgspec.json.encode(REQUEST)
    talicada_spec = write_wrk_spec(
        workdir / "talicada.lua", body=body, headers=HEADERS, expect='"result":"YES"'
    )
    hello_spec = write_wrk_spec(
        workdir / "hello.lua", body=body, headers={"Content-Type": "application/json"}
    )
    print("# Broker memory: RSS idle, under load, with 100,000 sessions (memory store; issue 7)")
    print(machine_line())
    print(
        f"servers pinned to core {server_core}, wrk to core {client_core}; wrk -t1 "
        f"-c{options.connections}; load phase {options.seconds:g} s; then until "
        f"{options.sessions:,} sessions (4 offers per request); RSS sampled every 0.2 s"
    )
    print()

    rows: list[tuple[str, str, str]] = []
    figures: dict[str, float] = {}
    problems = 0
    children: list[Child] = []
    try:
        for kind in ("hello", "memory"):
            print(f"running: {kind} …", flush=True)
            child, url = await server(kind, server_core, workdir, tokens)
            children.append(child)
            sampler = Sampler(child)
            await asyncio.sleep(1.0)
            idle = child.rss()
            spec = hello_spec if kind == "hello" else talicada_spec
            sampler.start()
            load = await run_wrk(
                "load",
                url,
                spec,
                script,
                seconds=options.seconds,
                connections=options.connections,
                core=client_core,
            )
            peak, last = await sampler.stop()
            label = "hello-world" if kind == "hello" else "talicada, memory store"
            rows.append((label, "idle after start-up", mib(idle)))
            rows.append(
                (
                    label,
                    f"under load ({load.rate:.0f} req/s, {options.seconds:g} s)",
                    f"peak {mib(peak)}, end {mib(last)}",
                )
            )
            figures[f"{kind}-idle"] = idle
            figures[f"{kind}-peak"] = peak
            if kind == "memory":
                made = load.ok * 4
                remaining = max(0, options.sessions - made) // 4
                print(f"  {made:,} sessions so far; {remaining:,} more requests …", flush=True)
                fill_spec = talicada_spec
                # wrk runs for a time, not a count: as long as the load phase's rate
                # needs for the rest (the count reached is printed).
                fill_seconds = remaining / max(1.0, load.rate)
                sampler.start()
                began = time.perf_counter()
                more: WrkRun | None = None
                if remaining:
                    more = await run_wrk(
                        "fill",
                        url,
                        fill_spec,
                        script,
                        seconds=fill_seconds,
                        connections=options.connections,
                        core=client_core,
                    )
                seconds = time.perf_counter() - began
                peak, last = await sampler.stop()
                total = made + (more.ok * 4 if more else 0)
                failed = load.failures + (more.failures if more else 0)
                rows.append(
                    (
                        label,
                        f"after {total:,} sessions ({seconds:.0f} s of requests)",
                        f"peak {mib(peak)}, end {mib(last)}",
                    )
                )
                await asyncio.sleep(options.settle)
                settled = child.rss()
                rows.append((label, f"{options.settle:g} s later, idle", mib(settled)))
                figures["sessions"] = total
                figures["settled"] = settled
                figures["failed"] = failed
            await child.stop()
            problems += log_problems(child.log)
    finally:
        for child in children:
            await child.stop()
        if not problems and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'server':<24} {'when':<40} RSS")
    for label, when, value in rows:
        print(f"{label:<24} {when:<40} {value}")
    print()
    grown = figures["settled"] - figures["memory-idle"]
    sessions = max(1, int(figures["sessions"]))
    print(
        f"talicada idle / hello-world idle: {figures['memory-idle'] / figures['hello-idle']:.2f}× "
        f"({mib(figures['memory-idle'])} vs {mib(figures['hello-idle'])})"
    )
    print(
        f"talicada RSS growth with {sessions:,} sessions: {mib(grown)}, "
        f"{kib(grown / sessions)} per session (record, history, calendar entry, indexes; the "
        f"offer sets are shared by four)"
    )
    if figures.get("failed"):
        print(f"WARNING: {int(figures['failed'])} requests failed")
    if problems:
        print(f"WARNING: {problems} error lines in the server logs ({workdir})")
    print("(no target in issue 7: figures for docs/PERFORMANCE.md)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 sessions, 3 s of load")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to hold")
    parser.add_argument("--seconds", type=float, default=10.0, help="load phase")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds at the end")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    options = parser.parse_args()
    if options.quick:
        options.sessions, options.seconds, options.settle = 10_000, 3.0, 2.0
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
