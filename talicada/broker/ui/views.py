"""The dashboard's pages: what each shows, read through the broker's own calls."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from talicada.broker import lifecycle
from talicada.broker.http import base_url, viewer
from talicada.broker.keys import BROKER, SETTINGS
from talicada.broker.records import LiveSession
from talicada.broker.render import session_model
from talicada.schema import iso8601
from talicada.schema.messages import NotFound
from talicada.schema.model import ExecutionSession, LifecycleComponent, kind_of

routes = web.RouteTableDef()

#: Phases a visitor may filter the list by, in lifecycle order.
PHASES = [
    "OFFERED",
    "ACCEPTED",
    "WAITING",
    "PREPARING",
    "AVAILABLE",
    "RUNNING",
    "RELEASING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "REJECTED",
    "EXPIRED",
]

#: The submit page's starting points: requests the embedded ``local`` platform runs.
EXAMPLES = {
    "delay": (
        "# A test task that runs for 20 seconds on the local platform.\n"
        "meta:\n  name: delay-20s\n"
        "executable:\n  kind: urn:talicada:kinds:executable:delay-1.0\n  duration: PT20S\n"
        "compute:\n  cores: {min: 1, max: 2}\n  memory: {min: 1, max: 2}\n"
        "schedule:\n  requested:\n    duration: PT10M\n"
    ),
    "ping": (
        "# The smallest request: a test task that completes at once.\n"
        "executable:\n  kind: urn:talicada:kinds:executable:ping-1.0\n"
        "schedule:\n  requested:\n    duration: PT5M\n"
    ),
}


def _ms(text: str | None) -> int | None:
    """Epoch milliseconds of an ISO 8601 instant (or the start of an interval)."""
    if not text:
        return None
    try:
        return int(iso8601.parse_instant(text.split("/")[0]).timestamp() * 1000)
    except iso8601.Iso8601Error:
        return None


def _seconds(text: str | None) -> float:
    try:
        return iso8601.parse_duration(text).total_seconds() if text else 0.0
    except iso8601.Iso8601Error:
        return 0.0


def clock(text: str | None) -> str:
    """An instant as ``2026-12-01 11:45:52 UTC`` (Jinja filter)."""
    moment = _ms(text)
    if moment is None:
        return "—"
    return datetime.fromtimestamp(moment / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(text: str | None) -> str:
    """An ISO 8601 duration for people: ``5 min``, ``2 h 30 min`` (Jinja filter)."""
    seconds = int(_seconds(text))
    if not text:
        return "—"
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


FILTERS = {"clock": clock, "span": span}


def parts(session: ExecutionSession) -> list[dict[str, Any]]:
    """Every component with what the pages show of it: role, label, kind, phase, messages."""
    found: list[tuple[str, LifecycleComponent]] = [
        ("executable", session.executable),
        ("compute", session.compute),
        *(("storage", item) for item in session.storage),
        *(("data", item) for item in session.data),
    ]
    return [
        {
            "uuid": part.meta.uuid if part.meta else "",
            "role": role,
            "label": (part.meta.name if part.meta else None) or kind_of(part),
            "kind": kind_of(part),
            "phase": part.phase or "",
            "messages": part.meta.messages if part.meta else [],
        }
        for role, part in found
    ]


def planned(session: ExecutionSession) -> list[dict[str, Any]]:
    """The booked schedule as (phase, start, end) in epoch milliseconds."""
    schedule = session.schedule
    blocks = []
    for phase, block in (
        ("PREPARING", schedule.preparing if schedule else None),
        ("AVAILABLE", schedule.available if schedule else None),
        ("RELEASING", schedule.releasing if schedule else None),
    ):
        start = _ms(block.start) if block else None
        if block and start is not None:
            end = start + int(_seconds(block.duration) * 1000)
            blocks.append({"phase": phase, "start": start, "end": end})
    return blocks


def offer_view(live: LiveSession, base: str) -> dict[str, Any]:
    """One offer or session as a row or card: the model plus what only the record knows."""
    session = session_model(live, base)
    window = session.schedule.available if session.schedule else None
    preparing = session.schedule.preparing if session.schedule else None
    return {
        "uuid": live.record.uuid,
        "name": session.meta.name or "",
        "platform": live.record.platform,
        "phase": live.phase,
        "final": live.phase in lifecycle.FINAL,
        "created": session.meta.created,
        "start": window.start if window else None,
        "duration": window.duration if window else None,
        "preparation": preparing.duration if preparing else None,
        "expires": session.expires,
        "cores": session.compute.cores.max if session.compute.cores else None,
        "memory": session.compute.memory.max if session.compute.memory else None,
        "kind": kind_of(session.executable),
        "costs": session.costs or [],
        "session": session,
    }


def _base(request: web.Request) -> str:
    return base_url(request, request.app[SETTINGS].base_url)


def _not_found(request: web.Request, what: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "error.html",
        request,
        {"title": "Not found", "message": f"No {what} {request.match_info['uuid'][:64]} here."},
        status=404,
    )


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    """The broker's front door is the dashboard."""
    raise web.HTTPFound("/ui/")


@routes.get("/ui")
async def ui_without_slash(request: web.Request) -> web.Response:
    """``/ui`` → ``/ui/``, so relative links resolve the same way."""
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def sessions_page(request: web.Request) -> web.Response:
    """The caller's sessions, newest first, optionally of one phase."""
    phase = request.query.get("phase", "")
    phases = [phase] if phase in PHASES else []
    found, _ = await request.app[BROKER].list_sessions(
        viewer(request),
        phases=phases,  # type: ignore[arg-type]
        limit=100,
    )
    base = _base(request)
    return aiohttp_jinja2.render_template(
        "sessions.html",
        request,
        {
            "title": "Sessions",
            "rows": [offer_view(live, base) for live in found],
            "phases": PHASES,
            "phase": phase if phases else "",
        },
    )


@routes.get("/ui/sessions/{uuid}")
async def session_page(request: web.Request) -> web.Response:
    """One session: timeline, components, connectors, messages and logs."""
    uuid = request.match_info["uuid"]
    broker = request.app[BROKER]
    try:
        live = await broker.session(uuid, viewer(request))
    except NotFound:
        return _not_found(request, "session")
    history = await broker.store.history(live.record.uuid)
    view = offer_view(live, _base(request))
    session: ExecutionSession = view["session"]
    components = parts(session)
    timeline = {
        "uuid": live.record.uuid,
        "phase": live.phase,
        "final": view["final"],
        "planned": planned(session),
        "components": [{k: c[k] for k in ("uuid", "role", "label")} for c in components],
        "history": [
            {
                "time": _ms(item.time),
                "from": item.source,
                "to": item.target,
                "cause": item.cause,
                "component": item.component or "",
            }
            for item in history
        ],
    }
    messages = sorted(
        ((m, c["label"]) for c in components for m in c["messages"]),
        key=lambda pair: pair[0].time,
    )
    logs = {**live.record.output, **live.record.logs}
    return aiohttp_jinja2.render_template(
        "session.html",
        request,
        {
            "title": f"Session {view['name'] or live.record.uuid[:8]}",
            "s": view,
            "offerset": live.record.offerset,
            "components": components,
            "connectors": session.connectors,
            "messages": messages,
            "logs": {name: text for name, text in logs.items() if text},
            "timeline": json.dumps(timeline),
        },
    )


@routes.get("/ui/offersets/{uuid}")
async def offerset_page(request: web.Request) -> web.Response:
    """An offer set's offers side by side, each with its accept button."""
    try:
        view = await request.app[BROKER].offerset(request.match_info["uuid"], viewer(request))
    except NotFound:
        return _not_found(request, "offer set")
    base = _base(request)
    return aiohttp_jinja2.render_template(
        "offerset.html",
        request,
        {
            "title": f"Offers {view.record.name or view.record.uuid[:8]}",
            "record": view.record,
            "offers": [offer_view(offer, base) for offer in view.offers],
            "created": datetime.fromtimestamp(view.record.created / 1000, UTC).isoformat(),
        },
    )


@routes.get("/ui/submit")
async def submit_page(request: web.Request) -> web.Response:
    """A form that sends a YAML or JSON request to ``POST /requests``."""
    example = request.query.get("example", "delay")
    return aiohttp_jinja2.render_template(
        "submit.html",
        request,
        {
            "title": "Submit a request",
            "examples": EXAMPLES,
            "text": EXAMPLES.get(example, EXAMPLES["delay"]),
        },
    )
