"""Failures injected by HTTP header, so tests can make a site bad without changing a body.

``X-Talicada-Fault`` holds a comma-separated list of faults, each a
``;``-separated list of parameters:

- ``delay=S``: start handling the request S seconds late (at most :data:`LONGEST_DELAY`);
- ``late=S``: handle it at once but answer S seconds later (the effect happened, the
  caller may have given up: the ambiguous case);
- ``status=N``: refuse with HTTP N (400–599) and a message saying it was injected;
- ``drop``: close the connection without answering;
- ``path=GLOB`` and ``method=M``: only for requests that match (``fnmatch``);
- ``site=NAME``: not for this broker but for its remote platform NAME, to
  which an aggregator passes the fault on (``site=b/c`` reaches site c behind
  aggregator b).

Example: ``X-Talicada-Fault: delay=3; path=/requests; site=b, status=503; site=c``.
A broker obeys the header only with ``[federation] fault_injection = true``
(test sites); otherwise it ignores it and passes none on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from talicada.broker.http import respond
from talicada.schema import messages as msg

HEADER = "X-Talicada-Fault"
#: The longest injected delay, seconds: a test fault must not tie a worker up for long.
LONGEST_DELAY = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault and the requests it applies to."""

    delay: float = 0.0
    late: float = 0.0
    status: int | None = None
    drop: bool = False
    path: str | None = None
    method: str | None = None
    site: str | None = None

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a ``method`` request for ``path``."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def spelled(self) -> str:
        """The fault as a header value."""
        parts = [f"delay={self.delay:g}"] if self.delay else []
        parts += [f"late={self.late:g}"] if self.late else []
        parts += [f"status={self.status}"] if self.status is not None else []
        parts += ["drop"] if self.drop else []
        for name in ("path", "method", "site"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return "; ".join(parts)


class BadFault(ValueError):
    """A fault header that cannot be read."""


def parse(values: list[str]) -> list[Fault]:
    """The faults in ``X-Talicada-Fault`` header values; BadFault names what is wrong."""
    faults = []
    for value in values:
        for text in value.split(","):
            if text.strip():
                faults.append(_fault(text))
    return faults


def _fault(text: str) -> Fault:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, has_value, value = part.strip().partition("=")
        if not name:
            continue
        if name == "drop" and not has_value:
            fields["drop"] = "1"
        elif name in ("delay", "late", "status", "path", "method", "site") and value.strip():
            fields[name] = value.strip()
        else:
            raise BadFault(f"unknown or empty parameter {part.strip()!r}")
    try:
        delay = float(fields.get("delay", "0"))
        late = float(fields.get("late", "0"))
        status = int(fields["status"]) if "status" in fields else None
    except ValueError as error:
        raise BadFault(str(error)) from None
    if not (0 <= delay <= LONGEST_DELAY and 0 <= late <= LONGEST_DELAY):
        raise BadFault(f"delay and late must be from 0 to {LONGEST_DELAY:g} seconds")
    if status is not None and not 400 <= status <= 599:
        raise BadFault("status must be from 400 to 599")
    return Fault(
        delay=delay,
        late=late,
        status=status,
        drop="drop" in fields,
        path=fields.get("path"),
        method=fields.get("method"),
        site=fields.get("site"),
    )


def for_site(faults: list[Fault], site: str) -> str | None:
    """The header value to send to remote platform ``site``, or None.

    ``site=b/c`` becomes ``site=c`` on the way to ``b``; ``site=b`` becomes a
    fault ``b`` itself obeys.
    """
    passed = []
    for fault in faults:
        if fault.site is None:
            continue
        head, _, rest = fault.site.partition("/")
        if head == site:
            passed.append(dataclasses.replace(fault, site=rest or None))
    return ", ".join(fault.spelled() for fault in passed) or None


def middleware(enabled: bool) -> Middleware:
    """Obey this broker's own faults (those without ``site``) when ``enabled``."""

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        values = request.headers.getall(HEADER, [])
        if not enabled or not values:
            return await handler(request)
        try:
            faults = parse(values)
        except BadFault as error:
            item = msg.make(msg.INVALID_FIELD, path=HEADER, reason=str(error))
            return respond(request, {"messages": [item]}, status=400, root="error")
        mine = [f for f in faults if f.site is None and f.matches(request.method, request.path)]
        for fault in mine:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                if request.transport is not None:
                    request.transport.close()
                # Nothing reaches the client: the connection is already closed.
                return web.Response(status=500)
            if fault.status is not None:
                item = msg.make(
                    msg.INVALID_FIELD, path=HEADER, reason=f"injected failure {fault.status}"
                )
                return respond(request, {"messages": [item]}, status=fault.status, root="error")
        response = await handler(request)
        late = max((fault.late for fault in mine), default=0.0)
        if late:
            await asyncio.sleep(late)
        return response

    return inject
