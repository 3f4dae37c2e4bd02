"""Stored state to response documents, in the dialect each was asked in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from talicada.broker import ttl
from talicada.broker.records import LiveSession
from talicada.broker.service import OfferSetView
from talicada.schema.dialects import render_offerset, render_session
from talicada.schema.iso8601 import format_duration, format_instant
from talicada.schema.kinds import Dialect
from talicada.schema.model import ExecutionSession, Metadata, OfferSet


def _instant(ms: int) -> str:
    from datetime import UTC, datetime

    return format_instant(datetime.fromtimestamp(ms / 1000, UTC))


def session_model(live: LiveSession, base: str) -> ExecutionSession:
    """The canonical session with its live phase and its URL."""
    session = live.record.session
    meta = msgspec.structs.replace(session.meta, url=f"{base}/sessions/{live.record.uuid}")
    # ``expires`` only means something while the offer is open (schema note).
    expires = session.expires if live.phase == "OFFERED" else None
    return msgspec.structs.replace(session, meta=meta, phase=live.phase, expires=expires)


def session_doc(live: LiveSession, base: str) -> dict[str, Any]:
    """A session as its client's dialect spells it."""
    data = msgspec.to_builtins(session_model(live, base))
    return render_session(data, Dialect(live.record.dialect))


def offerset_ttl(view: OfferSetView, now_ms: int) -> int:
    """Whole seconds the offer set stays valid from ``now_ms`` (talicada/broker/ttl.py)."""
    return ttl.remaining(view.record.valid_until_ms(), now_ms)


def offerset_doc(view: OfferSetView, base: str, ttl_seconds: int) -> dict[str, Any]:
    """An offer set, with live offers, as its client's dialect spells it.

    ``ttl_seconds`` is how long it stays valid (:func:`offerset_ttl`).
    """
    record = view.record
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
        offers=[session_model(offer, base) for offer in view.offers],
    )
    return render_offerset(msgspec.to_builtins(offerset), Dialect(record.dialect))
