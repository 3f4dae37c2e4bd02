"""Stored state to response documents, in the dialect each was asked in.

A reader may ask for another dialect than the one the session was made in
(``?dialect=``), so one client can read every session (docs/ARCHITECTURE.md §3).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from talicada.broker import lifecycle, ttl
from talicada.broker.quoting import with_estimates
from talicada.broker.records import LiveSession
from talicada.broker.service import RESIZABLE, OfferSetView
from talicada.schema import iso8601
from talicada.schema.dialects import render_offerset, render_session
from talicada.schema.iso8601 import format_duration, format_instant
from talicada.schema.kinds import Dialect, Family, uri_for
from talicada.schema.messages import MessageItem
from talicada.schema.model import ExecutionSession, Metadata, OfferSet, Option, SessionPhase

#: Changes of the available window are offered in seconds (docs/ARCHITECTURE.md §3).
_UNITS: Final = "seconds"
#: The shortest window a client can shrink to.
_SHORTEST_SECONDS: Final = 60


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(ms: int) -> str:
    # Whole milliseconds from the epoch: ``fromtimestamp(ms / 1000)`` leaves float artefacts.
    return format_instant(_EPOCH + timedelta(milliseconds=ms))


def options(
    session: ExecutionSession, phase: SessionPhase, max_duration: float | None
) -> list[Option]:
    """The updates a client may send in ``phase`` (schema ``meta.options``).

    A phase is offered where the lifecycle table allows the client's target; a
    change of the window's length, in seconds, within the platform's limit.
    """
    found: list[Option] = []
    targets: list[str] = sorted(
        target for target in lifecycle.CLIENT_TARGETS if lifecycle.allowed(phase, target)
    )
    if targets:
        found.append(Option(kind="uri:enum-value-option", path="phase", values=targets))
    available = session.schedule.available if session.schedule else None
    if phase in RESIZABLE and available is not None and available.duration is not None:
        current = int(iso8601.parse_duration(available.duration).total_seconds())
        longest = int(
            max_duration if max_duration is not None else iso8601.MAX_DURATION.days * 86400
        )
        found.append(
            Option(
                kind="uri:integer-delta-option",
                path="schedule.available.duration",
                min=min(0, _SHORTEST_SECONDS - current),
                max=max(0, longest - current),
                units=_UNITS,
            )
        )
    return found


def session_model(
    live: LiveSession, base: str, max_duration: float | None = None
) -> ExecutionSession:
    """The canonical session with its live phase, its URL and what may be updated."""
    session = live.record.session
    meta = msgspec.structs.replace(
        session.meta,
        url=f"{base}/sessions/{live.record.uuid}",
        options=options(session, live.phase, max_duration),
    )
    # ``expires`` only means something while the offer is open (schema note).
    expires = session.expires if live.phase == "OFFERED" else None
    session = msgspec.structs.replace(session, meta=meta, phase=live.phase, expires=expires)
    return with_estimates(live.record, session)


def session_doc(
    live: LiveSession,
    base: str,
    dialect: Dialect | None = None,
    max_duration: float | None = None,
) -> dict[str, Any]:
    """A session as ``dialect`` (default: its client's) spells it."""
    data = msgspec.to_builtins(session_model(live, base, max_duration))
    return render_session(data, dialect or Dialect(live.record.dialect))


def offerset_ttl(view: OfferSetView, now_ms: int) -> int:
    """Whole seconds the offer set stays valid from ``now_ms`` (talicada/broker/ttl.py)."""
    return ttl.remaining(view.record.valid_until_ms(), now_ms)


def offerset_doc(
    view: OfferSetView,
    base: str,
    ttl_seconds: int,
    dialect: Dialect | None = None,
    limits: dict[str, float] | None = None,
) -> dict[str, Any]:
    """An offer set, with live offers, as ``dialect`` (default: its client's) spells it.

    ``ttl_seconds`` is how long it stays valid (:func:`offerset_ttl`); ``limits``
    maps platform names to their longest booking (seconds).
    """
    record = view.record
    limits = limits or {}
    offerset = OfferSet(
        meta=Metadata(
            uuid=record.uuid,
            name=record.name,
            url=f"{base}/offersets/{record.uuid}",
            created=_instant(record.created),
            messages=record.messages,
        ),
        result="YES" if record.result == "YES" else "NO",
        expires=_instant(record.expires) if record.offers else None,
        ttl=format_duration(timedelta(seconds=ttl_seconds)),
        offers=[
            session_model(offer, base, limits.get(offer.record.platform)) for offer in view.offers
        ],
    )
    return render_offerset(msgspec.to_builtins(offerset), dialect or Dialect(record.dialect))


def refusal_doc(
    messages: list[MessageItem],
    dialect: Dialect,
    offerset: str | None = None,
    *,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """A ``/direct`` request that cannot run, answered as a rejected execution (400).

    The reference schema answers a refused direct execution with a session whose
    messages say why; ``messages`` is repeated at the top, where every other
    error answer keeps it, so either kind of client finds the reasons.
    """
    meta: dict[str, Any] = {"messages": [msgspec.to_builtins(item) for item in messages]}
    if offerset is not None:
        meta["url"] = offerset
    kind_key = "type" if dialect is Dialect.SEED_2025 else "kind"
    refused: dict[str, Any] = {
        kind_key: uri_for(Family.SESSION, "execution-session", dialect),
        "meta": meta,
        "phase": "REJECTED",
        "messages": meta["messages"],
    }
    if ttl_seconds is not None:
        # How long the refusal holds, as for the NO offer set behind it.
        refused["ttl"] = format_duration(timedelta(seconds=ttl_seconds))
    return refused
