"""Between the broker's wire documents and the model classes.

The broker answers in the dialect a request used (docs/ARCHITECTURE.md §3),
so the client turns every answer into the canonical model
(:mod:`talicada.schema.model`) with the broker's own dialect layer, and
renders model requests as v1.0 documents. Callers never see a kind URI.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from talicada.schema.dialects import detect, to_canonical
from talicada.schema.kinds import Dialect, Family, uri_for
from talicada.schema.messages import MessageItem
from talicada.schema.model import (
    ExecutionRequest,
    ExecutionSession,
    OfferSet,
    SessionPhase,
)

T = TypeVar("T")

#: A request as a caller may hold it: the model, a decoded document, YAML/JSON
#: text, or a file holding YAML, JSON or XML.
RequestLike = ExecutionRequest | Mapping[str, Any] | str | bytes | Path

#: Phases after which nothing more happens to a session.
FINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "REJECTED", "EXPIRED"})


class Transition(msgspec.Struct, kw_only=True, frozen=True):
    """One recorded change of the session (``component`` empty) or of one component.

    ``index`` is its position in the session's history: the SSE event id, and
    what a reconnecting watcher resumes after.
    """

    index: int
    source: str
    target: str
    cause: str
    time: str
    component: str = ""


class SessionLog(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /sessions/{uuid}/log``: the session, every transition, output and platform logs."""

    session: ExecutionSession
    history: list[Transition]
    output: dict[str, str]
    platform: dict[str, str]


class SessionPage(msgspec.Struct, kw_only=True, frozen=True):
    """One page of ``GET /sessions``; ``cursor`` asks for the next (empty: none)."""

    sessions: list[ExecutionSession]
    cursor: str = ""


def request_body(request: RequestLike) -> tuple[bytes, str]:
    """The body and Content-Type to send for ``request``."""
    if isinstance(request, Path):
        text = request.read_bytes()
        xml = request.suffix.lower() == ".xml"
        return text, "application/xml" if xml else "application/yaml"
    if isinstance(request, str | bytes):
        # YAML is a superset of JSON: one content type reads both.
        return (request.encode() if isinstance(request, str) else request), "application/yaml"
    if isinstance(request, ExecutionRequest):
        return msgspec.json.encode(render_request(request)), "application/json"
    return msgspec.json.encode(dict(request)), "application/json"


def render_request(request: ExecutionRequest) -> dict[str, Any]:
    """A model request spelled in the v1.0 dialect (kind URIs, identity in ``meta``)."""
    doc: dict[str, Any] = msgspec.to_builtins(request)

    def spell(component: dict[str, Any], family: Family) -> None:
        if "kind" in component:
            component["kind"] = uri_for(family, component["kind"], Dialect.V1_0)
        for key, nested in (("costs", Family.COSTS), ("metrics", Family.METRICS)):
            for item in component.get(key) or []:
                spell(item, nested)
        for volume in component.get("volumes") or []:
            if isinstance(volume, dict):
                spell(volume, Family.VOLUME)

    spell(doc, Family.SESSION)  # costs, metrics and volumes at the top level
    doc.pop("kind", None)
    for key, family in (("executable", Family.EXECUTABLE), ("compute", Family.COMPUTE)):
        if isinstance(doc.get(key), dict):
            spell(doc[key], family)
    for key, family in (("storage", Family.STORAGE), ("data", Family.DATA)):
        for item in doc.get(key) or []:
            spell(item, family)
    return doc


def _canonical_sessions(docs: list[Any]) -> list[dict[str, Any]]:
    # The dialect layer canonicalises sessions where they sit in an offer set,
    # so single sessions are wrapped as one.
    wrapped = {"offers": docs}
    offers: list[dict[str, Any]] = to_canonical(wrapped, detect(wrapped))["offers"]
    return offers


def session(doc: Any) -> ExecutionSession:
    """A session document (any dialect) as the model."""
    return msgspec.convert(_canonical_sessions([doc])[0], ExecutionSession)


def offerset(doc: Any) -> OfferSet:
    """An offer-set document (any dialect) as the model."""
    return msgspec.convert(to_canonical(doc, detect(doc)), OfferSet)


def page(doc: Any) -> SessionPage:
    """A ``GET /sessions`` page as the model."""
    sessions = [
        msgspec.convert(item, ExecutionSession)
        for item in _canonical_sessions(doc.get("sessions", []))
    ]
    return SessionPage(sessions=sessions, cursor=str(doc.get("cursor", "")))


def transition(index: int, item: Mapping[str, Any]) -> Transition:
    """A transition from the broker's history item (SSE data or a log entry)."""
    return Transition(
        index=index,
        source=str(item.get("from", "")),
        target=str(item.get("to", "")),
        cause=str(item.get("cause", "")),
        time=str(item.get("time", "")),
        component=str(item.get("component", "")),
    )


def session_log(doc: Any) -> SessionLog:
    """A ``GET /sessions/{uuid}/log`` document as the model."""
    return SessionLog(
        session=session(doc["session"]),
        history=[transition(i, item) for i, item in enumerate(doc.get("history", []))],
        output={str(k): str(v) for k, v in (doc.get("output") or {}).items()},
        platform={str(k): str(v) for k, v in (doc.get("platform") or {}).items()},
    )


def messages(doc: Any) -> list[MessageItem]:
    """The ``messages`` of an error document; a stand-in message when there are none."""
    items = doc.get("messages") if isinstance(doc, dict) else None
    if isinstance(items, list):
        try:
            return msgspec.convert(items, list[MessageItem])
        except msgspec.ValidationError:
            pass
    return [MessageItem(kind="urn:talicada:error:client", message=str(doc)[:500])]


def is_final(phase: SessionPhase | str) -> bool:
    """Whether nothing more will happen to a session in ``phase``."""
    return phase in FINAL
