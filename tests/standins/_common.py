"""What every stand-in shares: a record of the calls it received, injected faults,
latency, and a ``main`` that serves it on a port for people to try by hand.

Faults are queued per route name: ``faults.add("create", 503, times=2)`` makes
the next two calls of the route named ``create`` answer 503 (``status=0``
drops the connection without an answer, ``delay`` makes the answer late,
``after=True`` lets the route do its work first so only the answer is lost).
Tests assert on :attr:`StandIn.calls`, the exact calls made, in order.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """One request a stand-in received."""

    route: str
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes


@dataclass
class Fault:
    """One injected answer: a status (0: drop the connection), after ``delay`` seconds.

    With ``after`` the real handler runs first and its answer is replaced, which
    is how an answer lost after the service acted is simulated.
    """

    status: int
    delay: float = 0.0
    body: str = "injected fault"
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False


@dataclass
class StandIn:
    """The shared state of one stand-in server: calls, faults and latency."""

    latency: float = 0.0
    calls: list[Call] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)

    def add_fault(self, route: str, status: int, *, times: int = 1, **options: Any) -> None:
        """Answer the next ``times`` calls of ``route`` with ``status`` instead."""
        queue = self.faults.setdefault(route, deque())
        for _ in range(times):
            queue.append(Fault(status, **options))

    def count(self, route: str) -> int:
        """How many calls of ``route`` arrived (faulted ones included)."""
        return sum(1 for call in self.calls if call.route == route)

    def reset_calls(self) -> None:
        """Forget the calls received so far."""
        self.calls.clear()

    def route(self, name: str, handler: Handler) -> Handler:
        """``handler`` recorded as ``name`` and subject to its injected faults."""

        async def recorded(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            query: dict[str, list[str]] = {}
            for key, value in request.query.items():
                query.setdefault(key, []).append(value)
            self.calls.append(Call(name, request.method, request.path, query, body))
            if self.latency:
                await asyncio.sleep(self.latency)
            queue = self.faults.get(name)
            if queue:
                fault = queue.popleft()
                if fault.after:
                    await handler(request)  # the effect happens; its answer is lost
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status == 0:
                    assert request.transport is not None
                    request.transport.close()
                    raise asyncio.CancelledError
                return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
            return await handler(request)

        return recorded


def serve_main(
    name: str,
    build: Callable[[argparse.Namespace], web.Application],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """``python -m tests.standins.<name> --port N``: serve the stand-in until Ctrl-C.

    ``options`` may add the stand-in's own command-line options.
    """
    parser = argparse.ArgumentParser(prog=f"python -m tests.standins.{name}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    if options is not None:
        options(parser)
    args = parser.parse_args()
    web.run_app(build(args), host=args.host, port=args.port)
