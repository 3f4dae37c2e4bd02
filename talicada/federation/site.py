"""The HTTP client of one remote broker (a site), as an aggregator calls it.

Every call carries the caller's identity (:class:`Identity`): either the
client's own ``Authorization`` passed through, or the site's service token
with the client's principal in the header the site trusts. Every call is
bounded by the site's timeout; what went wrong is a :class:`SiteError` whose
reason can be shown to the client (never a stack trace).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from talicada.federation.config import RemotePlatform
from talicada.federation.faults import HEADER as FAULT_HEADER
from talicada.services._http import TokenFile

#: Statuses that mean "this path does not stream events here": follow by long poll.
NO_STREAM = frozenset({405, 406, 501, 502, 504})
#: Seconds an event stream may stay silent; sites send a keepalive every 15 s.
STREAM_SILENCE = 60.0


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a call to a site is for: the client's principal and ``Authorization``
    (an empty principal: the aggregator itself, e.g. reading capabilities)."""

    principal: str
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A site's answer: status, headers and decoded JSON body (``{}`` if none)."""

    status: int
    headers: dict[str, str]
    doc: dict[str, Any]


class SiteError(Exception):
    """A site did not answer usefully: unreachable, too slow, or a 5xx."""

    def __init__(self, site: str, reason: str, *, status: int = 0, delivered: bool = True) -> None:
        self.site = site
        self.reason = reason
        self.status = status
        #: False only when the call certainly never reached the site (no connection).
        self.delivered = delivered
        super().__init__(f"site {site}: {reason}")


class NoStream(Exception):
    """The site's events path did not answer an event stream."""


def _decode(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"message": raw[:300].decode(errors="replace")}
    return doc if isinstance(doc, dict) else {"value": doc}


def first_message(doc: dict[str, Any]) -> str:
    """The first message a site's error document gives, for quoting."""
    items = doc.get("messages")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return str(items[0].get("message") or items[0].get("kind") or "")[:300]
    return str(doc.get("message", ""))[:300]


class Site:
    """One remote broker, reached over ``http`` with a shared connection pool."""

    def __init__(
        self,
        platform: RemotePlatform,
        http: aiohttp.ClientSession,
        *,
        timeout: float,
        principal_header: str,
    ) -> None:
        self.platform = platform
        self.name = platform.name
        self.url = platform.url
        self.timeout = platform.timeout or timeout
        self.http = http
        self.principal_header = principal_header
        self._token = TokenFile(Path(platform.token_file)) if platform.token_file else None

    def headers(self, identity: Identity, fault: str | None = None) -> dict[str, str]:
        """Identity (and injected-fault) headers for a call made for ``identity``."""
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.token()}"
            if identity.principal:  # empty: the aggregator asks for itself
                headers[self.principal_header] = identity.principal
        elif identity.authorization:
            headers["Authorization"] = identity.authorization
        if fault:
            headers[FAULT_HEADER] = fault
        return headers

    async def call(
        self,
        method: str,
        path: str,
        identity: Identity,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        fault: str | None = None,
        wait: float = 0.0,
    ) -> Reply:
        """One call; SiteError when the site cannot be reached, is slow or answers 5xx.

        ``wait`` adds the seconds a long poll may legitimately take to the timeout.
        """
        limit = aiohttp.ClientTimeout(total=self.timeout + wait)
        try:
            headers = self.headers(identity, fault)
            if content_type is not None:
                headers["Content-Type"] = content_type
            async with self.http.request(
                method,
                f"{self.url}{path}",
                data=body,
                headers=headers,
                params=params,
                timeout=limit,
                allow_redirects=False,  # a site's 303 (after DELETE) is its answer
            ) as response:
                raw = await response.read()
                reply = Reply(response.status, dict(response.headers), _decode(raw))
        except TimeoutError:
            raise SiteError(self.name, f"no answer within {self.timeout + wait:g} s") from None
        except aiohttp.ClientConnectorError as error:
            reason = f"unreachable ({error.os_error.strerror or error})"
            raise SiteError(self.name, reason, delivered=False) from None
        except aiohttp.ClientError as error:
            reason = str(error) or type(error).__name__
            raise SiteError(self.name, f"unreachable ({reason})") from None
        except OSError as error:  # the service token file cannot be read
            raise SiteError(self.name, f"cannot read its token: {error.strerror}") from None
        if reply.status >= 500:
            quoted = first_message(reply.doc)
            reason = f"answered HTTP {reply.status}" + (f": {quoted}" if quoted else "")
            raise SiteError(self.name, reason, status=reply.status)
        return reply

    async def events(
        self, uuid: str, identity: Identity, last: int, *, fault: str | None = None
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The session's transitions after ``last`` from the site's event stream.

        NoStream when the site's path does not stream; SiteError on a refusal.
        The stream ends when the site ends it (after the final transition).
        """
        headers = self.headers(identity, fault)
        if last >= 0:
            headers["Last-Event-ID"] = str(last)
        limit = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=STREAM_SILENCE)
        url = f"{self.url}/sessions/{uuid}/events"
        async with self.http.get(url, headers=headers, timeout=limit) as response:
            if response.status in NO_STREAM:
                raise NoStream(response.status)
            if response.status >= 400:
                doc = _decode(await response.read())
                raise SiteError(
                    self.name,
                    f"answered HTTP {response.status}: {first_message(doc)}",
                    status=response.status,
                )
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise NoStream(response.status)
            event: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.startswith(":"):
                    continue  # keepalive
                if line:
                    name, _, value = line.partition(":")
                    event[name] = event.get(name, "") + value.removeprefix(" ")
                    continue
                if "data" in event and event.get("id", "").isdigit():
                    try:
                        item = json.loads(event["data"])
                    except ValueError:
                        item = None
                    if isinstance(item, dict):
                        yield int(event["id"]), item
                event = {}
