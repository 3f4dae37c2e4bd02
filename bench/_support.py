"""Helpers the benchmark scripts share: processes, CPU and memory, Redis, wrk, profiles.

Not a benchmark itself. Each script in ``bench/`` takes its own directory off
``sys.path`` and puts the repository root first, so ``bench._support`` and the
working tree's ``talicada`` are importable whatever the current directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- figures -------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 100:.0f}%"


def kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


# -- the machine and processes -------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of ``pid`` (plus its reaped children's); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def process_rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def machine_line() -> str:
    """Python, cores, memory: for the report's header."""
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: {os.cpu_count()} cores ({model}), {memory / 2**30:.0f} GiB; python "
        f"{platform.python_version()} ({platform.machine()})"
    )


def cores() -> tuple[int, int]:
    """(server core, load generator core): the first two cores this process may use."""
    mine = sorted(os.sched_getaffinity(0))
    return mine[0], mine[1] if len(mine) > 1 else mine[0]


@dataclass
class Child:
    """A child process of a benchmark, with its log file."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return process_cpu_seconds(self.pid, children=True)

    def rss(self) -> int:
        return process_rss(self.pid)

    async def stop(self, grace: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` s; the exit code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def spawn(
    name: str,
    argv: Sequence[str],
    logdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    core: int | None = None,
    stdout_pipe: bool = False,
) -> Child:
    """Start ``argv`` (pinned to ``core`` with taskset when given), logging to a file."""
    log = logdir / f"{name}.log"
    command = [*(["taskset", "-c", str(core)] if core is not None else []), *argv]
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log_file,
            stderr=log_file,
            env=dict(env) if env is not None else None,
            cwd=ROOT,
        )
    return Child(name, process, log)


async def read_port(child: Child, within: float = 60) -> int:
    """The port a child prints as ``PORT n`` on its first stdout line."""
    assert child.process.stdout is not None
    try:
        line = await asyncio.wait_for(child.process.stdout.readline(), timeout=within)
    except TimeoutError:
        line = b""
    if not line.startswith(b"PORT "):
        await child.stop(grace=2)
        raise RuntimeError(f"{child.name} did not start; see {child.log}:\n{tail(child.log)}")
    return int(line.split()[1])


def tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def log_problems(path: Path) -> int:
    """Error lines and tracebacks in a JSON or plain log."""
    if not path.exists():
        return 0
    text = path.read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if '"level": "error"' in line or '"level":"error"' in line or "Traceback" in line
    )


async def wait_http(url: str, child: Child, within: float = 30) -> None:
    """Until ``url`` answers 200 (the broker is up)."""
    import aiohttp

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited during startup:\n{tail(child.log)}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {within} s:\n{tail(child.log)}")


# -- installing what a benchmark needs (its preflight) ---------------------------


def _venv_lock() -> Any:
    """The lock scripts/_venv.sh takes, so no install races another one."""
    (ROOT / "var").mkdir(exist_ok=True)
    handle = (ROOT / "var" / "venv.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def ensure_module(module: str, package: str) -> bool:
    """Import ``module`` or pip-install ``package`` into this venv first. False if it fails."""
    if importlib.util.find_spec(module) is not None:
        return True
    print(f"preflight: installing {package} into {sys.prefix} (bench only)", flush=True)
    with _venv_lock():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", package],
            check=False,
        )
    importlib.invalidate_caches()
    return done.returncode == 0 and importlib.util.find_spec(module) is not None


def ensure_target(package: str, target: Path, module: str) -> bool:
    """``package`` installed into its own directory ``target`` (with its dependencies).

    For a baseline whose pins clash with the project's (arq wants redis-py < 6):
    it runs in a child process with ``target`` first on PYTHONPATH, and the
    project's venv is left as it is.
    """
    if (target / module).is_dir():
        return True
    print(f"preflight: installing {package} into {target} (bench only, not the venv)", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            package,
        ],
        check=False,
    )
    return done.returncode == 0 and (target / module).is_dir()


def ensure_wrk() -> str | None:
    """The path of Debian's ``wrk``; installs it with apt-get when missing and root."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print("preflight: installing wrk (apt-get update && apt-get install -y wrk)", flush=True)
    options = ["-o", "DPkg::Lock::Timeout=300", "-q"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", *options], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", *options, "wrk"], check=False, env=env)
    return shutil.which("wrk")


# -- Redis -----------------------------------------------------------------------


async def redis_cpu_seconds(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def commandstats(client: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """Command → (calls, usec) from ``INFO commandstats``."""
    info = await client.info("commandstats")
    found: dict[str, tuple[int, int]] = {}
    for key, value in info.items():
        name = key.removeprefix("cmdstat_")
        if isinstance(value, dict):
            found[name] = (int(value.get("calls", 0)), int(value.get("usec", 0)))
    return found


#: Commands the benchmarks send themselves to measure: never counted.
OWN_COMMANDS = frozenset({"info", "slowlog", "config", "ping", "memory", "scan", "unlink"})


def stats_delta(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Per command (calls, usec) between two snapshots, without the benchmark's own probes."""
    delta = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if calls != calls0 and name not in OWN_COMMANDS:
            delta[name] = (calls - calls0, usec - usec0)
    return delta


@dataclass
class SlowEntry:
    id: int
    micros: int
    command: str


class SlowLog:
    """Sets ``slowlog-log-slower-than`` (µs) for a run and restores it; keeps our entries."""

    def __init__(self, client: aioredis.Redis, threshold_us: int = 1000, keep: int = 1024) -> None:
        self.client = client
        self.threshold = threshold_us
        self.keep = keep
        self.saved: dict[str, str] = {}
        self.start_id = -1
        self.entries: list[SlowEntry] = []

    async def __aenter__(self) -> SlowLog:
        for name in ("slowlog-log-slower-than", "slowlog-max-len"):
            self.saved.update(
                {_text(k): _text(v) for k, v in (await self.client.config_get(name)).items()}
            )
        await self.client.config_set("slowlog-log-slower-than", self.threshold)
        if int(self.saved.get("slowlog-max-len", "128")) < self.keep:
            await self.client.config_set("slowlog-max-len", self.keep)
        newest = await self.client.slowlog_get(1)
        self.start_id = int(newest[0]["id"]) if newest else -1
        return self

    async def collect(self, marks: Iterable[str]) -> list[SlowEntry]:
        """Entries since the start whose arguments name one of ``marks`` (our key prefixes)."""
        found = []
        for raw in await self.client.slowlog_get(self.keep):
            if int(raw["id"]) <= self.start_id:
                continue
            command = _text(raw["command"])
            if command.split(" ", 1)[0].lower() in OWN_COMMANDS:
                continue  # the benchmark's own probes (MEMORY USAGE, SCAN, …)
            if any(mark in command for mark in marks):
                found.append(SlowEntry(int(raw["id"]), int(raw["duration"]), command[:160]))
        self.entries = sorted(found, key=lambda e: -e.micros)
        return self.entries

    async def __aexit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            with contextlib.suppress(Exception):
                await self.client.config_set(name, value)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def script_name(command: str, scripts: Mapping[str, str]) -> str:
    """``evalsha <sha> …`` → the name of the script with that sha, when known."""
    parts = command.split()
    if len(parts) > 1 and parts[0].lower() == "evalsha":
        return scripts.get(parts[1], "evalsha ?")
    return parts[0] if parts else "?"


def store_scripts(store: Any) -> dict[str, str]:
    """sha → script name for a RedisStore's registered scripts (whatever they are)."""
    found = {}
    for name, value in vars(store).items():
        sha = getattr(value, "sha", None)
        if isinstance(sha, str) and sha:
            found[sha] = name.lstrip("_")
    return found


async def delete_prefix(client: aioredis.Redis, pattern: str) -> tuple[int, int]:
    """Delete every key matching ``pattern``; (deleted, left)."""
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(await client.unlink(*batch))
            batch = []
    if batch:
        removed += int(await client.unlink(*batch))
    left = 0
    async for _ in client.scan_iter(match=pattern, count=1000):
        left += 1
    return removed, left


# -- wrk -------------------------------------------------------------------------

#: wrk's Lua: the method, body and headers from the script's arguments; checks
#: each answer; optional pacing (delay() between requests on a connection); a
#: JSON summary on the last line, with latency percentiles in µs.
WRK_LUA = r"""
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  statuses = ""
  local spec = dofile(args[1])
  wrk.method = spec.method
  wrk.body = spec.body
  for name, value in pairs(spec.headers) do wrk.headers[name] = value end
  expect = spec.expect
  pause = spec.pause or 0
  paths = spec.paths
  limit = spec.limit
  index = id or 1
end

function request()
  if paths then
    index = index + 1
    if index > #paths then index = 1 end
    return wrk.format(nil, paths[index])
  end
  return wrk.format()
end

function delay()
  return pause
end

function response(status, headers, body)
  if status == 200 and (expect == nil or string.find(body, expect, 1, true)) then
    ok = ok + 1
  else
    bad = bad + 1
    if #statuses < 200 then statuses = statuses .. status .. " " end
  end
  if limit and ok + bad >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local good, failed, seen = 0, 0, ""
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    failed = failed + thread:get("bad")
    seen = seen .. thread:get("statuses")
  end
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "ok": %d, "bad": %d, "errors": %d, ' ..
    '"timeouts": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, ' ..
    '"mean": %.1f, "statuses": "%s"}\n',
    summary.requests, summary.duration, good, failed,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status,
    summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, seen))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def write_wrk_spec(
    path: Path,
    *,
    method: str = "POST",
    body: bytes | str = b"",
    headers: Mapping[str, str] | None = None,
    expect: str | None = None,
    pause_ms: int = 0,
    paths: Sequence[str] | None = None,
    limit: int | None = None,
) -> Path:
    """A Lua file the wrk script loads: what to send and what counts as a good answer."""
    text = body.decode() if isinstance(body, bytes) else body
    header_items = ", ".join(
        f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in (headers or {}).items()
    )
    lines = [
        "return {",
        f"  method = {_lua_string(method)},",
        f"  body = {_lua_string(text) if text else 'nil'},",
        f"  headers = {{{header_items}}},",
        f"  expect = {_lua_string(expect) if expect else 'nil'},",
        f"  pause = {int(pause_ms)},",
        f"  limit = {int(limit) if limit else 'nil'},",
    ]
    if paths:
        lines.append("  paths = {" + ", ".join(_lua_string(p) for p in paths) + "},")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class WrkRun:
    """One wrk run's figures (latencies in ms)."""

    label: str
    requests: int
    seconds: float
    ok: int
    bad: int
    errors: int
    timeouts: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    statuses: str = ""
    connections: int = 0
    pause_ms: int = 0
    server_cpu: float = math.nan
    client_cpu: float = math.nan
    redis_cpu: float | None = None
    other_cpu: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan

    @property
    def failures(self) -> int:
        return self.bad + self.errors + self.timeouts


async def run_wrk(
    label: str,
    url: str,
    spec: Path,
    script: Path,
    *,
    seconds: float,
    connections: int,
    core: int | None,
    threads: int = 1,
    timeout_s: float = 5,
    pause_ms: int = 0,
) -> WrkRun:
    """Run wrk (pinned to ``core``) for ``seconds`` and parse its summary."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    command = [
        *(["taskset", "-c", str(core)] if core is not None else []),
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(spec),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=seconds + 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    line = next((x for x in out.decode().splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.decode()[-2000:]} {err.decode()[-2000:]}")
    data = json.loads(line[4:])
    return WrkRun(
        label=label,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok=data["ok"],
        bad=data["bad"],
        errors=data["errors"],
        timeouts=data["timeouts"],
        p50=data["p50"] / 1000,
        p90=data["p90"] / 1000,
        p99=data["p99"] / 1000,
        p999=data["p999"] / 1000,
        max=data["max"] / 1000,
        statuses=data["statuses"].strip(),
        connections=connections,
        pause_ms=pause_ms,
    )


# -- profiles --------------------------------------------------------------------


async def py_spy(pid: int, seconds: float, out: Path, rate: int = 200) -> Path | None:
    """Sample ``pid`` with py-spy for ``seconds`` into collapsed stacks (None: no py-spy)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not _exists(binary):
        return None
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(process.wait(), timeout=seconds + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
    return out if _exists(out) else None


def _exists(path: str | Path) -> bool:
    return os.path.exists(path)


def profile_summary(collapsed: Path, top: int = 12) -> list[str]:
    """Top functions by own and by inclusive samples, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; own time (function, file:line of its first sample):"]
    lines += [f"  {n / total * 100:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("inclusive time, talicada code only:")
    ours = [(name, n) for name, n in inclusive.most_common() if "talicada/" in name]
    lines += [f"  {n / total * 100:5.1f}%  {name}" for name, n in ours[:top]]
    return lines


def _frame(text: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line.
    name, _, where = text.partition(" (")
    where = where.rstrip(")")
    path = where.rpartition(":")[0] or where
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


@contextlib.asynccontextmanager
async def sampled_cpu(pids: Mapping[str, int]) -> AsyncIterator[dict[str, float]]:
    """CPU seconds each of ``pids`` uses inside the block (filled in at its end)."""
    start = {name: process_cpu_seconds(pid, children=True) for name, pid in pids.items()}
    result: dict[str, float] = {}
    yield result
    for name, pid in pids.items():
        result[name] = process_cpu_seconds(pid, children=True) - start[name]
