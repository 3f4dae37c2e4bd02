"""What the ``talicada`` user commands print: rich tables and a live view in a
terminal, JSON lines otherwise (piped, or ``--json``), so scripts never parse
a table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from talicada.client.wire import Transition
from talicada.schema import iso8601
from talicada.schema.model import ExecutionSession, LifecycleComponent, OfferSet, kind_of

#: Phase colours, the same families as the dashboard's badges.
STYLE = {
    "OFFERED": "cyan",
    "ACCEPTED": "cyan",
    "WAITING": "blue",
    "PREPARING": "yellow",
    "AVAILABLE": "green",
    "RUNNING": "bold green",
    "RELEASING": "magenta",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CANCELLED": "red",
    "REJECTED": "dim",
    "EXPIRED": "dim",
}


def emit(data: Any) -> None:
    """One JSON line on stdout (model structs become plain JSON)."""
    print(json.dumps(msgspec.to_builtins(data), separators=(",", ":")), flush=True)


def phase_text(phase: str) -> Text:
    """A phase in its colour."""
    return Text(phase, style=STYLE.get(phase, ""))


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return iso8601.parse_instant(text.split("/")[0])
    except iso8601.Iso8601Error:
        return None


def when(text: str | None, now: datetime | None = None) -> str:
    """An instant as local time and how far away it is: ``11:40:58 (in 2m)``."""
    moment = _instant(text)
    if moment is None:
        return "—"
    delta = moment - (now or datetime.now(UTC))
    local = moment.astimezone().strftime("%H:%M:%S")
    if abs(delta) < timedelta(seconds=1):
        return f"{local} (now)"
    span = human(abs(delta))
    return f"{local} (in {span})" if delta > timedelta(0) else f"{local} ({span} ago)"


def relative(text: str | None) -> str:
    """How far away an instant is: ``in 5m``, ``2s ago``."""
    moment = _instant(text)
    if moment is None:
        return "—"
    delta = moment - datetime.now(UTC)
    span = human(abs(delta))
    return f"in {span}" if delta >= timedelta(0) else f"{span} ago"


def human(span: timedelta) -> str:
    """A span for people: ``45s``, ``2m``, ``1h30m``, ``3d``."""
    seconds = int(span.total_seconds())
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{round(seconds / 60)}m"
    if seconds < 172800:
        hours, rest = divmod(seconds, 3600)
        return f"{hours}h{rest // 60:02d}m" if rest >= 60 else f"{hours}h"
    return f"{round(seconds / 86400)}d"


def size(count: int) -> str:
    """A byte count for people: ``2.0 MiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def duration(text: str | None) -> str:
    """An ISO 8601 duration for people (``PT2M`` → ``2m``)."""
    if not text:
        return "—"
    try:
        return human(iso8601.parse_duration(text))
    except iso8601.Iso8601Error:
        return text


def offer_row(offer: ExecutionSession, platform: str) -> dict[str, str]:
    """The columns of one offer, as ``submit`` shows them."""
    schedule = offer.schedule
    available = schedule.available if schedule else None
    preparing = schedule.preparing if schedule else None
    cores = offer.compute.cores.max if offer.compute.cores else None
    memory = offer.compute.memory.max if offer.compute.memory else None
    return {
        "offer": offer.meta.uuid or "",
        "platform": platform,
        "start": when(available.start if available else None),
        "duration": duration(available.duration if available else None),
        "cores": str(cores or "—"),
        "memory": f"{memory} GiB" if memory else "—",
        "preparation": duration(preparing.duration if preparing else None),
        "expiry": relative(offer.expires),
        "phase": offer.phase,
    }


def offers_table(offers: OfferSet, platform: str) -> RenderableType:
    """The offers side by side, or why there are none."""
    if offers.result != "YES":
        lines = [Text("No offers: ", style="bold red")]
        lines += [Text(f"  • {m.message}") for m in offers.meta.messages]
        return Group(*lines)
    table = Table(title=f"Offer set {offers.meta.uuid}", title_justify="left")
    table.add_column("#")
    table.add_column("offer", no_wrap=True, style="bold")
    for column in ("platform", "start", "duration", "cores", "memory", "preparation", "expires"):
        # Headers never shrink to an ellipsis; the uuid and times do not wrap.
        table.add_column(column, min_width=len(column), no_wrap=column == "start")
    for index, offer in enumerate(offers.offers, start=1):
        row = offer_row(offer, platform)
        table.add_row(str(index), *(Text(row[key]) for key in list(row)[:-1]))
    return table


def components(session: ExecutionSession) -> list[tuple[str, str, LifecycleComponent]]:
    """Every component of the session: (role, label, component)."""
    parts: list[tuple[str, LifecycleComponent]] = [
        ("executable", session.executable),
        ("compute", session.compute),
        *(("storage", item) for item in session.storage),
        *(("data", item) for item in session.data),
    ]
    return [
        (role, (part.meta.name if part.meta else None) or kind_of(part), part)
        for role, part in parts
    ]


def staged(part: LifecycleComponent) -> tuple[int, int] | None:
    """The latest staging progress of a data item: (bytes done, bytes in all)."""
    for message in reversed(part.meta.messages if part.meta else []):
        if message.kind.endswith(":info:progress"):
            try:
                return int(message.values["done"]), int(message.values["total"])
            except (KeyError, ValueError):
                return None
    return None


class SessionView:
    """What ``watch`` shows: the phase, the timeline of phases and the components."""

    def __init__(self, session: ExecutionSession) -> None:
        self.session = session
        self.steps: list[Transition] = []

    def add(self, step: Transition) -> None:
        """Record one transition."""
        self.steps.append(step)

    def render(self) -> RenderableType:
        """The whole view."""
        session = self.session
        title = Text.assemble(
            ("Session ", "bold"),
            (session.meta.uuid or "", "bold"),
            "  ",
            phase_text(session.phase),
            (f"  {session.meta.name or ''}", "dim"),
        )
        return Group(title, self._timeline(), self._components())

    def _timeline(self) -> Table:
        table = Table(title="Timeline", title_justify="left", box=None, padding=(0, 2))
        for column in ("time", "+", "phase", "cause"):
            table.add_column(column)
        steps = [step for step in self.steps if not step.component]
        first = _instant(steps[0].time) if steps else None
        for step in steps:
            moment = _instant(step.time)
            offset = f"{(moment - first).total_seconds():.1f}s" if moment and first else ""
            local = moment.astimezone().strftime("%H:%M:%S") if moment else step.time
            table.add_row(local, offset, phase_text(step.target), Text(step.cause))
        return table

    def _components(self) -> Table:
        table = Table(title="Components", title_justify="left", box=None, padding=(0, 2))
        for column in ("role", "name", "phase", "last change", "staging"):
            table.add_column(column)
        last = {step.component: step.cause for step in self.steps if step.component}
        for role, label, part in components(self.session):
            uuid = part.meta.uuid if part.meta else None
            progress: RenderableType = ""
            counts = staged(part) if role == "data" else None
            if counts:
                done, total = counts
                progress = Table.grid(padding=(0, 1))
                progress.add_row(
                    ProgressBar(total=max(total, 1), completed=done, width=12),
                    Text(f"{size(done)} of {size(total)}", style="dim"),
                )
            cause = Text(last.get(uuid or "", ""))
            table.add_row(role, Text(label), phase_text(part.phase or ""), cause, progress)
        return table


def console(stderr: bool = False) -> Console:
    """The terminal console (``stderr=True`` for messages that must not mix with output)."""
    # Messages on stderr keep their lines whole, so a log or a grep sees them intact.
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)
