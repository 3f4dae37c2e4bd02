"""What the service clients share: a token file, an error type, retried requests.

Transient failures (connection errors, timeouts, 429 and 5xx) are retried with
exponential backoff and full jitter, honouring ``Retry-After``; anything else
is a :class:`ServiceError` at once, carrying the service's own message so the
session's record can say what the service said.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

#: Statuses worth retrying: the service is busy or briefly broken.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Longest single wait between two attempts, seconds.
MAX_BACKOFF = 30.0

Sleep = Callable[[float], Awaitable[None]]


class ServiceError(Exception):
    """A service refused or failed a request.

    ``status`` is the HTTP status (0 for a connection error or timeout) and
    ``reason`` the service's own message. ``transient`` is True when retrying
    later might succeed (it had been retried already when this is raised).
    """

    def __init__(self, service: str, status: int, reason: str, *, transient: bool = False) -> None:
        self.service = service
        self.status = status
        self.reason = reason
        self.transient = transient
        where = f"HTTP {status}" if status else "unreachable"
        super().__init__(f"{service} answered {where}: {reason}")


@dataclass
class TokenFile:
    """A bearer token kept in a file, re-read when the file changes (rotation)."""

    path: Path
    _token: str = field(default="", init=False)
    _stamp: tuple[int, int] | None = field(default=None, init=False)

    def token(self) -> str:
        """The token as the file holds it now (stripped of surrounding space)."""
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._token = self.path.read_text(encoding="utf-8").strip()
            self._stamp = stamp
        return self._token

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header carrying the token."""
        return {"Authorization": f"Bearer {self.token()}"}


def backoff_delay(attempt: int, base: float, retry_after: str | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter, or what the service asked."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return random.uniform(0, min(base * 2 ** (attempt - 1), MAX_BACKOFF))  # noqa: S311 - jitter


@dataclass
class Retrying:
    """Sends requests to one service, retrying transient failures.

    ``attempts`` counts the first try; ``base`` seeds the backoff; ``sleep`` is
    a seam so tests need not wait.
    """

    service: str
    http: aiohttp.ClientSession
    attempts: int = 4
    base: float = 0.5
    sleep: Sleep = asyncio.sleep

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        json: Any = None,
        data: Any = None,
        ok: frozenset[int] = frozenset({200, 201, 202, 204}),
        before_retry: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """``(status, body, headers)`` of the first answer in ``ok`` (or a 404 when listed).

        ``before_retry`` runs before each retry; when it returns True the
        request is not sent again (the effect is already there: the caller
        found it), and the last status is returned with an empty body.
        """
        last_status, last_reason = 0, ""
        retry_after: str | None = None
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await self.sleep(backoff_delay(attempt - 1, self.base, retry_after))
                if before_retry is not None and await before_retry():
                    return last_status, b"", {}
            retry_after = None
            try:
                async with self.http.request(
                    method, url, headers=headers, params=params, json=json, data=data
                ) as response:
                    body = await response.read()
                    if response.status in ok:
                        return response.status, body, response.headers
                    reason = _reason(body) or response.reason or ""
                    if response.status not in TRANSIENT_STATUSES:
                        raise ServiceError(self.service, response.status, reason)
                    last_status, last_reason = response.status, reason
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                last_status, last_reason = 0, f"{type(error).__name__}: {error}"
        raise ServiceError(self.service, last_status, last_reason, transient=True)


def _reason(body: bytes) -> str:
    """The service's message: its text, cut to a length a record can keep."""
    text = body.decode("utf-8", "replace").strip()
    return text[:500]
