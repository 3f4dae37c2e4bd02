"""The asyncio client of the broker's HTTP API (README "The API").

Every answer is returned as the model (:mod:`talicada.schema.model`), every
refusal raised as :class:`~talicada.client.errors.BrokerError` with the
broker's messages. ``watch`` follows a session over Server-Sent Events,
resuming after the last event seen when the connection drops, and falls back
to long polling where SSE does not get through (a proxy that buffers, say).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta
from typing import Any, Literal, Self

import aiohttp
import msgspec

from talicada.client import wire
from talicada.client.errors import BrokerError, NoOffers, unreachable
from talicada.client.wire import RequestLike, SessionLog, SessionPage, Transition
from talicada.schema.model import ExecutionSession, OfferSet

#: Where a broker started with ``talicada serve`` listens.
DEFAULT_URL = "http://127.0.0.1:8082"
#: Statuses that mean "SSE does not get through here", not "you asked wrongly".
_NO_SSE = frozenset({405, 406, 501, 502, 504})

Transport = Literal["auto", "sse", "poll"]


def _phase_update(value: str) -> dict[str, str]:
    return {"kind": "uri:enum-value-update", "path": "phase", "value": value}


class AsyncClient:
    """A broker's API for asyncio code; use ``async with AsyncClient(url) as broker``.

    ``url`` defaults to ``TALICADA_URL`` or :data:`DEFAULT_URL`, ``token`` (a
    bearer token) to ``TALICADA_TOKEN``. ``timeout`` bounds every call except
    ``watch`` and long polls, which wait as long as the broker says.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        poll_wait: float = 10.0,
    ) -> None:
        self.url = (url or os.environ.get("TALICADA_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("TALICADA_TOKEN")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self.poll_wait = poll_wait
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        # Created on first use, so the client can be built outside a running loop.
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self._headers)
        return self._http

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | list[tuple[str, str]] | None = None,
        limit_s: float | None = None,
    ) -> Any:
        url = f"{self.url}{path}"
        headers = {"Content-Type": content_type} if body is not None else {}
        limit = aiohttp.ClientTimeout(total=limit_s or self._timeout)
        try:
            # No redirect is followed: the broker's one (303 after DELETE) points at
            # the list of sessions, which nobody asked to read.
            async with self._session().request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=limit,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise unreachable(self.url, error) from error
        try:
            doc = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            doc = {"messages": [{"kind": "urn:talicada:error:client", "message": raw[:300]}]}
        if status >= 400:
            raise BrokerError(status, wire.messages(doc), url=url)
        return doc

    # -- offers -----------------------------------------------------------------

    async def request_offers(self, request: RequestLike) -> OfferSet:
        """Send an execution request; the offer set (``result`` YES with offers, or NO)."""
        body, media = wire.request_body(request)
        return wire.offerset(await self._call("POST", "/requests", body=body, content_type=media))

    async def offerset(self, uuid: str) -> OfferSet:
        """An offer set with each offer's current phase."""
        return wire.offerset(await self._call("GET", f"/offersets/{uuid}"))

    async def update(self, uuid: str, update: dict[str, Any]) -> ExecutionSession:
        """Apply one update document (``uri:enum-value-update`` and friends)."""
        body = msgspec.json.encode(update)
        return wire.session(await self._call("POST", f"/sessions/{uuid}", body=body))

    async def accept(self, uuid: str) -> ExecutionSession:
        """Accept an offer: it becomes a session, its siblings are REJECTED."""
        return await self.update(uuid, _phase_update("ACCEPTED"))

    async def reject(self, uuid: str) -> ExecutionSession:
        """Reject an offer, freeing what it held."""
        return await self.update(uuid, _phase_update("REJECTED"))

    async def cancel(self, uuid: str) -> ExecutionSession:
        """Cancel a session: everything it holds is released."""
        return await self.update(uuid, _phase_update("CANCELLED"))

    async def delete(self, uuid: str) -> None:
        """UWS's DELETE: end a live session (an open offer is rejected, anything else
        cancelled), or forget a finished one (its record is deleted now)."""
        await self._call("DELETE", f"/sessions/{uuid}")

    async def extend(
        self, uuid: str, *, by: timedelta | None = None, to: str | None = None
    ) -> ExecutionSession:
        """Lengthen (or shorten) the available window: ``by`` a delta or ``to`` an ISO 8601
        duration such as ``PT2H``, where the platform's calendar has room (409 otherwise)."""
        if (by is None) == (to is None):
            raise ValueError("give exactly one of by= or to=")
        path = "schedule.available.duration"
        if to is not None:
            update: dict[str, Any] = {"kind": "uri:string-value-update", "value": to}
        else:
            assert by is not None
            seconds = int(by.total_seconds())
            update = {"kind": "uri:integer-delta-update", "delta": seconds, "units": "seconds"}
        return await self.update(uuid, {**update, "path": path})

    async def run(self, request: RequestLike) -> tuple[OfferSet, ExecutionSession]:
        """Request offers and accept the first (the earliest); NoOffers on a NO answer."""
        offers = await self.request_offers(request)
        if offers.result != "YES" or not offers.offers:
            raise NoOffers(offers.meta.messages, offerset=offers.meta.uuid or "")
        uuid = offers.offers[0].meta.uuid
        assert uuid is not None
        return offers, await self.accept(uuid)

    # -- sessions -----------------------------------------------------------------

    async def get(
        self, uuid: str, *, wait: float | None = None, phase: str | None = None
    ) -> ExecutionSession:
        """One session; with ``wait`` (≤ 60 s) it answers once the phase is no longer
        ``phase`` (default: its phase now), or when the wait is over."""
        params: dict[str, str] = {}
        if wait is not None:
            params["wait"] = f"{wait:g}"
            if phase:
                params["phase"] = phase
        timeout = (wait or 0) + self._timeout
        doc = await self._call("GET", f"/sessions/{uuid}", params=params, limit_s=timeout)
        return wire.session(doc)

    async def log(self, uuid: str) -> SessionLog:
        """The session's record: every transition, messages, output and platform logs."""
        return wire.session_log(await self._call("GET", f"/sessions/{uuid}/log"))

    async def list_sessions(
        self,
        *,
        phases: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """One page of the caller's sessions, newest first (instants in ISO 8601)."""
        params = [("limit", str(limit))]
        params += [("phase", ",".join(phases))] if phases else []
        params += [(k, v) for k, v in (("since", since), ("until", until), ("cursor", cursor)) if v]
        return wire.page(await self._call("GET", "/sessions", params=params))

    async def capabilities(self) -> dict[str, Any]:
        """What this broker runs: dialects, kinds, platforms and limits."""
        doc: dict[str, Any] = await self._call("GET", "/capabilities")
        return doc

    async def wait(self, uuid: str, *, transport: Transport = "auto") -> ExecutionSession:
        """Follow the session until it ends; the session in its final phase."""
        async for _ in self.watch(uuid, transport=transport):
            pass
        return await self.get(uuid)

    # -- watching -----------------------------------------------------------------

    async def watch(
        self, uuid: str, *, after: int = -1, transport: Transport = "auto", retries: int = 5
    ) -> AsyncGenerator[Transition, None]:
        """Every transition of the session (its own and its components'), past and
        future, in order, until it ends.

        ``after`` skips history up to that index. Over SSE a dropped connection
        is resumed with ``Last-Event-ID`` (``retries`` times in a row without
        progress); with ``transport="auto"`` a broker path that cannot stream
        falls back to long polls of the phase and reads of the log.
        """
        last = after
        if transport != "poll":
            failures = 0
            while True:
                try:
                    async for item in self._sse(uuid, last):
                        last, failures = item.index, 0
                        yield item
                except _NoStream:
                    if transport == "sse":
                        reason = "the broker's events path does not answer an event stream"
                        raise unreachable(self.url, RuntimeError(reason)) from None
                    break
                except (aiohttp.ClientError, TimeoutError) as error:
                    failures += 1
                    if failures > retries:
                        if transport == "sse":
                            raise unreachable(self.url, error) from error
                        break
                    await asyncio.sleep(min(0.25 * 2**failures, 5.0))
                    continue
                # The stream ended: after the final transition, or cut by something
                # in between (then go on from where it stopped).
                if wire.is_final((await self.get(uuid)).phase):
                    return
        async for item in self._poll(uuid, last):
            yield item

    async def _sse(self, uuid: str, last: int) -> AsyncIterator[Transition]:
        url = f"{self.url}/sessions/{uuid}/events"
        # Accept stays application/json: the broker negotiates its error bodies
        # from it, and answers 406 to text/event-stream.
        headers = {}
        if last >= 0:
            headers["Last-Event-ID"] = str(last)
        # No total limit: a session can run for days. The broker writes a
        # keepalive every 15 s, so a silent minute means the connection is gone.
        limit = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=60)
        async with self._session().get(url, headers=headers, timeout=limit) as response:
            if response.status in _NO_SSE:
                raise _NoStream
            if response.status >= 400:
                doc = await response.read()
                raise BrokerError(response.status, wire.messages(_json(doc)), url=url)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise _NoStream
            event: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    continue  # a keepalive comment
                if line:
                    field, _, value = line.partition(":")
                    event[field] = event.get(field, "") + value.removeprefix(" ")
                    continue
                if "data" in event and event.get("id", "").isdigit():
                    yield wire.transition(int(event["id"]), _json(event["data"].encode()))
                event = {}

    async def _poll(self, uuid: str, last: int) -> AsyncIterator[Transition]:
        """The same transitions from the log, read again whenever the phase moves."""
        while True:
            record = await self.log(uuid)
            for item in record.history[last + 1 :]:
                last = item.index
                yield item
            if wire.is_final(record.session.phase):
                return
            await self.get(uuid, wait=self.poll_wait, phase=record.session.phase)


class _NoStream(Exception):
    """The broker's answer was not an event stream (something in between does not pass it)."""


def _json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"message": raw[:300].decode(errors="replace")}
