"""Helpers for tests that run sessions through their lifecycle."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import EXAMPLES

Client = TestClient[web.Request, web.Application]
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
CANCEL = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
#: What the loopback file server serves (the ``file_server`` fixture).
FILES = {"a.fits": os.urandom(200_000), "b.fits": b"SIMPLE  =                    T" * 100}


class ShiftedClock:
    """The wall clock moved by hand, for a broker's ``clock=``: tests jump to the
    instant they need instead of sleeping until it (and cannot flake on a busy
    machine). ``move_to`` sets what it reads now; it goes on ticking from there."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move_to(self, instant: float) -> None:
        """Make the clock read ``instant`` (Unix seconds) now."""
        self.offset = datetime.fromtimestamp(instant, UTC) - datetime.now(UTC)


async def accept_first(client: Client, request: dict[str, Any]) -> str:
    response = await client.post("/requests", json=request)
    body = await response.json()
    assert body["result"] == "YES", body
    uuid: str = body["offers"][0]["meta"]["uuid"]
    accepted = await client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert accepted.status == 200, await accepted.text()
    return uuid


async def wait_for_phase(client: Client, uuid: str, phases: set[str], limit: float = 30) -> str:
    """Long-poll until the session is in one of ``phases``."""
    deadline = time.monotonic() + limit
    phase = ""
    while time.monotonic() < deadline:
        response = await client.get(f"/sessions/{uuid}", params={"wait": "2", "phase": phase})
        phase = str((await response.json())["phase"])
        if phase in phases:
            return phase
    raise AssertionError(f"session {uuid} still {phase}, wanted {phases}")


async def session_phases(client: Client, uuid: str) -> list[str]:
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    steps = [item for item in log["history"] if "component" not in item]
    return [steps[0]["from"], *(item["to"] for item in steps)]


def checksum_request(base: str) -> dict[str, Any]:
    text = (EXAMPLES / "v1-local-checksum-request.yaml").read_text()
    request: dict[str, Any] = yaml.safe_load(text)
    for item, name in zip(request["data"], ("a.fits", "b.fits"), strict=True):
        item["location"] = f"{base}/{name}"
    return request


def task(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "executable": {"kind": f"urn:talicada:kinds:executable:{kind}-1.0", **fields},
        "schedule": {"requested": {"duration": "PT2M"}},
    }


def digests_of(log: dict[str, Any]) -> dict[str, str]:
    """The checksum digests in a session log's executable messages: path → hex."""
    messages = log["session"]["executable"]["meta"]["messages"]
    return {m["values"]["path"]: m["values"]["digest"] for m in messages if "digest" in m["values"]}


def expected_digests() -> dict[str, str]:
    """The digests the checksum task must report for the served files."""
    import hashlib

    return {f"/inputs/{name}": hashlib.sha256(body).hexdigest() for name, body in FILES.items()}
