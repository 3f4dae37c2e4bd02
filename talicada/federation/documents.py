"""Offer and session documents as sites send them, in the client's dialect. Pure code.

An aggregator forwards the client's own request body, so each site answers
in the client's dialect, and the aggregator never translates a session: it
only reads a few fields and points the document's URL at itself. Identity
sits in ``meta`` (v1.0, v1.0.6) or at the top (seed-2025: ``uuid``, ``href``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from talicada.schema import iso8601
from talicada.schema.dialects import render_offerset
from talicada.schema.kinds import Dialect
from talicada.schema.messages import MessageItem

Doc = dict[str, Any]


def uuid_of(doc: Doc, dialect: Dialect) -> str | None:
    """The document's uuid."""
    holder = doc if dialect is Dialect.SEED_2025 else doc.get("meta")
    value = holder.get("uuid") if isinstance(holder, dict) else None
    return value if isinstance(value, str) else None


def with_url(doc: Doc, dialect: Dialect, url: str) -> Doc:
    """A copy of ``doc`` whose own URL is ``url``."""
    if dialect is Dialect.SEED_2025:
        return {**doc, "href": url}
    meta = doc.get("meta")
    return {**doc, "meta": {**(meta if isinstance(meta, dict) else {}), "url": url}}


def messages_of(doc: Doc, dialect: Dialect) -> list[Any]:
    """The document's messages (plain data)."""
    holder = doc if dialect is Dialect.SEED_2025 else doc.get("meta")
    found = holder.get("messages") if isinstance(holder, dict) else None
    return found if isinstance(found, list) else []


def phase_of(doc: Doc) -> str:
    """The session's phase ('' when the document has none)."""
    phase = doc.get("phase")
    return phase if isinstance(phase, str) else ""


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return iso8601.parse_instant(text.split("/", 1)[0])
    except iso8601.Iso8601Error:
        return None


def expires_of(doc: Doc) -> datetime | None:
    """When the offer expires, if it says."""
    return _instant(doc.get("expires"))


def available_start(doc: Doc) -> datetime | None:
    """When the offered window starts (``schedule.available.start``)."""
    schedule = doc.get("schedule")
    available = schedule.get("available") if isinstance(schedule, dict) else None
    return _instant(available.get("start")) if isinstance(available, dict) else None


def offerset(
    *,
    dialect: Dialect,
    uuid: str,
    url: str,
    created: str,
    result: str,
    expires: str | None,
    ttl: str,
    messages: list[MessageItem],
    offers: list[Doc],
) -> Doc:
    """A merged offer set in ``dialect``; ``offers`` are already in it."""
    meta: Doc = {"uuid": uuid, "url": url, "created": created}
    if messages:
        meta["messages"] = msgspec.to_builtins(messages)
    top: Doc = {"meta": meta, "result": result}
    if expires is not None:
        top["expires"] = expires
    top["ttl"] = ttl
    out = render_offerset(top, dialect)
    out["offers"] = offers
    return out
