"""The session state machine: one transition table (docs/ARCHITECTURE.md §5). Pure code.

Every phase change anywhere in the broker is checked against :data:`NEXT`;
an illegal one is refused, never applied. :data:`CLIENT_TARGETS` says which
phases a client may ask for with an update; the rest are the broker's own.
"""

from __future__ import annotations

from typing import Final

from talicada.schema.model import SessionPhase

LIVE: Final[frozenset[SessionPhase]] = frozenset(
    {"ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING"}
)
FINAL: Final[frozenset[SessionPhase]] = frozenset(
    {"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"}
)

#: phase → the phases it may become.
NEXT: Final[dict[SessionPhase, frozenset[SessionPhase]]] = {
    "INITIAL": frozenset({"OFFERED"}),
    "OFFERED": frozenset({"ACCEPTED", "REJECTED", "EXPIRED"}),
    "ACCEPTED": frozenset({"WAITING", "PREPARING", "CANCELLED", "FAILED"}),
    "WAITING": frozenset({"PREPARING", "CANCELLED", "FAILED"}),
    "PREPARING": frozenset({"AVAILABLE", "RUNNING", "RELEASING", "CANCELLED", "FAILED"}),
    "AVAILABLE": frozenset({"RUNNING", "RELEASING", "CANCELLED", "FAILED"}),
    "RUNNING": frozenset({"RELEASING", "CANCELLED", "FAILED"}),
    "RELEASING": frozenset({"COMPLETED", "CANCELLED", "FAILED"}),
    "REJECTED": frozenset(),
    "EXPIRED": frozenset(),
    "COMPLETED": frozenset(),
    "FAILED": frozenset(),
    "CANCELLED": frozenset(),
}

#: Phases a client may set with ``{kind: uri:enum-value-update, path: phase}``.
CLIENT_TARGETS: Final[frozenset[SessionPhase]] = frozenset({"ACCEPTED", "REJECTED", "CANCELLED"})


def sources(target: SessionPhase) -> frozenset[SessionPhase]:
    """Every phase from which ``target`` may be reached."""
    return frozenset(phase for phase, nexts in NEXT.items() if target in nexts)


def allowed(current: SessionPhase, target: SessionPhase) -> bool:
    """Whether ``current`` may become ``target``."""
    return target in NEXT[current]
