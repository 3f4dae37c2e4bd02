"""The HTTP access log: one line per request, in the same JSON as every other line.

aiohttp writes the access log after the response is sent, outside the
request's bound context, so the line names the session itself.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from talicada.broker.http import subject


class AccessLog(AbstractAccessLogger):
    """``http.access`` with method, path, status, duration and the session or offer set."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one line about a request just answered."""
        about = subject(request) if isinstance(request, web.Request) else {}
        self.logger.info(
            "http.access",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "remote": request.remote,
                **about,
            },
        )
