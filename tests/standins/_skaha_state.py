"""The simulated side of the Skaha stand-in: sessions on a timeline, callbacks queued and sent.

Kept apart from :mod:`tests.standins.skaha` (the HTTP routes) so each stays small.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tests.standins._common import StandIn

BASE = "/skaha"
DEFAULT_TOKEN = "standin-token"  # a documented test credential
DEFAULT_IMAGES: dict[str, list[str]] = {
    "images.canfar.net/skaha/base-notebook:latest": ["notebook"],
    "images.canfar.net/skaha/astroml:latest": ["notebook", "headless"],
    "images.canfar.net/skaha/terminal:1.1.1": ["headless"],
    "images.canfar.net/skaha/carta:4.0": ["carta"],
}
INTERACTIVE = ("notebook", "desktop", "carta", "contributed", "firefly")
ACTIVE = ("Pending", "Running")
PENDING_REASON = "0/3 nodes are available: 3 Insufficient cpu."


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Session:
    """One simulated session and what was asked of it."""

    id: str
    userid: str
    name: str
    image: str
    type: str
    cores: int
    ram: int
    created: float
    expiry: float
    run_seconds: float
    stuck: bool
    fails: bool
    cmd: str | None = None
    args: str | None = None
    env: list[str] = field(default_factory=list)
    status: str = "Pending"
    deleted: float | None = None
    seen: list[str] = field(default_factory=lambda: ["Pending"])

    def timeline(self, start_delay: float, terminate_delay: float) -> list[tuple[float, str]]:
        """``(time, status)`` milestones in order; ``""`` marks the session gone."""
        steps = [(self.created, "Pending")]
        if not self.stuck:
            start = self.created + start_delay
            steps.append((start, "Running"))
            if self.type == "headless" or self.fails:
                steps.append((start + self.run_seconds, "Error" if self.fails else "Succeeded"))
        end = min(self.deleted if self.deleted is not None else math.inf, self.expiry)
        if end < math.inf:
            steps = [step for step in steps if step[0] < end or step[1] == "Pending"]
            steps += [(end, "Terminating"), (end + terminate_delay, "")]
        return steps


@dataclass
class Delivery:
    """One callback POST the stand-in made, and the answer (0: unreachable)."""

    url: str
    body: bytes
    status: int


@dataclass
class SkahaState(StandIn):
    """Configuration and inspectable state of one Skaha stand-in (calls and faults included)."""

    tokens: dict[str, str] = field(default_factory=lambda: {DEFAULT_TOKEN: "standin"})
    images: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    cores: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    ram: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    default_cores: int = 1
    default_ram: int = 4
    max_interactive: int | None = 5
    max_active: int | None = None
    clock: Callable[[], float] = time.time
    start_delay: float = 0.2
    run_seconds: float = 1.0
    terminate_delay: float = 0.2
    expiry_seconds: float = 4 * 24 * 3600.0
    tick: float = 0.05
    stuck_pending: bool = False
    fail_sessions: bool = False
    public_url: str = "https://standin.canfar.example"
    callbacks_enabled: bool = False
    callback_attempts: int = 3
    callback_retry_delay: float = 0.05
    callbacks: dict[str, tuple[str, str]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    sessions: dict[str, Session] = field(default_factory=dict)
    _outbox: asyncio.Queue[tuple[str, str, bytes]] | None = field(default=None, repr=False)

    def advance(self) -> None:
        """Bring every session up to ``clock()``, queueing a callback per status change."""
        now = self.clock()
        for session in list(self.sessions.values()):
            steps = session.timeline(self.start_delay, self.terminate_delay)
            reached = [step for step in steps if step[0] <= now]
            done = [status for _, status in reached]
            # Every milestone passed since the last look is a change, even when the
            # clock jumped over several: a watcher must see each one, in order.
            new = reached[done.index(session.status) + 1 :] if session.status in done else []
            for when, status in new:
                previous, session.status = session.status, status
                if not status:
                    del self.sessions[session.id]
                    break
                session.seen.append(status)
                self.notify(session, previous, when)

    def view(self, session: Session) -> dict[str, Any]:
        """The session's JSON, as ``GET /v1/session/{id}`` returns it."""
        data: dict[str, Any] = {
            "id": session.id,
            "userid": session.userid,
            "runAsUID": "1000",
            "runAsGID": "1000",
            "supplementalGroups": [],
            "appid": "<none>",
            "image": session.image,
            "type": session.type,
            "status": session.status,
            "name": session.name,
            "startTime": _iso(session.created),
            "expiryTime": _iso(session.expiry),
            "requestedRAM": f"{session.ram}G",
            "requestedCPUCores": str(session.cores),
            "requestedGPUCores": "<none>",
            "ramInUse": "<none>",
            "gpuRAMInUse": "<none>",
            "cpuCoresInUse": "<none>",
            "gpuUtilization": "<none>",
        }
        if session.type != "headless":
            home = f"lab/tree/arc/home/{session.userid}"
            data["connectURL"] = f"{self.public_url}/session/{session.type}/{session.id}/{home}"
        return data

    def logs(self, session: Session) -> str:
        """Container logs so far: empty until the container starts."""
        if "Running" not in session.seen:
            return ""
        start = session.created + self.start_delay
        lines = [
            f"{_iso(start)} standin: session {session.id} ({session.name}) image {session.image}"
        ]
        if session.type == "headless":
            lines.append(
                f"{_iso(start)} + {session.cmd or '<entrypoint>'} {session.args or ''}".rstrip()
            )
            lines += [f"{_iso(start)} env {item}" for item in session.env]
        else:
            lines.append(f"{_iso(start)} Jupyter Server is running at /session/{session.id}/")
        if "Succeeded" in session.seen or "Error" in session.seen:
            code = 1 if session.fails else 0
            lines.append(f"{_iso(start + session.run_seconds)} exit code {code}")
        return "\n".join(lines) + "\n"

    def events(self, session: Session) -> str:
        """Scheduling events, as Skaha returns them (a kubectl-like table)."""
        rows = ["TYPE      REASON             MESSAGE"]
        if session.stuck:
            rows.append(f"Warning   FailedScheduling   {PENDING_REASON}")
        elif "Running" in session.seen:
            rows.append(f"Normal    Scheduled          Successfully assigned {session.id}")
            rows.append(f"Normal    Started            Started container {session.type}")
        return "\n".join(rows) + "\n"

    async def drain(self) -> None:
        """Wait until every queued callback has been delivered (or given up on)."""
        if self._outbox is not None:
            await self._outbox.join()

    def notify(self, session: Session, previous: str | None, when: float) -> None:
        """Queue the callback for ``session``'s change from ``previous`` at ``when``."""
        registration = self.callbacks.get(session.userid)
        if not self.callbacks_enabled or registration is None:
            return
        body = {
            "service": "skaha",
            "id": session.id,
            "status": session.status,
            "previous": previous,
            "time": datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z"),
            "session": self.view(session),
        }
        url, secret = registration
        self.outbox().put_nowait((url, secret, json.dumps(body).encode()))

    def outbox(self) -> asyncio.Queue[tuple[str, str, bytes]]:
        """The queue of callbacks waiting for delivery (in order of the changes)."""
        if self._outbox is None:
            self._outbox = asyncio.Queue()
        return self._outbox


async def deliver(state: SkahaState, http: aiohttp.ClientSession) -> None:
    """Send queued callbacks one at a time, so a session's changes arrive in order."""
    outbox = state.outbox()
    while True:
        url, secret, body = await outbox.get()
        try:
            for attempt in range(state.callback_attempts):
                if attempt:
                    await asyncio.sleep(state.callback_retry_delay * 2 ** (attempt - 1))
                stamp = str(int(time.time()))
                mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
                headers = {
                    "Content-Type": "application/json",
                    "X-Callback-Timestamp": stamp,
                    "X-Callback-Signature": f"sha256={mac.hexdigest()}",
                }
                try:
                    async with http.post(url, data=body, headers=headers) as answer:
                        status = answer.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                state.deliveries.append(Delivery(url, body, status))
                if 200 <= status < 300:
                    break
        finally:
            outbox.task_done()
