"""A stand-in of the SRCNet data-management API: locate, staging jobs, release, callbacks.

The paths and shapes are those :mod:`talicada.services.srcnet` documents (what
is public, and what it assumes). Tests configure a :class:`SrcnetStandIn`:

* ``add_object(namespace, name, replicas=[...], size=, checksum=)`` fills the
  catalogue that ``GET /v1/data/locate/{namespace}/{name}`` answers from;
* ``queued_for`` and ``staging_for`` are the seconds a job spends queued and
  staging; ``failures[(namespace, name)] = reason`` makes that item fail;
* ``cancel_supported = False`` makes ``DELETE`` answer 405, as a service
  without cancel would; ``token`` is the bearer token it insists on (None: any);
* ``callbacks_enabled = False`` makes ``/v1/callbacks`` 404, as a service
  without them would.

Then they read ``calls`` (routes ``locate``, ``stage``, ``status``,
``release``, ``callbacks``), ``jobs``, ``released``, ``lapsed`` and
``deliveries`` (every callback attempt and its answer). By hand:
``python -m tests.standins.srcnet --port 8081`` serves a small catalogue with
the token ``demo-token``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins._common import Handler, StandIn, serve_main


@dataclass
class Copy:
    """One replica in the catalogue: its RSE, storage area and (optionally) site."""

    rse: str
    storage_area: str
    site: str | None = None
    url: str | None = None


@dataclass
class DataObject:
    """A catalogue entry."""

    replicas: list[Copy]
    size: int = 1024
    checksum: str = "adler32:00000001"


@dataclass
class Job:
    """A staging job as the stand-in keeps it."""

    job_id: str
    account: str
    storage_area: str
    lifetime: int
    expires: datetime
    items: list[dict[str, Any]]
    state: str = "queued"
    callback_url: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The job as ``GET /v1/data/stage/{job_id}`` answers it."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "storage_area": self.storage_area,
            "lifetime": self.lifetime,
            "expires": _iso(self.expires),
            "items": [dict(item) for item in self.items],
        }


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a callback: where, what, and the status it got (0: none)."""

    url: str
    payload: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class SrcnetStandIn(StandIn):
    """State and behaviour of the data-management stand-in."""

    token: str | None = "srcnet-token"
    catalogue: dict[tuple[str, str], DataObject] = field(default_factory=dict)
    queued_for: float = 0.0
    staging_for: float = 0.0
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)
    cancel_supported: bool = True
    callbacks_enabled: bool = True
    callback_attempts: int = 3
    callback_backoff: float = 0.05
    registrations: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    lapsed: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    _requests: dict[str, str] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _chains: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _http: aiohttp.ClientSession | None = None

    def add_object(
        self,
        namespace: str,
        name: str,
        replicas: list[Copy],
        *,
        size: int = 1024,
        checksum: str = "adler32:00000001",
    ) -> None:
        """Put ``namespace:name`` in the catalogue with these replicas."""
        self.catalogue[(namespace, name)] = DataObject(replicas, size, checksum)

    def staged_path(self, storage_area: str, namespace: str, name: str) -> str:
        """Where a staged item lands: the area's root (``roots``) / namespace / name."""
        root = self.roots.get(storage_area, f"/staging/{storage_area}")
        return f"{root}/{namespace}/{name}"

    async def settled(self, within: float = 5.0) -> None:
        """Wait until every job has stopped moving and every callback is delivered."""
        async with asyncio.timeout(within):
            while pending := [*self._tasks.values(), *self._chains.values()]:
                await asyncio.gather(*pending, return_exceptions=True)
                for store in (self._tasks, self._chains):
                    for key in [k for k, t in store.items() if t.done()]:
                        del store[key]

    # -- helpers -------------------------------------------------------------

    def _account(self, request: web.Request) -> str:
        """The caller's account (its token), or raise 401 as the service would."""
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if self.token is not None and given != self.token:
            raise _error(401, "a valid bearer token is required", WWW_AUTHENTICATE)
        return given or "anonymous"

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise _error(404, f"staging request {job_id} not found")
        if datetime.now(UTC) >= job.expires:
            # The lifetime lapsed: the staged copies are gone, and so is the job.
            self._forget(job_id)
            self.lapsed.append(job_id)
            raise _error(404, f"staging request {job_id} has expired")
        return job

    def _forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def _progress(self, job: Job) -> None:
        """Queued → staging → done, or failed when an item is configured to fail."""
        await asyncio.sleep(self.queued_for)
        self._move(job, "staging")
        for item in job.items:
            item["state"] = "staging"
        await asyncio.sleep(self.staging_for)
        for item in job.items:
            reason = self.failures.get((item["namespace"], item["name"]))
            if reason is None:
                item["state"] = "done"
                item["path"] = self.staged_path(job.storage_area, item["namespace"], item["name"])
            else:
                item["state"], item["reason"] = "failed", reason
        failed = any(item["state"] == "failed" for item in job.items)
        self._move(job, "failed" if failed else "done")

    def _move(self, job: Job, state: str | None, previous: str | None = None) -> None:
        """Record a state change and send its callback, after those before it."""
        if state is not None:
            previous, job.state = job.state, state
        registration = self.registrations.get(job.account)
        if not self.callbacks_enabled or registration is None:
            return
        payload = {
            "service": "srcnet",
            "id": job.job_id,
            "status": job.state,
            "previous": previous,
            "time": _iso(datetime.now(UTC)),
            "details": job.as_json(),
        }
        url = job.callback_url or registration["url"]
        before = self._chains.get(job.job_id)
        self._chains[job.job_id] = asyncio.create_task(
            self._deliver(before, url, registration["secret"], payload)
        )

    async def _deliver(
        self, before: asyncio.Task[None] | None, url: str, secret: str, payload: dict[str, Any]
    ) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)  # keep the order of changes
        body = json.dumps(payload).encode()
        for attempt in range(self.callback_attempts):
            headers = sign(secret, body, int(time.time()))
            headers["Content-Type"] = "application/json"
            status = 0
            try:
                assert self._http is not None
                async with self._http.post(url, data=body, headers=headers) as answer:
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.deliveries.append(Delivery(url, payload, headers, body, status))
            if 200 <= status < 300:
                return
            await asyncio.sleep(self.callback_backoff * 2**attempt)

    # -- handlers ------------------------------------------------------------

    async def locate(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/data/locate/{namespace}/{name}``: one entry per replica."""
        self._account(request)
        key = (request.match_info["namespace"], request.match_info["name"])
        found = self.catalogue.get(key)
        if found is None:
            raise _error(404, f"data identifier {key[0]}:{key[1]} not found")
        return web.json_response(
            [
                {
                    "identifier": copy.rse,
                    "associated_storage_area_id": copy.storage_area,
                    "replicas": [copy.url or f"davs://{copy.rse.lower()}.example/{key[1]}"],
                    "site": copy.site,
                    "size": found.size,
                    "checksum": found.checksum,
                }
                for copy in found.replicas
            ]
        )

    async def stage(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/data/stage``: a new job (or the one this client request made already)."""
        account = self._account(request)
        try:
            wanted = await request.json()
            area, lifetime = str(wanted["to_storage_area_uuid"]), int(wanted["lifetime"])
            dids = [(str(d["namespace"]), str(d["name"])) for d in wanted["dids"]]
        except (ValueError, KeyError, TypeError) as error:
            raise _error(400, f"malformed staging request: {error!r}") from error
        if lifetime <= 0 or not dids:
            raise _error(400, "a staging request needs items and a positive lifetime")
        client_id = wanted.get("client_request_id")
        if client_id and client_id in self._requests:
            return web.json_response({"job_id": self._requests[client_id]})
        for namespace, name in dids:
            if (namespace, name) not in self.catalogue:
                raise _error(404, f"data identifier {namespace}:{name} not found")
        job = Job(
            job_id=uuid.uuid4().hex,
            account=account,
            storage_area=area,
            lifetime=lifetime,
            expires=datetime.now(UTC) + timedelta(seconds=lifetime),
            items=[{"namespace": ns, "name": n, "state": "queued"} for ns, n in dids],
            callback_url=wanted.get("callback_url"),
        )
        self.jobs[job.job_id] = job
        if client_id:
            self._requests[client_id] = job.job_id
        self._move(job, None)  # the first change: from nothing to queued
        self._tasks[job.job_id] = asyncio.create_task(self._progress(job))
        return web.json_response({"job_id": job.job_id}, status=202)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/data/stage/{job_id}``."""
        self._account(request)
        return web.json_response(self._job(request.match_info["job_id"]).as_json())

    async def release(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /v1/data/stage/{job_id}``: 204, or 405 when cancel is switched off."""
        self._account(request)
        job = self._job(request.match_info["job_id"])
        if not self.cancel_supported:
            raise _error(
                405, "staging requests cannot be cancelled: they lapse with their lifetime"
            )
        self._forget(job.job_id)
        self.released.append(job.job_id)
        return web.Response(status=204)

    async def callbacks(self, request: web.Request) -> web.StreamResponse:
        """``GET``/``PUT``/``DELETE /v1/callbacks``: 404 throughout when switched off."""
        account = self._account(request)
        if not self.callbacks_enabled:
            raise _error(404, "not found")
        if request.method == "GET":
            mine = self.registrations.get(account)
            return web.json_response([] if mine is None else [{"url": mine["url"]}])
        if request.method == "DELETE":
            if self.registrations.pop(account, None) is None:
                raise _error(404, "no callback registered")
            return web.Response(status=204)
        try:
            wanted = await request.json()
            url, secret = str(wanted["url"]), str(wanted["secret"])
        except (ValueError, KeyError, TypeError) as error:
            raise _error(400, f"malformed registration: {error!r}") from error
        if not url.startswith(("http://", "https://")) or not secret:
            raise _error(400, "a registration needs an http(s) url and a secret")
        self.registrations[account] = {"url": url, "secret": secret}
        return web.json_response({"url": url})


WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="srcnet"'}


def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The callback headers: timestamp and ``sha256=`` HMAC of ``f"{timestamp}."`` + body."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Callback-Timestamp": str(timestamp),
        "X-Callback-Signature": f"sha256={mac.hexdigest()}",
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    """An answer shaped as the SRCNet (FastAPI) services shape theirs: ``{"detail": ...}``."""
    # aiohttp takes an exception's status from its class: make one for this status.
    kind = type(f"Http{status}", (web.HTTPError,), {"status_code": status})
    error: web.HTTPException = kind(
        text=json.dumps({"detail": detail}), content_type="application/json", headers=headers
    )
    return error


def build_app(standin: SrcnetStandIn, prefix: str = "/api") -> web.Application:
    """The aiohttp application serving ``standin`` under ``prefix`` (the real API's root)."""
    app = web.Application()

    async def open_http(app: web.Application) -> None:
        standin._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close(app: web.Application) -> None:
        for task in [*standin._tasks.values(), *standin._chains.values()]:
            task.cancel()
        await asyncio.gather(
            *standin._tasks.values(), *standin._chains.values(), return_exceptions=True
        )
        if standin._http is not None:
            await standin._http.close()

    app.on_startup.append(open_http)
    app.on_cleanup.append(close)

    def add(method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, prefix + path, handler)

    add("GET", "/v1/data/locate/{namespace}/{name:.+}", standin.route("locate", standin.locate))
    add("POST", "/v1/data/stage", standin.route("stage", standin.stage))
    add("GET", "/v1/data/stage/{job_id}", standin.route("status", standin.status))
    add("DELETE", "/v1/data/stage/{job_id}", standin.route("release", standin.release))
    for method in ("GET", "PUT", "DELETE"):
        add(method, "/v1/callbacks", standin.route("callbacks", standin.callbacks))
    return app


def _demo(args: argparse.Namespace) -> web.Application:
    standin = SrcnetStandIn(latency=args.latency, token="demo-token", queued_for=2, staging_for=5)
    standin.add_object(
        "testing",
        "PTF10tce.fits",
        [Copy("STFC_STORM", "sa-uk-1", "UKSRC"), Copy("SPSRC_STORM", "sa-es-1", "SPSRC")],
    )
    # The seed request's two items, with a replica in the demo platform's area.
    for name in ("zrq-test-20250509-082506", "zrq-test-20250509-094501"):
        standin.add_object(
            "testing",
            name,
            [Copy("SPSRC_STORM", "sa-es-1", "SPSRC"), Copy("CANFAR_RSE", "sa-canfar", "CANFAR")],
        )
    standin.failures[("testing", "broken.fits")] = "no replica is reachable"
    standin.add_object("testing", "broken.fits", [Copy("STFC_STORM", "sa-uk-1", "UKSRC")])
    return build_app(standin)


if __name__ == "__main__":
    serve_main("srcnet", _demo)
