"""The lifecycle engine: what happens next to an accepted session. Pure code.

Every step takes the session as stored (record and phase) and returns a
:class:`Change`: the new record, the new phase, the transitions to record, the
events to publish and the timers to set. The store commits a Change in one
atomic step (the outbox rule, docs/ARCHITECTURE.md §1), so no event is lost or invented.

Dependencies are events, not polling (docs/ARCHITECTURE.md §5)::

    accept ──▶ start: WAITING until preparation time, or straight on to
    prepare ─▶ storage.allocate (each storage)   image.cache (the executable)
    storage AVAILABLE ─▶ data.stage (each data item in it)
    image AVAILABLE + every mounted data item AVAILABLE ─▶ executable.launch
    executable COMPLETED, or the booked window ends ─▶ session.release
    any component FAILED, or the client cancels ─▶ session.release (everything)

The session phase is derived from its components by :func:`derive`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from talicada import constants
from talicada.broker import lifecycle
from talicada.broker.components import (
    Component,
    components,
    mounted,
    with_phase,
)
from talicada.broker.records import SessionRecord, Transition
from talicada.events.envelope import (
    AllocateStorage,
    CacheImage,
    ComponentChanged,
    Event,
    ExtendBody,
    ExtendExecutable,
    Handle,
    ImageBody,
    Launch,
    LaunchBody,
    Release,
    ReleaseBody,
    ReleaseData,
    ReleaseDataBody,
    SessionChanged,
    StageBody,
    StageData,
    StorageBody,
    TransitionBody,
)
from talicada.events.streams import IMAGE_CACHE, LAUNCH, LIFECYCLE, PREPARE_DATA, RELEASE
from talicada.schema import messages as msg
from talicada.schema.iso8601 import (
    duration_to_millisecond,
    format_duration,
    format_instant,
    format_stamp,
    parse_duration,
    parse_instant,
    parse_interval,
)
from talicada.schema.model import ComponentPhase, Schedule, SessionPhase, StartDuration

timer = constants.timer

_ORDER: Final[dict[str, int]] = {
    phase: index
    for index, phase in enumerate(
        ["INITIALIZING", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED"]
    )
}
COMPONENT_FINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: Component phases before any worker was asked to act on the component.
NOT_STARTED: Final = frozenset({"INITIALIZING", "WAITING"})
#: Families whose release is the launcher's job; the stager releases the rest.
LAUNCHED: Final = frozenset({"executable", "compute"})


class ReportRefused(Exception):
    """A worker report that cannot apply (unknown component, backwards move)."""


@dataclass(frozen=True, slots=True)
class Rebook:
    """Move the end of the session's booking to slot ``last``, if ``capacity`` allows."""

    last: int
    capacity: tuple[int, int]


@dataclass
class Change:
    """Everything one step does, committed atomically by the store.

    ``events`` pairs each event with its worker role (or ``lifecycle``); the
    driver turns roles into the streams of the session's platform's back ends.
    """

    record: SessionRecord
    phase: SessionPhase
    history: list[Transition] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)
    add_timers: dict[str, int] = field(default_factory=dict)
    drop_timers: list[str] = field(default_factory=list)
    rebook: Rebook | None = None

    @property
    def final(self) -> bool:
        """True when the session ends in this change (its booking is freed)."""
        return self.phase in lifecycle.FINAL


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def preparing_start(record: SessionRecord) -> datetime:
    """When preparation is scheduled to start."""
    schedule = record.session.schedule
    assert schedule
    assert schedule.preparing
    assert schedule.preparing.start
    return parse_instant(schedule.preparing.start)


def window_start(record: SessionRecord) -> datetime:
    """When the booked available window starts."""
    schedule = record.session.schedule
    assert schedule
    assert schedule.available
    assert schedule.available.start
    return parse_interval(schedule.available.start).start


def window_end(record: SessionRecord) -> datetime:
    """When the booked available window ends (release starts)."""
    schedule = record.session.schedule
    assert schedule
    assert schedule.available
    assert schedule.available.start
    assert schedule.available.duration
    start = parse_interval(schedule.available.start).start
    return start + parse_duration(schedule.available.duration)


def window_done(record: SessionRecord) -> datetime:
    """When the session's booking ends: the window's end plus the release time."""
    schedule = record.session.schedule
    end = window_end(record)
    if schedule and schedule.releasing and schedule.releasing.duration:
        return end + parse_duration(schedule.releasing.duration)
    return end


def lifecycle_event(
    session: str, transition: Transition, component: Component | None = None
) -> Event:
    """The observers' event for one transition of a session or of one of its components."""
    body = TransitionBody(
        source=transition.source,
        target=transition.target,
        cause=transition.cause,
        time=transition.time,
        name=component.name if component else None,
        family=component.family if component else None,
    )
    if transition.component:
        return ComponentChanged.new(session, component=transition.component, body=body)
    return SessionChanged.new(session, body=body)


def handles(record: SessionRecord, uuids: list[str] | None = None) -> dict[str, Handle]:
    """What the back ends reported for the components ``uuids`` (all when None)."""
    if uuids is None:
        return dict(record.handles)
    return {uuid: record.handles[uuid] for uuid in uuids if uuid in record.handles}


class _Builder:
    """Accumulates one Change; keeps the session phase and history in step."""

    def __init__(
        self, record: SessionRecord, phase: SessionPhase, now: datetime, at: datetime | None = None
    ) -> None:
        self.change = Change(record=record, phase=phase)
        #: When the step runs: timers count from it.
        self.now = now
        #: When what it records happened (a service's own time, never in the
        #: future nor before the offer was made): transitions and messages say it.
        self.at = now if at is None else max(min(at, now), _instant(record.created))
        self.time = format_stamp(self.at)

    def emit(self, role: str, kind: type[Event], component: str | None, **fields: Any) -> None:
        """Publish an event of ``kind`` about ``component`` to the workers of ``role``."""
        record = self.change.record
        event = kind.new(record.uuid, component=component, platform=record.platform, **fields)
        self.change.events.append((role, event))

    def move(self, target: SessionPhase, cause: str) -> None:
        """Record a session transition (checked against the lifecycle table)."""
        source = self.change.phase
        if source == target:
            return
        if not lifecycle.allowed(source, target):
            raise ReportRefused(f"session cannot go from {source} to {target}")
        self.change.phase = target
        self._mark_times(target)
        transition = Transition(time=self.time, source=source, target=target, cause=cause)
        self.change.history.append(transition)
        self.change.events.append((LIFECYCLE, lifecycle_event(self.change.record.uuid, transition)))

    def _mark_times(self, target: SessionPhase) -> None:
        """Write when the session actually started preparing and when it ended."""
        session = self.change.record.session
        if target == "PREPARING" and session.start_time is None:
            session = msgspec.structs.replace(
                session, start_time=self.time, schedule=self._actual_preparing()
            )
        elif target in lifecycle.FINAL and session.end_time is None:
            session = msgspec.structs.replace(session, end_time=self.time)
        else:
            return
        self.change.record = msgspec.structs.replace(self.change.record, session=session)

    def _actual_preparing(self) -> Schedule | None:
        """The schedule with preparation starting now, as it actually does.

        The available window stays as booked; only the preparing block moves.
        """
        record = self.change.record
        schedule = record.session.schedule
        if schedule is None or schedule.preparing is None or schedule.available is None:
            return schedule
        left = duration_to_millisecond(max(window_start(record) - self.at, timedelta(0)))
        preparing = StartDuration(start=self.time, duration=format_duration(left))
        return msgspec.structs.replace(schedule, preparing=preparing)

    def set_component(
        self, component: Component, phase: ComponentPhase, cause: str, message: str | None = None
    ) -> None:
        if component.phase == phase:
            return
        item = None
        if message:
            item = msg.make(
                msg.COMPONENT_MESSAGE,
                "ERROR" if phase == "FAILED" else "INFO",
                now=self.at,
                component=component.name,
                text=message,
            )
        self.change.record = msgspec.structs.replace(
            self.change.record,
            session=with_phase(self.change.record.session, component.uuid, phase, item),
        )
        transition = Transition(
            time=self.time,
            source=component.phase,
            target=phase,
            cause=cause,
            component=component.uuid,
        )
        self.change.history.append(transition)
        # Observers (SSE, long polls) hear of component changes too; MQTT
        # publishes session transitions only.
        self.change.events.append(
            (LIFECYCLE, lifecycle_event(self.change.record.uuid, transition, component))
        )

    def components(self) -> list[Component]:
        return components(self.change.record.session)


def start(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change | None:
    """Right after acceptance: wait for the preparation time, or prepare now."""
    if phase != "ACCEPTED":
        return None
    begin = preparing_start(record)
    if begin > now:
        build = _Builder(record, phase, now)
        build.move("WAITING", "waiting for the scheduled preparation start")
        build.change.add_timers[timer("prepare", record.uuid)] = _ms(begin)
        build.change.drop_timers.append(timer("start", record.uuid))
        return build.change
    return prepare(record, phase, now)


def prepare(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change | None:
    """Start preparing: allocate storage and cache the image, in parallel."""
    if phase not in ("ACCEPTED", "WAITING"):
        return None
    build = _Builder(record, phase, now)
    build.move("PREPARING", "scheduled preparation start")
    session = record.session
    for component in build.components():
        if component.phase not in NOT_STARTED:
            continue  # a report came first (out of order): never move it back
        if component.family == "storage":
            build.set_component(component, "PREPARING", "allocating storage")
            resource = next(s for s in session.storage if s.meta and s.meta.uuid == component.uuid)
            build.emit(
                PREPARE_DATA,
                AllocateStorage,
                component.uuid,
                body=StorageBody(storage=component.uuid, resource=resource),
            )
        elif component.family == "executable":
            build.set_component(component, "PREPARING", "caching the image")
            build.emit(
                IMAGE_CACHE,
                CacheImage,
                component.uuid,
                body=ImageBody(executable=session.executable),
            )
        else:
            build.set_component(component, "WAITING", "waiting for its dependencies")
    build.change.drop_timers += [timer("start", record.uuid), timer("prepare", record.uuid)]
    build.change.add_timers[timer("window-end", record.uuid)] = _ms(window_end(record))
    return build.change


def cancel(record: SessionRecord, phase: SessionPhase, now: datetime, cause: str) -> Change | None:
    """The client cancels a live session: CANCELLED now, everything released."""
    if phase not in lifecycle.LIVE:
        return None
    build = _Builder(record, phase, now)
    build.move("CANCELLED", cause)
    _release(build, cause)
    return build.change


def end_of_window(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change | None:
    """The booked window is over: stop the executable and release the session."""
    if phase not in ("PREPARING", "AVAILABLE", "RUNNING"):
        return None
    build = _Builder(record, phase, now)
    end = window_end(record)
    if now < end:
        # The window was extended after this timer came due: wait for the new end.
        build.change.add_timers[timer("window-end", record.uuid)] = _ms(end)
        return build.change
    build.move("RELEASING", "the booked window ended")
    _release(build, "the booked window ended")
    return build.change


def _release(build: _Builder, reason: str) -> None:
    """Release what is still live: the launcher stops the executable, the stager
    undoes the staging; each reports its components released."""
    record = build.change.record
    live = [c for c in build.components() if c.phase not in COMPONENT_FINAL]
    launched = [c.uuid for c in live if c.family in LAUNCHED]
    staged = [c.uuid for c in live if c.family not in LAUNCHED]
    if launched or not staged:
        build.emit(
            RELEASE,
            Release,
            None,
            body=ReleaseBody(
                reason=reason,
                phase=build.change.phase,
                components=launched,
                executable=record.session.executable,
                handles=handles(record, launched),
            ),
        )
    if staged:
        build.emit(
            PREPARE_DATA,
            ReleaseData,
            None,
            body=ReleaseDataBody(
                reason=reason,
                normal=build.change.phase == "RELEASING",
                components=staged,
                handles=handles(record, staged),
            ),
        )
    uuid = record.uuid
    build.change.drop_timers += [
        timer("window-end", uuid),
        timer("prepare", uuid),
        timer("start", uuid),
    ]
    # If the release never completes (its worker is gone, its event dead-lettered),
    # this timer ends the session anyway, so no booking is held for ever.
    deadline = build.now + release_allowance(record)
    build.change.add_timers[timer("release-deadline", uuid)] = _ms(deadline)


def release_allowance(record: SessionRecord) -> timedelta:
    """How long a release may take: the platform's estimate with room to spare,
    never less than :data:`constants.RELEASE_DEADLINE`, plus any injected delay."""
    allowance = constants.RELEASE_DEADLINE
    schedule = record.session.schedule
    if schedule and schedule.releasing and schedule.releasing.duration:
        allowance = max(allowance, 3 * parse_duration(schedule.releasing.duration))
    fail = record.session.executable.injected_failure()
    if fail is not None and fail.phase == "RELEASING":
        allowance += parse_duration(fail.after)
    return allowance


def extension(record: SessionRecord, phase: SessionPhase) -> tuple[str, Event] | None:
    """The event telling the launcher that the booked window now ends elsewhere.

    Only once something may have been launched; before that the launch event
    will carry the new end itself.
    """
    if phase not in ("PREPARING", "AVAILABLE", "RUNNING"):
        return None
    executable = components(record.session)[0]
    body = ExtendBody(
        ends=format_instant(window_end(record)), handle=record.handles.get(executable.uuid)
    )
    event = ExtendExecutable.new(
        record.uuid, component=executable.uuid, platform=record.platform, body=body
    )
    return LAUNCH, event


def release_overdue(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change | None:
    """The release did not finish in time: what is still live is FAILED, and so is the session."""
    build = _Builder(record, phase, now)
    cause = "the release did not finish in time"
    for component in build.components():
        if component.phase not in COMPONENT_FINAL:
            build.set_component(component, "FAILED", cause, cause)
    if phase in lifecycle.LIVE:
        build.move("FAILED", cause)
    if not build.change.history:
        return None
    build.change.drop_timers.append(timer("release-deadline", record.uuid))
    return build.change


def report(
    record: SessionRecord,
    phase: SessionPhase,
    now: datetime,
    component_id: str,
    target: ComponentPhase,
    message: str | None = None,
    at: datetime | None = None,
) -> Change:
    """Apply a worker's report that a component reached ``target``, then what follows.

    ``at``: when the service says it happened (a Slurm job's real start): the
    transitions it causes are dated then, so a late start moves the actual times.
    """
    build = _Builder(record, phase, now, at)
    found = {c.uuid: c for c in build.components()}.get(component_id)
    if found is None:
        raise ReportRefused(f"session {record.uuid} has no component {component_id}")
    if found.phase in COMPONENT_FINAL:
        return build.change  # late news about a finished component changes nothing
    if target not in ("FAILED", "CANCELLED") and _ORDER[target] < _ORDER[found.phase]:
        raise ReportRefused(
            f"{found.family} {component_id} cannot go from {found.phase} to {target}"
        )
    build.set_component(found, target, "worker report", message)
    if phase in lifecycle.FINAL:
        return build.change  # a release report after cancel or failure: record only
    if found.phase == target:
        return build.change  # news without a move (a handle, progress): nothing follows
    _follow_up(build, found, target)
    derived = derive(build.change.phase, build.components())
    if derived != build.change.phase:
        cause = message or f"{found.family} {target.lower()}"
        build.move(derived, cause)
        if derived == "COMPLETED":
            build.change.drop_timers.append(timer("release-deadline", record.uuid))
        if derived == "RELEASING":
            _release(build, "the executable finished")
        elif derived == "FAILED":
            _release(build, cause)
    return build.change


def _follow_up(build: _Builder, changed: Component, target: ComponentPhase) -> None:
    """Publish the events that ``changed`` reaching ``target`` makes possible."""
    session = build.change.record.session
    everything = build.components()
    if changed.family == "storage" and target == "AVAILABLE":
        for data in session.data:
            if data.storage == changed.uuid and data.meta and data.meta.uuid:
                component = next(c for c in everything if c.uuid == data.meta.uuid)
                if component.phase not in NOT_STARTED:
                    continue  # already staged, or ended: staging it again would move it back
                build.set_component(component, "PREPARING", "staging data")
                build.emit(
                    PREPARE_DATA,
                    StageData,
                    data.meta.uuid,
                    body=StageBody(
                        data=data,
                        storage=changed.uuid,
                        until=format_instant(window_done(build.change.record)),
                    ),
                )
    if target == "AVAILABLE" and changed.family in ("executable", "data", "storage"):
        _maybe_launch(build)
    if changed.family == "executable" and target in ("AVAILABLE", "RUNNING"):
        # Compute is what the executable runs on: it follows the executable.
        compute = next(c for c in everything if c.family == "compute")
        if compute.phase == "PREPARING":
            build.set_component(compute, target, "the executable started")


def _maybe_launch(build: _Builder) -> None:
    session = build.change.record.session
    everything = {c.uuid: c for c in build.components()}
    executable = next(c for c in everything.values() if c.family == "executable")
    if executable.phase != "AVAILABLE":
        return
    needed = mounted(session)
    if any(everything[uuid].phase != "AVAILABLE" for uuid in needed if uuid in everything):
        return
    compute = next(c for c in everything.values() if c.family == "compute")
    if compute.phase not in ("INITIALIZING", "WAITING"):
        return  # already launched
    build.set_component(compute, "PREPARING", "launching")
    assert session.compute.cores
    assert session.compute.memory
    build.emit(
        LAUNCH,
        Launch,
        executable.uuid,
        body=LaunchBody(
            executable=session.executable,
            compute=session.compute,
            storage=session.storage,
            data=session.data,
            ends=format_instant(window_end(build.change.record)),
            starts=format_instant(window_start(build.change.record)),
            handles=handles(build.change.record),
            owner=build.change.record.owner,
        ),
    )


def derive(current: SessionPhase, parts: list[Component]) -> SessionPhase:
    """The session phase its components imply (the documented rule set).

    1. A final session phase never changes.
    2. Any component FAILED → FAILED.
    3. Releasing (the executable ended, or the session is RELEASING): COMPLETED
       once every component is final, else RELEASING.
    4. The executable RUNNING → RUNNING.
    5. The compute AVAILABLE → AVAILABLE: the launcher said the executable is
       ready for a person (a notebook, with its connectors); batch work goes
       RUNNING instead.
    6. Any component past WAITING → PREPARING.
    7. Otherwise the phase stays as it is (ACCEPTED or WAITING).
    """
    if current in lifecycle.FINAL:
        return current
    phases = {part.uuid: part.phase for part in parts}
    executable = next(part for part in parts if part.family == "executable")
    if "FAILED" in phases.values():
        return "FAILED"
    if current == "RELEASING" or executable.phase in COMPONENT_FINAL:
        return "COMPLETED" if all(p in COMPONENT_FINAL for p in phases.values()) else "RELEASING"
    if executable.phase == "RUNNING":
        return "RUNNING"
    compute = next(part for part in parts if part.family == "compute")
    if compute.phase == "AVAILABLE":
        return "AVAILABLE"
    if any(_ORDER.get(p, 0) > _ORDER["WAITING"] for p in phases.values()):
        return "PREPARING"
    return current
