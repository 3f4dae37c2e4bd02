"""The lifecycle engine on its own: ``derive`` and ``report`` rule by rule, and a
state machine that drives random reports, timers and cancels at it.

Pure code, no store and no workers: each test takes a real accepted session
record (made once by the broker on a memory store) and applies engine steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from talicada.broker import engine, lifecycle
from talicada.broker.components import Component, components
from talicada.broker.engine import COMPONENT_FINAL, Change, ReportRefused, derive
from talicada.broker.records import SessionRecord
from talicada.broker.service import Broker
from talicada.broker.store.memory import MemoryStore
from talicada.events.envelope import Launch, Release, ReleaseData, StageData
from talicada.schema.model import ComponentPhase, SessionPhase
from talicada.schema.validation import parse_request
from talicada.settings import load
from tests.lifecycle_support import checksum_request

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@functools.cache
def accepted() -> SessionRecord:
    """A checksum session (executable, compute, two data items each in its own
    implicit storage) as offered."""

    async def make() -> SessionRecord:
        store = MemoryStore()
        broker = Broker(load(environ={}), store, clock=lambda: NOW)
        request = parse_request(checksum_request("http://127.0.0.1:9"), now=NOW)
        view = await broker.request(request, "alice")
        return view.offers[0].record

    return asyncio.run(make())


def family(record: SessionRecord, name: str) -> list[Component]:
    return [part for part in components(record.session) if part.family == name]


def preparing() -> tuple[SessionRecord, SessionPhase]:
    """The session right after preparation started."""
    record = accepted()
    change = engine.prepare(record, "ACCEPTED", engine.preparing_start(record))
    assert change is not None
    return change.record, change.phase


def apply(change: Change) -> tuple[SessionRecord, SessionPhase]:
    return change.record, change.phase


def launched() -> tuple[SessionRecord, SessionPhase]:
    """The session once storage, data and image are ready and the launch went out."""
    record, phase = preparing()
    for part in [*family(record, S), *family(record, E), *family(record, D)]:
        record, phase = apply(engine.report(record, phase, NOW, part.uuid, "AVAILABLE"))
    assert family(record, C)[0].phase == "PREPARING"
    return record, phase


def event_types(change: Change) -> list[str]:
    return [event.type for role, event in change.events if role != "lifecycle"]


# --------------------------------------------------------------------------- derive

E, C, S, D = "executable", "compute", "storage", "data"

#: (rule, current phase, component phases by family, derived phase)
DERIVE: list[tuple[str, SessionPhase, dict[str, ComponentPhase], SessionPhase]] = [
    ("1 final stays", "COMPLETED", {E: "INITIALIZING"}, "COMPLETED"),
    ("1 final stays", "CANCELLED", {E: "RUNNING", C: "RUNNING"}, "CANCELLED"),
    ("1 final stays", "FAILED", {E: "COMPLETED", C: "COMPLETED"}, "FAILED"),
    ("2 any failed", "RUNNING", {E: "RUNNING", D: "FAILED"}, "FAILED"),
    ("2 any failed", "PREPARING", {S: "FAILED"}, "FAILED"),
    ("2 before releasing", "RELEASING", {E: "COMPLETED", C: "FAILED"}, "FAILED"),
    ("3 releasing", "RELEASING", {E: "COMPLETED", C: "COMPLETED", S: "AVAILABLE"}, "RELEASING"),
    (
        "3 all final",
        "RELEASING",
        {E: "COMPLETED", C: "COMPLETED", S: "COMPLETED", D: "CANCELLED"},
        "COMPLETED",
    ),
    ("3 executable ended", "RUNNING", {E: "COMPLETED", C: "RUNNING"}, "RELEASING"),
    (
        "3 executable ended",
        "RUNNING",
        {E: "CANCELLED", C: "COMPLETED", S: "COMPLETED", D: "COMPLETED"},
        "COMPLETED",
    ),
    ("4 running", "PREPARING", {E: "RUNNING", C: "RUNNING", S: "AVAILABLE"}, "RUNNING"),
    ("4 running", "AVAILABLE", {E: "RUNNING", C: "AVAILABLE"}, "RUNNING"),
    ("5 interactive ready", "PREPARING", {E: "AVAILABLE", C: "AVAILABLE"}, "AVAILABLE"),
    ("6 preparing", "ACCEPTED", {S: "PREPARING"}, "PREPARING"),
    ("6 preparing", "WAITING", {E: "AVAILABLE"}, "PREPARING"),
    ("7 unchanged", "WAITING", {D: "WAITING"}, "WAITING"),
    ("7 unchanged", "ACCEPTED", {}, "ACCEPTED"),
]


@pytest.mark.parametrize(("rule", "current", "given", "expected"), DERIVE)
def test_derive_follows_the_documented_rules(
    rule: str, current: SessionPhase, given: dict[str, ComponentPhase], expected: SessionPhase
) -> None:
    parts = [
        Component(f"{name}-1", name, name, given.get(name, "INITIALIZING")) for name in (E, C, S, D)
    ]
    assert derive(current, parts) == expected, rule


# --------------------------------------------------------------------------- report


def test_preparation_allocates_storage_and_caches_the_image_and_waits_for_the_rest() -> None:
    record = accepted()
    change = engine.prepare(record, "ACCEPTED", NOW)
    assert change is not None
    assert change.phase == "PREPARING"
    assert sorted(event_types(change)) == ["image.cache", "storage.allocate", "storage.allocate"]
    phases = {part.family: part.phase for part in components(change.record.session)}
    assert phases == {E: "PREPARING", C: "WAITING", S: "PREPARING", D: "WAITING"}
    assert engine.timer("window-end", record.uuid) in change.add_timers


def test_storage_available_stages_each_of_its_data_items() -> None:
    record, phase = preparing()
    storage = family(record, S)[0]
    change = engine.report(record, phase, NOW, storage.uuid, "AVAILABLE")
    staged = [event for _, event in change.events if isinstance(event, StageData)]
    inside = [
        item.meta.uuid for item in record.session.data if item.meta and item.storage == storage.uuid
    ]
    assert [event.component for event in staged] == inside
    assert {event.body.storage for event in staged} == {storage.uuid}
    phases = {part.uuid: part.phase for part in family(change.record, D)}
    assert {phases[uuid] for uuid in inside if uuid} == {"PREPARING"}


def test_the_launch_waits_for_the_image_and_every_mounted_data_item_and_happens_once() -> None:
    record, phase = preparing()
    (executable,) = family(record, E)
    first, second = family(record, D)
    for storage in family(record, S):
        record, phase = apply(engine.report(record, phase, NOW, storage.uuid, "AVAILABLE"))
    record, phase = apply(engine.report(record, phase, NOW, executable.uuid, "AVAILABLE"))
    change = engine.report(record, phase, NOW, first.uuid, "AVAILABLE")
    assert "executable.launch" not in event_types(change)  # the second item is not staged
    record, phase = apply(change)
    change = engine.report(record, phase, NOW, second.uuid, "AVAILABLE")
    launches = [event for _, event in change.events if isinstance(event, Launch)]
    assert len(launches) == 1
    assert family(change.record, C)[0].phase == "PREPARING"
    # the same news again launches nothing more
    record, phase = apply(change)
    again = engine.report(record, phase, NOW, second.uuid, "AVAILABLE")
    assert "executable.launch" not in event_types(again)


def test_the_executable_running_makes_the_session_and_its_compute_run() -> None:
    record, phase = launched()
    (executable,) = family(record, E)
    change = engine.report(record, phase, NOW, executable.uuid, "RUNNING")
    assert change.phase == "RUNNING"
    assert family(change.record, C)[0].phase == "RUNNING"


def test_the_executable_completing_releases_everything_with_a_deadline() -> None:
    record, phase = launched()
    (executable,) = family(record, E)
    record, phase = apply(engine.report(record, phase, NOW, executable.uuid, "RUNNING"))
    change = engine.report(record, phase, NOW, executable.uuid, "COMPLETED")
    assert change.phase == "RELEASING"
    releases = [event for _, event in change.events if isinstance(event, Release | ReleaseData)]
    assert {event.type for event in releases} == {"session.release", "data.release"}
    assert engine.timer("release-deadline", record.uuid) in change.add_timers


def test_a_failed_data_item_fails_the_session_and_releases_it() -> None:
    record, phase = preparing()
    storage = family(record, S)[0]
    record, phase = apply(engine.report(record, phase, NOW, storage.uuid, "AVAILABLE"))
    data = family(record, D)[0]
    change = engine.report(record, phase, NOW, data.uuid, "FAILED", "checksum mismatch")
    assert change.phase == "FAILED"
    assert "session.release" in event_types(change)
    assert any("checksum mismatch" in item.cause for item in change.history)


@pytest.mark.parametrize(
    ("setup", "target"),
    [("RUNNING", "PREPARING"), ("RUNNING", "AVAILABLE"), ("AVAILABLE", "WAITING")],
)
def test_a_backwards_report_is_refused(setup: ComponentPhase, target: ComponentPhase) -> None:
    record, phase = preparing()
    (executable,) = family(record, E)
    record, phase = apply(engine.report(record, phase, NOW, executable.uuid, setup))
    with pytest.raises(ReportRefused, match="cannot go from"):
        engine.report(record, phase, NOW, executable.uuid, target)


def test_a_data_item_reported_ready_before_its_storage_is_not_staged_again() -> None:
    # Found by the state machine below: storage AVAILABLE used to move such an
    # item back to PREPARING and stage it a second time.
    record, phase = preparing()
    storage = family(record, S)[0]
    inside = next(
        item.meta.uuid for item in record.session.data if item.meta and item.storage == storage.uuid
    )
    assert inside is not None
    record, phase = apply(engine.report(record, phase, NOW, inside, "AVAILABLE"))
    change = engine.report(record, phase, NOW, storage.uuid, "AVAILABLE")
    assert "data.stage" not in event_types(change)
    assert {part.uuid: part.phase for part in family(change.record, D)}[inside] == "AVAILABLE"


def test_preparation_leaves_alone_a_component_that_already_ended() -> None:
    # Found by the state machine below: prepare used to move a CANCELLED item to WAITING.
    record = accepted()
    data = family(record, D)[0]
    record, phase = apply(engine.report(record, "ACCEPTED", NOW, data.uuid, "CANCELLED"))
    change = engine.prepare(record, phase, NOW)
    assert change is not None
    assert {part.uuid: part.phase for part in family(change.record, D)}[data.uuid] == "CANCELLED"


def test_a_report_about_an_unknown_component_is_refused() -> None:
    record, phase = preparing()
    with pytest.raises(ReportRefused, match="no component"):
        engine.report(record, phase, NOW, "nobody", "AVAILABLE")


def test_late_news_about_a_finished_component_changes_nothing() -> None:
    record, phase = preparing()
    data = family(record, D)[0]
    record, phase = apply(engine.report(record, phase, NOW, data.uuid, "FAILED"))
    change = engine.report(record, phase, NOW, data.uuid, "AVAILABLE")
    assert change.history == []
    assert change.events == []
    assert change.phase == phase == "FAILED"


def test_a_release_that_never_reports_fails_what_is_still_live() -> None:
    record, phase = preparing()
    record, phase = apply(
        engine.cancel(record, phase, NOW, "the client cancelled") or Change(record, phase)
    )
    assert phase == "CANCELLED"
    change = engine.release_overdue(record, phase, NOW + timedelta(hours=1))
    assert change is not None
    assert {part.phase for part in components(change.record.session)} <= COMPONENT_FINAL
    assert change.phase == "CANCELLED"  # a final phase stays


# --------------------------------------------------------------------------- state machine

TARGETS: list[ComponentPhase] = [
    "WAITING",
    "PREPARING",
    "AVAILABLE",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
]
_RANK: dict[str, int] = {phase: index for index, phase in enumerate(["INITIALIZING", *TARGETS[:5]])}


class Lifecycle(RuleBasedStateMachine):
    """Random worker reports, timers and client cancels applied to one accepted session.

    Checked after every step: each session move in the history is one the
    lifecycle table allows; a component never moves backwards (except to
    FAILED or CANCELLED); a final phase never changes. At the end, the
    session is driven as well-behaved timers and release workers would drive
    it, and must reach a final phase.
    """

    def __init__(self) -> None:
        super().__init__()
        self.record = accepted()
        self.phase: SessionPhase = "ACCEPTED"
        self.now = NOW
        self.finished_as: SessionPhase | None = None

    def _take(self, change: Change | None) -> None:
        if change is None:
            return
        previous = {part.uuid: part.phase for part in components(self.record.session)}
        for item in change.history:
            if item.component is None:
                assert lifecycle.allowed(item.source, item.target), item  # type: ignore[arg-type]
            else:
                assert item.source == previous[item.component], item
                backwards = _RANK.get(item.target, 99) < _RANK.get(item.source, 0)
                assert not backwards or item.target in ("FAILED", "CANCELLED"), item
                assert item.source not in COMPONENT_FINAL, item
                previous[item.component] = item.target  # type: ignore[assignment]
        if self.phase in lifecycle.FINAL:
            assert change.phase == self.phase
        self.record, self.phase = change.record, change.phase

    @rule()
    def start(self) -> None:
        self._take(engine.start(self.record, self.phase, self.now))

    @rule()
    def prepare(self) -> None:
        self._take(engine.prepare(self.record, self.phase, self.now))

    @rule(part=st.integers(0, 5), phase=st.sampled_from(TARGETS))
    def report(self, part: int, phase: ComponentPhase) -> None:
        parts = components(self.record.session)
        try:
            change = engine.report(self.record, self.phase, self.now, parts[part].uuid, phase)
        except ReportRefused:
            return  # refused reports change nothing
        self._take(change)

    @rule()
    def cancel(self) -> None:
        self._take(engine.cancel(self.record, self.phase, self.now, "the client cancelled"))

    @rule()
    def window_ends(self) -> None:
        self.now = engine.window_end(self.record) + timedelta(seconds=1)
        self._take(engine.end_of_window(self.record, self.phase, self.now))

    @precondition(lambda self: self.phase in ("RELEASING", "CANCELLED", "FAILED"))
    @rule()
    def release_overdue(self) -> None:
        self._take(engine.release_overdue(self.record, self.phase, self.now))

    @invariant()
    def a_final_phase_never_changes(self) -> None:
        if self.finished_as is not None:
            assert self.phase == self.finished_as
        if self.phase in lifecycle.FINAL:
            self.finished_as = self.phase

    def teardown(self) -> None:
        # Well-behaved time and workers: the window ends, releases report, the
        # release deadline passes. Whatever happened before, the session ends.
        self.start()
        self.prepare()
        self.window_ends()
        for part in components(self.record.session):
            if part.phase not in COMPONENT_FINAL:
                with contextlib.suppress(ReportRefused):
                    self._take(
                        engine.report(self.record, self.phase, self.now, part.uuid, "COMPLETED")
                    )
        self._take(engine.release_overdue(self.record, self.phase, self.now))
        assert self.phase in lifecycle.FINAL, self.phase
        assert {part.phase for part in components(self.record.session)} <= COMPONENT_FINAL


Lifecycle.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_lifecycle_state_machine = Lifecycle.TestCase


def test_the_record_used_is_a_real_accepted_offer() -> None:
    record = accepted()
    assert msgspec.json.encode(record)  # a complete, encodable record
    assert [part.family for part in components(record.session)] == [E, C, S, S, D, D]
