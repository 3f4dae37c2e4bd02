"""Our client of CANFAR's Skaha sessions API (``<url>/v1/...``).

Requests go through :class:`~talicada.services._http.Retrying`: 4xx answers are
a :class:`ServiceError` carrying Skaha's message at once, 5xx, 429 and lost
connections are retried with backoff. Creating a session is made idempotent by
name: before any retry the client looks for a session of that name, because
Skaha has no idempotency key and a lost answer may hide a session it did make.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TypeVar

import aiohttp
import msgspec

from talicada.services._http import Retrying, ServiceError, Sleep, TokenFile

__all__ = [
    "SkahaClient",
    "SkahaContext",
    "SkahaImage",
    "SkahaSession",
    "legal",
    "session_type",
]

SERVICE = "skaha"
T = TypeVar("T")


class SkahaContext(msgspec.Struct, frozen=True):
    """What Skaha lets the account ask for: legal core counts and RAM (GB), and defaults."""

    cores: list[int]
    ram: list[int]
    default_cores: int
    default_ram: int
    gpus: list[int] = msgspec.field(default_factory=list)
    max_interactive: int | None = None


class SkahaImage(msgspec.Struct, frozen=True):
    """One image Skaha can launch, and the session types it is labelled for."""

    id: str
    types: list[str] = msgspec.field(default_factory=list)
    digest: str = ""


class SkahaSession(msgspec.Struct, frozen=True):
    """A session as Skaha describes it (fields it leaves out are empty strings).

    ``status`` is one of Pending, Running, Terminating, Succeeded, Error (Skaha
    may add others: callers treat unknown ones as still running).
    """

    id: str
    status: str = ""
    name: str = ""
    type: str = ""
    image: str = ""
    userid: str = ""
    start_time: str = msgspec.field(default="", name="startTime")
    expiry_time: str = msgspec.field(default="", name="expiryTime")
    connect_url: str = msgspec.field(default="", name="connectURL")
    requested_ram: str = msgspec.field(default="", name="requestedRAM")
    requested_cores: str = msgspec.field(default="", name="requestedCPUCores")


class _Resource(msgspec.Struct):
    options: list[int] = msgspec.field(default_factory=list)
    default: int | None = None
    defaultRequest: int | None = None  # noqa: N815 - Skaha's spelling


class _Context(msgspec.Struct):
    cores: _Resource = msgspec.field(default_factory=_Resource)
    memoryGB: _Resource = msgspec.field(default_factory=_Resource)  # noqa: N815
    gpus: _Resource = msgspec.field(default_factory=_Resource)
    maxInteractiveSessions: int | None = None  # noqa: N815


def session_type(image_types: Sequence[str], *, notebook: bool) -> str:
    """``"notebook"`` or ``"headless"``: the Skaha session type for one container.

    ``notebook`` is True when the container must be reachable (it runs a
    jupyter-notebook executable or asks for an access port). An image Skaha
    labels for notebooks but not for headless runs can only start as a
    notebook session, so it becomes one too; everything else runs headless.
    """
    if notebook:
        return "notebook"
    if "notebook" in image_types and "headless" not in image_types:
        return "notebook"
    return "headless"


def legal(value: int | tuple[int, int | None], options: Sequence[int]) -> int | None:
    """The smallest legal option within ``value`` (``min`` or ``(min, max)``; ``max`` None: any).

    None when no option fits: Skaha accepts only the listed values, so a
    request is rounded up to one, never down below what was asked.
    """
    low, high = (value, None) if isinstance(value, int) else value
    fitting = [option for option in options if option >= low and (high is None or option <= high)]
    return min(fitting, default=None)


def _decode(body: bytes, kind: type[T], what: str) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        # A 200 we cannot read is the service's fault, not ours: say what it sent.
        raise ServiceError(SERVICE, 200, f"unreadable {what}: {error}") from None


class SkahaClient:
    """Async client of one Skaha service at ``url`` (e.g. ``https://ws-uv.canfar.net/skaha``).

    ``token`` is re-read on every request, so a rotated token file takes effect
    at once; ``http`` is the caller's session (its timeouts apply). ``attempts``,
    ``base`` and ``sleep`` tune the retries (see :class:`Retrying`).
    """

    def __init__(
        self,
        url: str,
        token: TokenFile | None,
        http: aiohttp.ClientSession,
        *,
        attempts: int = 4,
        base: float = 0.5,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._retrying = Retrying(SERVICE, http, attempts=attempts, base=base, sleep=sleep)

    def _headers(self) -> dict[str, str]:
        return self.token.headers() if self.token is not None else {}

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        _, body, _ = await self._retrying.request(
            "GET", f"{self.url}/v1/{path}", headers=self._headers(), params=params
        )
        return body

    async def context(self) -> SkahaContext:
        """The legal core counts and RAM sizes, with Skaha's defaults."""
        raw = _decode(await self._get("context"), _Context, "context")

        def default(resource: _Resource) -> int:
            chosen = resource.default if resource.default is not None else resource.defaultRequest
            return chosen if chosen is not None else min(resource.options, default=1)

        return SkahaContext(
            cores=sorted(raw.cores.options),
            ram=sorted(raw.memoryGB.options),
            default_cores=default(raw.cores),
            default_ram=default(raw.memoryGB),
            gpus=sorted(raw.gpus.options),
            max_interactive=raw.maxInteractiveSessions,
        )

    async def images(self) -> list[SkahaImage]:
        """Every image the account may launch, with its session types."""
        return _decode(await self._get("image"), list[SkahaImage], "image list")

    async def sessions(self) -> list[SkahaSession]:
        """The account's sessions (one ``GET /v1/session``)."""
        return _decode(await self._get("session"), list[SkahaSession], "session list")

    async def find(self, name: str) -> SkahaSession | None:
        """The account's live session named ``name``, if any.

        Skaha stores names lower-cased, so the match ignores case; a session
        being deleted (Terminating) no longer counts.
        """
        wanted = name.lower()
        for session in await self.sessions():
            if session.name.lower() == wanted and session.status != "Terminating":
                return session
        return None

    async def create(
        self,
        *,
        name: str,
        image: str,
        type: str,  # Skaha's own parameter name
        cores: int,
        ram: int,
        cmd: str | None = None,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Launch a session and return its id; at most one session per ``name``.

        ``name`` must be unique to this attempt (letters, digits and '-'):
        before each retry the client lists the sessions and adopts one of that
        name instead of launching again. ``args`` are joined with spaces, as
        Skaha splits them. Parameters go in the query string, as Skaha documents.
        """
        params: list[tuple[str, str]] = [
            ("name", name),
            ("image", image),
            ("type", type),
            ("cores", str(cores)),
            ("ram", str(ram)),
        ]
        if cmd is not None:
            params.append(("cmd", cmd))
        if args is not None:
            params.append(("args", args if isinstance(args, str) else " ".join(args)))
        params.extend(("env", f"{key}={value}") for key, value in (env or {}).items())
        adopted: list[str] = []

        async def already_there() -> bool:
            # Errors here propagate: retrying blind could launch a second session.
            found = await self.find(name)
            if found is not None:
                adopted.append(found.id)
            return found is not None

        _, body, _ = await self._retrying.request(
            "POST",
            f"{self.url}/v1/session",
            headers=self._headers(),
            params=params,
            before_retry=already_there,
        )
        if adopted:
            return adopted[0]
        session_id = body.decode("utf-8", "replace").strip()
        if not session_id:
            raise ServiceError(SERVICE, 200, "session created but no id returned")
        return session_id

    async def session(self, session_id: str) -> SkahaSession:
        """One session; a :class:`ServiceError` with status 404 once it is gone."""
        return _decode(await self._get(f"session/{session_id}"), SkahaSession, "session")

    async def logs(self, session_id: str) -> str:
        """The session's container logs so far (plain text)."""
        body = await self._get(f"session/{session_id}", {"view": "logs"})
        return body.decode("utf-8", "replace")

    async def events(self, session_id: str) -> str:
        """The session's scheduling events (plain text), e.g. why it is still Pending."""
        body = await self._get(f"session/{session_id}", {"view": "events"})
        return body.decode("utf-8", "replace")

    async def renew(self, session_id: str) -> None:
        """Push the session's expiry time back by Skaha's configured lifetime."""
        await self._retrying.request(
            "POST",
            f"{self.url}/v1/session/{session_id}",
            headers=self._headers(),
            params={"action": "renew"},
        )

    async def delete(self, session_id: str) -> None:
        """Delete the session; one already gone (404) counts as deleted."""
        await self._retrying.request(
            "DELETE",
            f"{self.url}/v1/session/{session_id}",
            headers=self._headers(),
            ok=frozenset({200, 202, 204, 404}),
        )

    async def callbacks_supported(self) -> bool:
        """Whether this Skaha offers our callback facility (``GET /v1/callbacks`` is not 404)."""
        status, _, _ = await self._retrying.request(
            "GET",
            f"{self.url}/v1/callbacks",
            headers=self._headers(),
            ok=frozenset({200, 404}),
        )
        return status == 200

    async def register_callback(self, url: str, secret: str) -> None:
        """Have status changes of the account's sessions POSTed to ``url``, signed with ``secret``.

        Replaces any earlier registration of the account (PUT is idempotent,
        so retrying it is safe).
        """
        await self._retrying.request(
            "PUT",
            f"{self.url}/v1/callbacks",
            headers=self._headers(),
            json={"url": url, "secret": secret},
        )

    async def unregister_callback(self) -> None:
        """Stop the account's callbacks (none registered counts as done)."""
        await self._retrying.request(
            "DELETE",
            f"{self.url}/v1/callbacks",
            headers=self._headers(),
            ok=frozenset({200, 202, 204, 404}),
        )
