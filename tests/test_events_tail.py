"""``talicada events tail``: operators follow the streams, filtered, as JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio

from talicada.events.envelope import (
    Launch,
    LaunchBody,
    SessionChanged,
    TransitionBody,
)
from talicada.events.redis_bus import RedisBus
from talicada.schema.model import Ping, SimpleComputeResource


async def run_cli(redis_url: str, prefix: str, *args: str) -> list[dict[str, object]]:
    environment = {**os.environ, "TALICADA_REDIS_URL": redis_url, "TALICADA_KEY_PREFIX": prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "talicada",
        "events",
        "tail",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


def launch_event(session: str) -> Launch:
    body = LaunchBody(
        executable=Ping(), compute=SimpleComputeResource(), ends="2026-01-01T00:00:00Z"
    )
    return Launch.new(session, component="exe", platform="local", body=body)


async def test_tail_prints_the_events_of_one_session_from_the_start(
    redis_url: str, redis_key_prefix: str
) -> None:
    prefix = redis_key_prefix.rstrip(":")
    bus = RedisBus(redis.asyncio.Redis.from_url(redis_url), prefix=prefix)
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    for session, to in [(mine, "ACCEPTED"), (other, "ACCEPTED"), (mine, "PREPARING")]:
        body = TransitionBody(source="OFFERED", target=to, cause="test", time="t")
        await bus.publish("lifecycle", SessionChanged.new(session, body=body))
    await bus.publish("launch:local", launch_event(mine))
    lines = await run_cli(
        redis_url,
        prefix,
        "--from-start",
        "--session",
        mine,
        "--count",
        "2",
        "--stream",
        "lifecycle",
    )
    assert [line["event"]["body"]["to"] for line in lines] == ["ACCEPTED", "PREPARING"]  # type: ignore[index]
    assert {line["stream"] for line in lines} == {"lifecycle"}
    launched = await run_cli(
        redis_url,
        prefix,
        "--from-start",
        "--stream",
        "launch",  # a role: every back end the platforms use (here launch:local)
        "--type",
        "executable.launch",
        "--count",
        "1",
    )
    assert launched[0]["event"]["session"] == mine  # type: ignore[index]
    await bus.close()


async def test_tail_lists_dead_letters_with_their_reason(
    redis_url: str, redis_key_prefix: str
) -> None:
    prefix = redis_key_prefix.rstrip(":")
    bus = RedisBus(redis.asyncio.Redis.from_url(redis_url), prefix=prefix)
    await bus.ensure_group("launch:local", "launch")
    await bus.publish("launch:local", launch_event(str(uuid.uuid4())))
    (delivery,) = await bus.receive("launch:local", "launch", "test", count=1)
    await bus.dead_letter(delivery, "launch", "the platform is on fire")
    lines = await run_cli(redis_url, prefix, "--dead-letters")
    assert [line["reason"] for line in lines] == ["the platform is on fire"]
    await bus.close()


async def test_tail_follows_the_embedded_broker_that_make_run_starts(tmp_path: Path) -> None:
    """Without Redis, ``events tail`` reads an embedded broker's streams over its HTTP port."""
    from tests.test_processes import free_port

    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("TALICADA_")
    }
    environment |= {"TALICADA_PORT": str(port), "TALICADA_WORK_DIR": str(tmp_path / "work")}
    log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "talicada", "serve", env=environment, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                assert serve.returncode is None, (tmp_path / "serve.log").read_text()
                try:
                    async with http.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            ping = {"executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"}}
            async with http.post(f"{url}/direct", json=ping) as response:
                assert response.status == 200
                session = (await response.json())["meta"]["uuid"]
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "talicada",
            "events",
            "tail",
            "--session",
            session,
            "--from-start",
            "--count",
            "2",
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(tail.communicate(), timeout=30)
        assert tail.returncode == 0, stderr.decode()
        lines = [json.loads(line) for line in stdout.decode().splitlines()]
        assert len(lines) == 2
        assert {line["stream"] for line in lines} == {"lifecycle"}
        assert all(line["event"]["session"] == session for line in lines)
    finally:
        serve.terminate()
        await asyncio.wait_for(serve.wait(), timeout=15)
