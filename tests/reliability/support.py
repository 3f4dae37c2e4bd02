"""What the crash scenarios share: a deployment of real processes, an own Redis,
sessions in bulk, and the figures each scenario leaves for docs/RELIABILITY.md.

Everything listens on loopback and ephemeral ports; every wait is bounded, so a
scenario that goes wrong fails in bounded time instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis.asyncio

from talicada.workers.registry import WORKERS

ROOT = Path(__file__).resolve().parents[2]
#: Where each scenario writes its figures (``scripts/reliability-report`` reads them).
FIGURES = Path(os.environ.get("TALICADA_RELIABILITY_FIGURES", ROOT / "var" / "reliability"))
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "REJECTED"})
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
#: Longest a deployment may take to answer /readyz: interpreters start slowly on
#: a busy two-core CI machine.
STARTUP = 60.0


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --------------------------------------------------------------------------- Redis


class OwnRedis:
    """A redis-server of the test's own, with AOF ``everysec``, in a temporary
    directory on a free port: the only Redis a scenario may stop or restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (again, on the same port and data) and wait until it answers."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                try:
                    if await client.ping():
                        return
                except (redis.RedisError, OSError):
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError("the test's own redis-server did not start")

    async def stop(self) -> None:
        """Stop it cleanly (SIGTERM: Redis flushes the AOF before it exits)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), timeout=20)


# --------------------------------------------------------------------------- deployment


TOKEN = secrets.token_hex(16)
T = TypeVar("T")


@dataclass
class Deployment:
    """``talicada serve`` and one ``talicada worker`` per role, as child processes."""

    directory: Path
    redis_url: str
    prefix: str = field(default_factory=lambda: f"talicada-test-{secrets.token_hex(8)}")
    port: int = field(default_factory=free_port)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        """The broker's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """What every API call carries."""
        return {"Authorization": f"Bearer {TOKEN}"}

    def client(self) -> aiohttp.ClientSession:
        """An HTTP client of the API whose every call is bounded (30 s)."""
        return aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=30))

    @property
    def work_dir(self) -> Path:
        """Where the local platform keeps its sessions' files."""
        return self.directory / "work"

    def configure(self, time_limits: dict[str, float] | None = None) -> dict[str, str]:
        """Write the settings file and return the processes' environment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        tokens = self.directory / "tokens"
        tokens.write_text(f"{TOKEN} alice\n")
        limits = "".join(f"{name} = {value}\n" for name, value in (time_limits or {}).items())
        # Room for hundreds of sessions at once, and the quick preparation of embedded mode.
        (self.directory / "talicada.toml").write_text(
            "[[platforms]]\n"
            'name = "local"\n'
            "cores = 4000\n"
            "memory = 4000\n"
            "[platforms.preparation]\n"
            "image = {}\n"
            'data = { "simple-data-resource" = 2.0 }\n'
            "storage = 1.0\n"
            "launch = 1.0\n"
            "release = 1.0\n"
            "[platforms.time_limits]\n" + limits
        )
        return {
            **os.environ,
            "TALICADA_CONFIG": str(self.directory / "talicada.toml"),
            "TALICADA_REDIS_URL": self.redis_url,
            "TALICADA_KEY_PREFIX": self.prefix,
            "TALICADA_CALLBACK_SECRET": self.prefix,
            "TALICADA_AUTH_TOKENS_FILE": str(tokens),
            "TALICADA_PORT": str(self.port),
            "TALICADA_BROKER_URL": self.url,
            "TALICADA_WORK_DIR": str(self.work_dir),
            "TALICADA_LOG_FORMAT": "json",
            # Short, so a killed worker's events are taken over within seconds.
            "TALICADA_RECLAIM_IDLE": "2",
            # The scenarios' data comes from their own file server on loopback, which
            # the outbound fence refuses in production mode unless allowed.
            "TALICADA_ALLOW_LOOPBACK_FETCH": "true",
            "TALICADA_RETRY_BASE": "0.2",
        }

    async def start(self, name: str, *argv: str) -> None:
        """Start ``talicada ARGV`` as process ``name``, logging to its own file."""
        environment = getattr(self, "_environment", None) or self.configure()
        self._environment = environment
        log = (self.directory / "logs" / f"{name}.log").open("ab")
        self.processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "talicada", *argv, env=environment, stdout=log, stderr=log
        )

    async def start_all(self, time_limits: dict[str, float] | None = None) -> None:
        """The broker and a worker of every role; returns once the broker is ready."""
        self._environment = self.configure(time_limits)
        await self.start("serve", "serve")
        for role in WORKERS:
            await self.start(role, "worker", role)
        await self.wait_ready()

    async def wait_ready(self, limit: float = STARTUP) -> float:
        """Wait for /readyz to say 200; returns how long it took."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - started < limit:
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return time.monotonic() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"the broker did not become ready in {limit} s")

    def kill(self, name: str) -> None:
        """SIGKILL process ``name``: a crash, with no chance to clean up."""
        self.processes[name].kill()
        self.killed.add(name)

    def log_events(self, *names: str) -> list[dict[str, Any]]:
        """The JSON log lines of the named processes (all when none named)."""
        found = []
        for path in sorted((self.directory / "logs").glob("*.log")):
            if names and not any(path.stem.startswith(name) for name in names):
                continue
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        continue
        return found

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every process still running, wait, and delete the deployment's keys."""
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                codes[name] = await process.wait()
        try:
            client = redis.asyncio.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*")]
            if keys:
                await client.unlink(*keys)
            await client.aclose()
        except (redis.RedisError, OSError):
            pass  # the scenario's own Redis may be gone already
        return codes


# --------------------------------------------------------------------------- sessions


def delay(seconds: float) -> dict[str, Any]:
    """A request for a delay task of ``seconds``."""
    return {
        "executable": {
            "kind": "urn:talicada:kinds:executable:delay-1.0",
            "duration": f"PT{seconds}S",
        },
        "schedule": {"requested": {"duration": "PT5M"}},
    }


async def offer(http: aiohttp.ClientSession, url: str, request: dict[str, Any]) -> str:
    """Ask for offers; the first one's uuid. Retried while the broker says 409 or 503."""
    for _ in range(50):
        async with http.post(f"{url}/requests", json=request) as response:
            if response.status in (409, 503):
                await asyncio.sleep(0.1)
                continue
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["result"] == "YES", body
        uuid: str = body["offers"][0]["meta"]["uuid"]
        return uuid
    raise AssertionError("the broker kept refusing the request")


async def accept(http: aiohttp.ClientSession, url: str, uuid: str) -> None:
    """Accept an offer."""
    async with http.post(f"{url}/sessions/{uuid}", json=ACCEPT) as response:
        assert response.status == 200, await response.text()


async def submit(http: aiohttp.ClientSession, url: str, request: dict[str, Any]) -> str:
    """Ask for offers and accept the first."""
    uuid = await offer(http, url, request)
    await accept(http, url, uuid)
    return uuid


async def bounded(concurrency: int, work: Iterable[Awaitable[T]]) -> list[T]:
    """Await every item of ``work``, ``concurrency`` at a time; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Awaitable[T]) -> T:
        async with gate:
            return await item

    return list(await asyncio.gather(*(one(item) for item in work)))


async def submit_many(
    http: aiohttp.ClientSession, url: str, requests: Iterable[dict[str, Any]], concurrency: int = 8
) -> list[str]:
    """Submit and accept every request, ``concurrency`` at a time, in order."""
    return await bounded(concurrency, (submit(http, url, request) for request in requests))


async def phases(http: aiohttp.ClientSession, url: str, uuids: list[str]) -> dict[str, str]:
    """The current phase of each session ('?' when the broker cannot say now)."""
    gate = asyncio.Semaphore(16)

    async def one(uuid: str) -> tuple[str, str]:
        async with gate:
            try:
                async with http.get(f"{url}/sessions/{uuid}") as response:
                    if response.status != 200:
                        return uuid, "?"
                    return uuid, str((await response.json())["phase"])
            except aiohttp.ClientError:
                return uuid, "?"

    return dict(await asyncio.gather(*(one(uuid) for uuid in uuids)))


async def wait_terminal(
    http: aiohttp.ClientSession, url: str, uuids: list[str], limit: float
) -> dict[str, str]:
    """Poll until every session is in a terminal phase or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    now: dict[str, str] = {}
    while time.monotonic() < deadline:
        now = await phases(http, url, uuids)
        if all(phase in TERMINAL for phase in now.values()):
            return now
        await asyncio.sleep(0.5)
    return now


async def session_log(http: aiohttp.ClientSession, url: str, uuid: str) -> dict[str, Any]:
    """A session's log (its record with history)."""
    async with http.get(f"{url}/sessions/{uuid}/log") as response:
        assert response.status == 200, await response.text()
        log: dict[str, Any] = await response.json()
        return log


def duplicated_moves(log: dict[str, Any]) -> int:
    """Component moves recorded more than once in a session's history: a step
    whose effect was applied twice (a task started twice, data staged twice)."""
    moves = Counter(
        (item["component"], item["to"])
        for item in log["history"]
        if "component" in item and item["to"] in ("AVAILABLE", "RUNNING", "COMPLETED")
    )
    return sum(count - 1 for count in moves.values() if count > 1)


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """One scenario's outcome, as the table in docs/RELIABILITY.md shows it."""

    scenario: str
    submitted: int
    completed: int
    lost: int
    duplicated: int
    recover_s: float
    seconds: float
    notes: str = ""

    def save(self) -> None:
        """Write them where ``scripts/reliability-report`` and the test summary read them."""
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / f"{self.scenario}.json").write_text(json.dumps(asdict(self), indent=1) + "\n")


def saved() -> list[Figures]:
    """Every scenario's last figures."""
    found = []
    for path in sorted(FIGURES.glob("*.json")) if FIGURES.is_dir() else []:
        try:
            found.append(Figures(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return found


def table(figures: list[Figures]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| scenario | submitted | completed | lost | duplicated effects | time to recover (s) "
        "| scenario time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for item in figures:
        lines.append(
            f"| {item.scenario} | {item.submitted} | {item.completed} | {item.lost} "
            f"| {item.duplicated} | {item.recover_s:.1f} | {item.seconds:.1f} |"
        )
    return "\n".join(lines)
