"""Our client of the SRCNet data-management API: locate replicas, stage them, follow, release.

What is public and what we assumed
----------------------------------
Public (the ``ska-src-clients`` ``data`` module and the SRCNet astroquery
module call it this way):

* the API root is ``https://data-management.srcnet.skao.int/api`` with the
  version in the path, and every call carries ``Authorization: Bearer <token>``
  (a token exchanged for the ``data-management-api`` audience);
* ``GET /v1/data/locate/{namespace}/{name}`` answers a JSON list with one entry
  per storage element: ``identifier`` (the RSE name),
  ``associated_storage_area_id`` and ``replicas`` (access URLs);
* a staging request names the destination storage area (``to_storage_area_uuid``),
  the data identifiers (``dids``: ``{"namespace", "name"}``), a ``lifetime`` in
  seconds and optionally a ``parent_namespace``; it answers a job id whose
  status can be asked for.

Assumed, because the paths and shapes are not published (the adapter is written
against :class:`DataManagement`, so only this module changes when they are known):

* the request is ``POST /v1/data/stage`` with the fields above in a JSON body
  and answers ``{"job_id": ...}``; we add ``client_request_id`` (a UUID) so a
  retried POST after a lost answer finds the same job rather than a second one,
  and ``callback_url`` when the caller wants a webhook for this job;
* its status is ``GET /v1/data/stage/{job_id}``: ``{"job_id", "state",
  "storage_area", "expires", "items": [{"namespace", "name", "state", "path",
  "reason"}]}``; states are mapped onto ours by :data:`STATE_NAMES` (Rucio rule
  states such as ``OK``/``REPLICATING``/``STUCK`` are understood too);
* ``DELETE /v1/data/stage/{job_id}`` ends a staging early. A service without
  cancel answers 404/405/501: :meth:`SrcnetClient.release` then returns False
  and the staged copies stay until their lifetime lapses, which is why the
  lifetime we ask for must be no longer than the session needs;
* locate entries may carry ``site``, ``size`` and ``checksum``; the real service
  leaves them out (the site comes from the site-capabilities API), so they are
  optional and :func:`nearest` can be given a storage-area → site table instead.

Callbacks are our proposal, the same protocol as the Skaha side: ``GET
/v1/callbacks`` is 200 where the service offers them and 404 where it does
not; ``PUT`` registers ``{"url", "secret"}``, ``DELETE`` removes it. Deliveries
are signed with HMAC-SHA256 over ``f"{timestamp}."`` + body.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from talicada.services._http import Retrying, ServiceError, Sleep, TokenFile

SERVICE = "srcnet"

T = TypeVar("T")

StagingState = Literal["queued", "staging", "done", "failed"]

#: The service's state names (lower-cased) mapped onto ours.
STATE_NAMES: Mapping[str, StagingState] = {
    "queued": "queued",
    "waiting": "queued",
    "submitted": "queued",
    "pending": "queued",
    "staging": "staging",
    "replicating": "staging",
    "active": "staging",
    "stuck": "staging",  # Rucio retries a stuck rule: not final yet
    "done": "done",
    "ok": "done",
    "completed": "done",
    "failed": "failed",
    "error": "failed",
    "suspended": "failed",  # Rucio gave up on it until someone intervenes
}


class Replica(msgspec.Struct, frozen=True, kw_only=True):
    """One copy of a data object: where it lives and how to reach it."""

    rse: str
    storage_area: str
    urls: tuple[str, ...] = ()
    site: str | None = None
    size: int | None = None
    checksum: str | None = None


class StagingItem(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one data object in a staging job; ``path`` once done, ``reason`` if failed."""

    namespace: str
    name: str
    state: StagingState
    path: str | None = None
    reason: str | None = None


class Staging(msgspec.Struct, frozen=True, kw_only=True):
    """A staging job: its overall state and that of each item."""

    job_id: str
    state: StagingState
    items: tuple[StagingItem, ...] = ()
    storage_area: str | None = None
    expires: str | None = None

    @property
    def final(self) -> bool:
        """True once nothing more will change (done or failed)."""
        return self.state in ("done", "failed")

    def paths(self) -> dict[tuple[str, str], str]:
        """``(namespace, name)`` → staged path, for the items that are done."""
        return {(i.namespace, i.name): i.path for i in self.items if i.path and i.state == "done"}


class DataManagement(Protocol):
    """What the broker needs of a data-management service."""

    async def locate(self, namespace: str, name: str) -> list[Replica]:
        """Every replica of ``namespace:name``."""
        ...

    async def stage(
        self,
        items: Sequence[tuple[str, str]],
        *,
        storage_area: str,
        lifetime_seconds: int,
        callback_url: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Ask for ``(namespace, name)`` items in ``storage_area``; the staging job id.

        The same ``request_id`` twice answers the same job (idempotent staging)."""
        ...

    async def status(self, job_id: str) -> Staging:
        """Where the staging job stands."""
        ...

    async def release(self, job_id: str) -> bool:
        """End the staging; False when the service cannot, and the lifetime will lapse."""
        ...


def state_of(name: str) -> StagingState:
    """Our name for the service's state ``name``; an unknown one counts as still staging."""
    return STATE_NAMES.get(name.strip().lower(), "staging")


def nearest(
    replicas: Sequence[Replica],
    storage_area: str,
    sites: Mapping[str, str] | None = None,
    *,
    prefer: Sequence[str] = (),
) -> Replica:
    """The replica nearest to the platform's ``storage_area``.

    In order: a replica in that very storage area; one at the same site (a
    replica's site is its own ``site`` or, failing that, ``sites[storage_area]``);
    the first in the ``prefer`` order (site names, storage areas or RSEs);
    else the first replica. ``sites`` maps storage areas to sites, as the
    site-capabilities API or the configuration tells. Raises ValueError when
    there is no replica at all.
    """
    if not replicas:
        raise ValueError("no replica to choose from")
    table = sites or {}
    for replica in replicas:
        if replica.storage_area == storage_area:
            return replica
    home = table.get(storage_area)
    if home is not None:
        for replica in replicas:
            if (replica.site or table.get(replica.storage_area)) == home:
                return replica
    for wanted in prefer:
        for replica in replicas:
            site = replica.site or table.get(replica.storage_area)
            if wanted in (site, replica.storage_area, replica.rse):
                return replica
    return replicas[0]


class _LocateEntry(msgspec.Struct, kw_only=True):
    identifier: str
    associated_storage_area_id: str = ""
    replicas: list[str] = msgspec.field(default_factory=list)
    site: str | None = None
    size: int | None = None
    checksum: str | None = None


class _WireItem(msgspec.Struct, kw_only=True):
    namespace: str
    name: str
    state: str
    path: str | None = None
    reason: str | None = None


class _WireStaging(msgspec.Struct, kw_only=True):
    job_id: str
    state: str
    items: list[_WireItem] = msgspec.field(default_factory=list)
    storage_area: str | None = None
    expires: str | None = None


class _JobId(msgspec.Struct):
    job_id: str


class SrcnetClient:
    """:class:`DataManagement` over the SRCNet data-management API.

    ``url`` is the API root (``https://data-management.srcnet.skao.int/api``);
    ``token`` the bearer token file (None: no ``Authorization``, for tests);
    ``attempts``, ``base`` and ``sleep`` tune the retries of transient failures.
    """

    def __init__(
        self,
        url: str,
        token: TokenFile | None,
        http: aiohttp.ClientSession,
        *,
        attempts: int = 4,
        base: float = 0.5,
        sleep: Sleep | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        retrying = Retrying(SERVICE, http, attempts=attempts, base=base)
        if sleep is not None:
            retrying.sleep = sleep
        self._http = retrying

    def _headers(self) -> dict[str, str]:
        return self.token.headers() if self.token is not None else {}

    async def _call(
        self, method: str, path: str, *, json: object = None, ok: Iterable[int] = ()
    ) -> tuple[int, bytes]:
        accepted = frozenset({200, 201, 202, 204, *ok})
        status, body, _ = await self._http.request(
            method, self.url + path, headers=self._headers(), json=json, ok=accepted
        )
        return status, body

    async def locate(self, namespace: str, name: str) -> list[Replica]:
        """Every replica of ``namespace:name`` (an unknown object is a ServiceError 404)."""
        # Names are paths within the namespace (``eb_001.prod_001/x.fits``) and
        # the API takes them as such: their slashes stay.
        path = f"/v1/data/locate/{_seg(namespace)}/{quote(name, safe='/')}"
        _, body = await self._call("GET", path)
        entries = _decode(body, list[_LocateEntry])
        return [
            Replica(
                rse=entry.identifier,
                storage_area=entry.associated_storage_area_id,
                urls=tuple(entry.replicas),
                site=entry.site,
                size=entry.size,
                checksum=entry.checksum,
            )
            for entry in entries
        ]

    async def stage(
        self,
        items: Sequence[tuple[str, str]],
        *,
        storage_area: str,
        lifetime_seconds: int,
        callback_url: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Ask for the items in ``storage_area`` for ``lifetime_seconds``; the job id.

        ``request_id`` names the request for the service: the same id again
        answers the job already made (a retry, or a redelivered event after a
        crash), so a caller that derives it from its event never stages twice.
        """
        if not items:
            raise ValueError("nothing to stage")
        if lifetime_seconds <= 0:
            raise ValueError("the lifetime must be positive")
        request: dict[str, object] = {
            "to_storage_area_uuid": storage_area,
            "dids": [{"namespace": ns, "name": name} for ns, name in items],
            "lifetime": lifetime_seconds,
            # The same id on every attempt: a retried POST finds the job it made.
            "client_request_id": request_id or str(uuid.uuid4()),
        }
        if callback_url is not None:
            request["callback_url"] = callback_url
        _, body = await self._call("POST", "/v1/data/stage", json=request)
        return _decode(body, _JobId).job_id

    async def status(self, job_id: str) -> Staging:
        """Where the staging job stands, per job and per item."""
        _, body = await self._call("GET", f"/v1/data/stage/{_seg(job_id)}")
        wire = _decode(body, _WireStaging)
        return Staging(
            job_id=wire.job_id,
            state=state_of(wire.state),
            storage_area=wire.storage_area,
            expires=wire.expires,
            items=tuple(
                StagingItem(
                    namespace=item.namespace,
                    name=item.name,
                    state=state_of(item.state),
                    path=item.path,
                    reason=item.reason,
                )
                for item in wire.items
            ),
        )

    async def release(self, job_id: str) -> bool:
        """End the staging now; False when the service has no cancel (the lifetime lapses).

        A job the service no longer knows is released already: True.
        """
        try:
            await self._call("DELETE", f"/v1/data/stage/{_seg(job_id)}", ok={404})
        except ServiceError as error:
            if error.status in (405, 501):
                return False
            raise
        return True

    async def callbacks_supported(self) -> bool:
        """Whether the service offers signed callbacks (``GET /v1/callbacks`` is not 404)."""
        status, _ = await self._call("GET", "/v1/callbacks", ok={404})
        return status != 404

    async def register_callback(self, url: str, secret: str) -> None:
        """Register (replace) this account's webhook and the secret that signs deliveries."""
        await self._call("PUT", "/v1/callbacks", json={"url": url, "secret": secret})

    async def unregister_callback(self) -> None:
        """Remove this account's webhook (none registered is fine)."""
        await self._call("DELETE", "/v1/callbacks", ok={404})


def _seg(value: str) -> str:
    """``value`` as one path segment: names may hold slashes, the API wants them encoded."""
    return quote(value, safe="")


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        raise ServiceError(SERVICE, 200, f"unexpected answer: {error}") from error
