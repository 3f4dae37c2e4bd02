"""The aggregator: one request to many sites at once, one answer back.

For each request every site is asked concurrently, each within its own
timeout. A site is not asked when its cached capabilities say none of its
platforms could run the request, or when it answered the same request NO
and that answer is still within its TTL. The offers (all, or the best K of
each site) are merged by start; a site that is down, slow or failing adds a
message naming it and never fails the whole answer. Every later call on an
offer goes to the site that made it; accepting one also claims its offer set
here, so two sites can never both run one request, and rejects its siblings
at the other sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter

from talicada.broker import updates
from talicada.broker.render import session_doc
from talicada.broker.service import Broker
from talicada.broker.ttl import no_ttl
from talicada.federation import documents
from talicada.federation.cache import TtlCache, answer_ttl, max_age, request_key
from talicada.federation.capabilities import refusals
from talicada.federation.documents import Doc
from talicada.federation.follow import View, Views
from talicada.federation.index import Index, RemoteOfferSet, RemoteSession
from talicada.federation.site import Identity, Site, SiteError, first_message
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_instant
from talicada.schema.kinds import Dialect
from talicada.schema.messages import Conflict, MessageItem, NotFound, RequestInvalid
from talicada.schema.model import AnyUpdate
from talicada.schema.validation import ValidRequest
from talicada.settings import Settings

log = structlog.get_logger("talicada.federation")

Clock = Callable[[], datetime]

_REJECT = msgspec.json.encode(
    {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
)


class SiteUnavailable(RequestInvalid):
    """The site that owns a session did not answer (503: try again).

    ``delivered`` is False when the call certainly never reached the site.
    """

    status = 503

    def __init__(self, messages: list[MessageItem], *, delivered: bool = True) -> None:
        super().__init__(messages)
        self.delivered = delivered


def relayed(status: int, messages: list[MessageItem]) -> RequestInvalid:
    """A site's refusal passed on to the client with the site's own status."""
    error = RequestInvalid(messages)
    error.status = status
    return error


@dataclass(frozen=True, slots=True)
class SiteAnswer:
    """What one site said to one request (or what is known of it without asking)."""

    site: str
    offers: list[Doc] = field(default_factory=list)
    messages: list[MessageItem] = field(default_factory=list)
    #: Seconds a NO stays true (None: the site did not say).
    ttl: float | None = None
    offerset: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A merged offer set: its record and its offers (documents in the client's dialect)."""

    record: RemoteOfferSet
    offers: list[Doc]
    #: Whole seconds the answer stays true from now.
    ttl: int


def from_site(site: str, items: list[Any]) -> list[MessageItem]:
    """A site's messages, each naming the site: ``platform p`` becomes ``platform site/p``."""
    out = []
    for item in items:
        try:
            message = msgspec.convert(item, MessageItem)
        except msgspec.ValidationError:
            continue
        values = dict(message.values)
        if "platform" in values:
            values["platform"] = f"{site}/{values['platform']}"
            try:
                text = message.template.format_map(values)
            except (KeyError, ValueError, IndexError):
                text = f"site {site}: {message.message}"
        else:
            values["site"] = site
            text = f"site {site}: {message.message}"
        out.append(msgspec.structs.replace(message, values=values, message=text))
    return out


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


class Aggregator:
    """Fans requests out to the remote platforms and forwards calls on their offers.

    ``broker`` serves this broker's own platforms, if it has any, in the same
    merged answers. ``clock`` is the broker's clock (tests move it).
    """

    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        index: Index,
        http: aiohttp.ClientSession,
        *,
        clock: Clock,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.federation = settings.federation
        self.broker = broker
        self.index = index
        self.clock = clock
        self.sites = {
            remote.name: Site(
                remote,
                http,
                timeout=self.federation.timeout,
                principal_header=self.federation.principal_header,
            )
            for remote in settings.remote_platforms
        }
        self.capabilities: TtlCache[dict[str, Any]] = TtlCache(clock)
        self.negatives: TtlCache[SiteAnswer] = TtlCache(clock)
        self.views = Views(self.federation.follow_limit)
        self._fetching: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.calls = Counter(
            "talicada_federation_site_requests",
            "Requests for offers, by site and what became of them (offers, no, "
            "skipped-capabilities, skipped-cached, refused, unavailable).",
            ["site", "outcome"],
            registry=registry,
        )

    async def close(self) -> None:
        """Stop following sessions and finish background calls."""
        await self.views.close()
        for task in list(self._fetching.values()):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=5)

    # -- capabilities ----------------------------------------------------------

    async def site_capabilities(self, site: Site) -> dict[str, Any] | None:
        """The site's capabilities, from the cache or asked once for all callers.

        None when the site has no such endpoint; SiteError when it cannot be reached.
        """
        cached = self.capabilities.get(site.name)
        if cached is not None:
            return cached
        task = self._fetching.get(site.name)
        if task is None:
            task = asyncio.create_task(self._fetch_capabilities(site))
            self._fetching[site.name] = task
            task.add_done_callback(lambda _: self._fetching.pop(site.name, None))
        # Shielded: one caller's timeout must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    async def _fetch_capabilities(self, site: Site) -> dict[str, Any] | None:
        reply = await site.call("GET", "/capabilities", Identity(principal=""))
        # 303 is a site's answer to DELETE (see the list): done, nothing to relay.
        if reply.status not in (200, 303):
            return None
        ttl = max_age(reply.headers)
        longest = self.federation.capabilities_ttl
        self.capabilities.put(
            site.name, reply.doc, min(ttl, longest) if ttl is not None else longest
        )
        return reply.doc

    async def remote_capabilities(self) -> dict[str, dict[str, Any] | None]:
        """Every site's capabilities (None for a site that does not answer in time)."""

        async def one(site: Site) -> dict[str, Any] | None:
            try:
                async with asyncio.timeout(site.timeout):
                    return await self.site_capabilities(site)
            except (SiteError, TimeoutError):
                return None

        found = await asyncio.gather(*(one(site) for site in self.sites.values()))
        return dict(zip(self.sites, found, strict=True))

    # -- offers ----------------------------------------------------------------

    async def request(
        self,
        valid: ValidRequest,
        body: bytes,
        content_type: str,
        identity: Identity,
        faults: Callable[[str], str | None],
    ) -> Answer:
        """Ask every site (and this broker's own platforms) at once; the merged answer."""
        now = self.clock()
        asks = [
            self._ask(site, valid, body, content_type, identity, faults(site.name))
            for site in self.sites.values()
        ]
        answers: list[SiteAnswer] = list(await asyncio.gather(*asks))
        local_offerset = None
        if self.settings.platforms:
            view = await self.broker.request(valid, identity.principal)
            local_offerset = view.record.uuid
            answers.append(
                SiteAnswer(
                    site="",
                    offers=[session_doc(offer, "") for offer in view.offers],
                    messages=view.record.messages,
                    ttl=no_ttl(view.record.messages, self.settings.answer_ttl),
                    offerset=view.record.uuid,
                )
            )
        return await self._merge(valid, answers, identity, now, local_offerset)

    async def _ask(
        self,
        site: Site,
        valid: ValidRequest,
        body: bytes,
        content_type: str,
        identity: Identity,
        fault: str | None,
    ) -> SiteAnswer:
        key = request_key(site.name, identity.principal, content_type, body, fault or "")
        try:
            async with asyncio.timeout(site.timeout):
                capabilities = await self.site_capabilities(site)
                if capabilities is not None:
                    reasons = refusals(capabilities, site.name, valid)
                    if reasons:
                        self.calls.labels(site.name, "skipped-capabilities").inc()
                        ttl = self.capabilities.remaining(site.name)
                        return SiteAnswer(site.name, messages=reasons, ttl=ttl)
                cached = self.negatives.get(key)
                if cached is not None:
                    self.calls.labels(site.name, "skipped-cached").inc()
                    return replace(cached, ttl=self.negatives.remaining(key))
                reply = await site.call(
                    "POST",
                    "/requests",
                    identity,
                    body=body,
                    content_type=content_type,
                    fault=fault,
                )
        except TimeoutError:
            return self._unavailable(site, f"no answer within {site.timeout:g} s")
        except SiteError as error:
            return self._unavailable(site, error.reason)
        # 303 is a site's answer to DELETE (see the list): done, nothing to relay.
        if reply.status not in (200, 303):
            self.calls.labels(site.name, "refused").inc()
            reason = f"HTTP {reply.status}: {first_message(reply.doc)}"
            return SiteAnswer(  # ttl 0: a refusal of this kind is no answer to reuse
                site.name,
                messages=[msg.make(msg.SITE_REFUSES, site=site.name, reason=reason)],
                ttl=0.0,
                failed=True,
            )
        dialect = valid.dialect
        doc = reply.doc
        offers = [offer for offer in doc.get("offers") or [] if isinstance(offer, dict)]
        answer = SiteAnswer(
            site.name,
            offers=offers,
            messages=from_site(site.name, documents.messages_of(doc, dialect)),
            ttl=answer_ttl(doc, reply.headers),
            offerset=documents.uuid_of(doc, dialect),
        )
        if offers and doc.get("result") == "YES":
            self.calls.labels(site.name, "offers").inc()
            return answer
        self.calls.labels(site.name, "no").inc()
        if answer.ttl:
            # The same request gets the same NO until then: do not ask again.
            self.negatives.put(key, replace(answer, offerset=None), answer.ttl)
        return answer

    def _unavailable(self, site: Site, reason: str) -> SiteAnswer:
        self.calls.labels(site.name, "unavailable").inc()
        log.warning("site.unavailable", site=site.name, reason=reason)
        item = msg.make(msg.SITE_UNAVAILABLE, site=site.name, reason=reason)
        # Like a platform whose service does not answer: true only briefly.
        ttl = self.settings.answer_ttl.capacity
        return SiteAnswer(site.name, messages=[item], ttl=ttl, failed=True)

    async def _merge(
        self,
        valid: ValidRequest,
        answers: list[SiteAnswer],
        identity: Identity,
        now: datetime,
        local_offerset: str | None,
    ) -> Answer:
        dialect = valid.dialect
        offerset = self.broker.new_id()
        kept: list[tuple[str, Doc]] = []
        dropped: list[tuple[str, str]] = []
        for answer in answers:
            remote = self.sites.get(answer.site)
            best = self.federation.offers_per_site
            if remote is not None and remote.platform.offers is not None:
                best = remote.platform.offers
            for position, offer in enumerate(answer.offers):
                uuid = documents.uuid_of(offer, dialect)
                if uuid is None:
                    continue
                if best and position >= best and answer.site:
                    dropped.append((answer.site, uuid))
                else:
                    kept.append((answer.site, offer))
        records = [
            RemoteSession(
                uuid=documents.uuid_of(offer, dialect) or "",
                site=site or None,
                offerset=offerset,
                owner=identity.principal,
                dialect=dialect.value,
            )
            for site, offer in kept
        ]
        added = await self.index.add_sessions(records)
        offers = []
        for (owner, offer), fresh in zip(kept, added, strict=True):
            if fresh:
                offers.append((owner, offer))
            else:  # a uuid this aggregator already routes elsewhere: never shadow it
                log.warning("offer.duplicate", site=owner, offer=documents.uuid_of(offer, dialect))
                dropped.append((owner, documents.uuid_of(offer, dialect) or ""))
        far = now + timedelta(days=3650)
        offers.sort(key=lambda pair: documents.available_start(pair[1]) or far)
        if dropped:
            self._spawn(self._reject(dropped, identity))
        yes = bool(offers)
        messages = [m for a in answers if a.failed for m in a.messages]
        if not yes:
            messages = [m for a in answers for m in a.messages]
        if yes:
            expiries = [documents.expires_of(offer) for _, offer in offers]
            expires = min((e for e in expiries if e is not None), default=now)
            ttl = max(0, math.floor((expires - now).total_seconds()))
        else:
            ttl = math.floor(min((a.ttl or 0.0 for a in answers), default=0.0))
            expires = now + timedelta(seconds=ttl)
        record = RemoteOfferSet(
            uuid=offerset,
            owner=identity.principal,
            dialect=dialect.value,
            created=_ms(now),
            expires=_ms(expires),
            result="YES" if yes else "NO",
            offers=[documents.uuid_of(offer, dialect) or "" for _, offer in offers],
            messages=messages,
            sites={a.site: a.offerset for a in answers if a.site and a.offerset},
            local=local_offerset,
            ttl=float(ttl) if not yes else 0.0,
        )
        await self.index.put_offerset(record)
        log.info(
            "offerset.merged",
            offerset=offerset,
            result=record.result,
            offers=len(offers),
            sites={a.site or "local": len(a.offers) for a in answers},
        )
        return Answer(record, [offer for _, offer in offers], ttl)

    async def offerset(self, uuid: str, identity: Identity) -> Answer | None:
        """A merged offer set with each offer's phase now (None: not one of ours)."""
        record = await self.index.offerset(uuid)
        if record is None:
            return None
        if record.owner != identity.principal:
            raise NotFound([msg.make(msg.NOT_FOUND, what="offer set", uuid=uuid)])
        dialect = Dialect(record.dialect)
        wanted = set(record.offers)
        found: dict[str, Doc] = {}
        messages = list(record.messages)

        async def read(site_name: str, remote: str) -> None:
            site = self.sites.get(site_name)
            if site is None:
                return
            try:
                reply = await site.call("GET", f"/offersets/{remote}", identity)
            except SiteError as error:
                messages.append(msg.make(msg.SITE_UNAVAILABLE, site=site_name, reason=error.reason))
                return
            for offer in reply.doc.get("offers") or []:
                if isinstance(offer, dict) and documents.uuid_of(offer, dialect) in wanted:
                    found[documents.uuid_of(offer, dialect) or ""] = offer

        await asyncio.gather(*(read(site, remote) for site, remote in record.sites.items()))
        if record.local is not None:
            view = await self.broker.offerset(record.local, identity.principal)
            for live in view.offers:
                if live.record.uuid in wanted:
                    found[live.record.uuid] = session_doc(live, "")
        now = self.clock()
        if record.result == "YES":
            ttl = max(0, math.floor((record.expires - _ms(now)) / 1000))
        else:
            ttl = max(0, math.floor(record.created / 1000 + record.ttl - now.timestamp()))
        record = msgspec.structs.replace(record, messages=messages)
        return Answer(record, [found[u] for u in record.offers if u in found], ttl)

    # -- sessions --------------------------------------------------------------

    async def owned(self, uuid: str, identity: Identity) -> RemoteSession | None:
        """The record of an offer this aggregator handed out (None: not one of ours)."""
        record = await self.index.session(uuid)
        if record is None:
            return None
        if record.owner != identity.principal:
            raise NotFound([msg.make(msg.NOT_FOUND, what="session", uuid=uuid)])
        return record

    def site_of(self, record: RemoteSession) -> Site:
        """The site that owns ``record`` (SiteUnavailable when it is no longer configured)."""
        site = self.sites.get(record.site or "")
        if site is None:
            raise SiteUnavailable(
                [msg.make(msg.SITE_UNAVAILABLE, site=record.site, reason="no longer configured")]
            )
        return site

    async def forward(
        self,
        record: RemoteSession,
        method: str,
        path: str,
        identity: Identity,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> Doc:
        """One call on ``record``'s site; its refusal relayed, its absence a 503."""
        site = self.site_of(record)
        wait = float(params.get("wait", 0)) if params else 0.0
        try:
            reply = await site.call(
                method,
                path,
                identity,
                body=body,
                content_type=content_type,
                params=params,
                fault=fault,
                wait=wait,
            )
        except SiteError as error:
            item = msg.make(msg.SITE_UNAVAILABLE, site=site.name, reason=error.reason)
            raise SiteUnavailable([item], delivered=error.delivered) from None
        # 303 is a site's answer to DELETE (see the list): done, nothing to relay.
        if reply.status not in (200, 303):
            items = from_site(site.name, reply.doc.get("messages") or [])
            raise relayed(
                reply.status,
                items
                or [msg.make(msg.SITE_REFUSES, site=site.name, reason=f"HTTP {reply.status}")],
            )
        return reply.doc

    async def update(
        self,
        record: RemoteSession,
        update: AnyUpdate,
        body: bytes,
        content_type: str,
        identity: Identity,
        fault: str | None,
    ) -> Doc:
        """Apply a client's update at the site that owns the offer."""
        intent = updates.interpret(update)  # refuses what no broker would accept
        accepting = isinstance(intent, updates.PhaseChange) and intent.target == "ACCEPTED"
        if accepting:
            winner = await self.index.claim(record.offerset, record.uuid)
            if winner != record.uuid:
                raise Conflict(
                    [msg.make(msg.OFFER_TAKEN, offerset=record.offerset, accepted=winner)]
                )
        try:
            if record.site is None:
                live = await self.broker.update(record.uuid, identity.principal, update)
                doc = session_doc(live, "")
            else:
                path = f"/sessions/{record.uuid}"
                doc = await self.forward(
                    record,
                    "POST",
                    path,
                    identity,
                    body=body,
                    content_type=content_type,
                    fault=fault,
                )
        except SiteUnavailable as error:
            # Unless the call never got there, the site may have accepted: the claim
            # stays (a retry of the same accept may repeat it), so no sibling can also run.
            if accepting and not error.delivered:
                await self.index.unclaim(record.offerset, record.uuid)
            raise
        except RequestInvalid:
            if accepting:
                await self.index.unclaim(record.offerset, record.uuid)
            raise
        if accepting:
            self._spawn(self._reject_siblings(record, identity))
            if record.site is not None:
                self.views.follow(record.uuid, self.site_of(record), identity, fault)
        return doc

    def view(
        self, record: RemoteSession, identity: Identity, fault: str | None = None
    ) -> View | None:
        """The followed view of a remote session (None: this replica follows too many)."""
        return self.views.follow(record.uuid, self.site_of(record), identity, fault)

    # -- background ------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("federation.background-failed", error=repr(finished.exception()))

        task.add_done_callback(done)

    async def _reject(self, offers: list[tuple[str, str]], identity: Identity) -> None:
        """Reject offers no client will see, so their sites free what they hold."""
        for site_name, uuid in offers:
            site = self.sites.get(site_name)
            if site is None:
                continue
            try:
                await site.call(
                    "POST",
                    f"/sessions/{uuid}",
                    identity,
                    body=_REJECT,
                    content_type="application/json",
                )
            except SiteError as error:
                # The offer expires on its own; only its hold lasts a little longer.
                log.warning("offer.reject-failed", site=site_name, offer=uuid, reason=error.reason)

    async def _reject_siblings(self, accepted: RemoteSession, identity: Identity) -> None:
        offerset = await self.index.offerset(accepted.offerset)
        if offerset is None:
            return
        remote: list[tuple[str, str]] = []
        for uuid in offerset.offers:
            if uuid == accepted.uuid:
                continue
            sibling = await self.index.session(uuid)
            # The accepting site rejects its own siblings.
            if sibling is None or sibling.site == accepted.site:
                continue
            if sibling.site is None:
                with contextlib.suppress(RequestInvalid):  # already final
                    await self.broker.update_phase(uuid, identity.principal, "REJECTED", "sibling")
            else:
                remote.append((sibling.site, uuid))
        await self._reject(remote, identity)


def now_text(clock: Clock) -> str:
    """The clock's time as this broker writes instants."""
    return format_instant(clock())
