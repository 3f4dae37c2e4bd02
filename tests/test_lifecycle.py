"""The session state machine table."""

from __future__ import annotations

from talicada.broker import lifecycle
from talicada.schema.model import SessionPhase

ALL: frozenset[SessionPhase] = frozenset(SessionPhase.__args__)  # type: ignore[attr-defined]


def test_every_phase_has_a_row_and_every_target_is_a_phase() -> None:
    assert set(lifecycle.NEXT) == ALL
    for targets in lifecycle.NEXT.values():
        assert targets <= ALL


def test_final_phases_go_nowhere() -> None:
    for phase in lifecycle.FINAL:
        assert lifecycle.NEXT[phase] == frozenset()


def test_every_live_phase_can_fail_or_be_cancelled() -> None:
    for phase in lifecycle.LIVE:
        assert {"FAILED", "CANCELLED"} <= lifecycle.NEXT[phase]


def test_an_offer_is_accepted_rejected_or_expires_and_nothing_else() -> None:
    assert lifecycle.NEXT["OFFERED"] == {"ACCEPTED", "REJECTED", "EXPIRED"}


def test_every_phase_is_reachable_from_initial() -> None:
    seen = {"INITIAL"}
    frontier = ["INITIAL"]
    while frontier:
        for target in lifecycle.NEXT[frontier.pop()]:  # type: ignore[index]
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == ALL


def test_sources_inverts_the_table() -> None:
    assert lifecycle.sources("ACCEPTED") == {"OFFERED"}
    assert lifecycle.sources("COMPLETED") == {"RELEASING"}
    assert lifecycle.allowed("RUNNING", "RELEASING")
    assert not lifecycle.allowed("COMPLETED", "RUNNING")


def test_clients_may_only_accept_reject_or_cancel() -> None:
    assert {"ACCEPTED", "REJECTED", "CANCELLED"} == lifecycle.CLIENT_TARGETS
