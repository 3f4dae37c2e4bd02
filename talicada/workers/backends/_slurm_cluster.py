"""Following every job of one Slurm platform, with one look per interval.

A :class:`Cluster` asks Slurm about all the jobs it follows once per
``poll_interval``: one ``squeue`` for the jobs Slurm still lists, and one
``sacct`` for those that ended or that squeue no longer lists
(:meth:`SlurmCLI.jobs`). The number of calls does not grow with the number
of jobs. Each change is reported: RUNNING when the job really starts (its
start from Slurm, and how late it is against the booked start), COMPLETED
with its digests and output, FAILED with Slurm's reason (TIMEOUT: the job
reached its time limit).

What is followed is kept in the worker's ledger, so a restarted launcher
resumes following its jobs without asking anyone.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from talicada.events.envelope import Launch
from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.schema.model import ComponentPhase, TestTask
from talicada.services.slurm import Job, SlurmCLI, SlurmError
from talicada.settings import PlatformSettings, SlurmSettings
from talicada.workers.backends._shared import sleep_until
from talicada.workers.files import SessionFiles
from talicada.workers.outcome import tail
from talicada.workers.runtime import CallbackFailed, WorkerContext
from talicada.workers.tasks import parse_result

log = structlog.get_logger("talicada.worker.slurm")

#: Job states in which the job's program runs.
RUNNING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED"})
#: A start later than the booked one by more than this (seconds) is called late
#: in the message (Slurm starts --begin jobs on its next scheduling pass).
LATE_AFTER = 2.0


class Watch(msgspec.Struct, kw_only=True):
    """One followed Slurm job: the launch it serves and what was last seen."""

    job_id: str
    launch: Launch
    #: The --begin it was submitted with (ISO 8601): the booked start, or later.
    begin: str
    #: Local mount directory → the path the executable sees, to report digests by.
    paths: dict[str, str] = {}
    state: str = "PENDING"
    #: When Slurm really started it (ISO 8601), once it has.
    started: str | None = None


_watch_encoder = msgspec.json.Encoder()
_watch_decoder = msgspec.json.Decoder(Watch)


class Cluster:
    """The jobs of one Slurm platform, followed together."""

    def __init__(self, context: WorkerContext, platform: PlatformSettings, cli: SlurmCLI) -> None:
        assert platform.slurm is not None
        self.context = context
        self.platform = platform
        self.settings: SlurmSettings = platform.slurm
        self.cli = cli
        self.watches: dict[str, Watch] = {}
        self.ledger_name = f"slurm:{platform.name}"
        self._lock = asyncio.Lock()
        self._following = False

    # -- what is followed ----------------------------------------------------

    async def resume(self) -> None:
        """Take up what a predecessor followed (from the ledger)."""
        for value in (await self.context.ledger.all(self.ledger_name)).values():
            watch = _watch_decoder.decode(value)
            self.watches[watch.job_id] = watch
        if self.watches:
            log.info("slurm.resumed", platform=self.platform.name, jobs=len(self.watches))

    def follow(self) -> None:
        """Start looking at the jobs once per interval (once: later calls do nothing)."""
        if not self._following:
            self._following = True
            self.context.spawn(self._follow())

    async def watch(self, watch: Watch) -> None:
        """Follow ``watch`` from now on."""
        self.watches[watch.job_id] = watch
        await self.context.ledger.put(self.ledger_name, watch.job_id, _watch_encoder.encode(watch))

    async def unwatch(self, job_id: str) -> Watch | None:
        """Stop following a job (release does this before cancelling it)."""
        await self.context.ledger.drop(self.ledger_name, job_id)
        return self.watches.pop(job_id, None)

    def followed(self, session: str) -> Watch | None:
        """The watch of the job launched for broker session ``session``."""
        return next((w for w in self.watches.values() if w.launch.session == session), None)

    def files(self, session: str) -> SessionFiles:
        """Where ``session``'s script, output and markers are."""
        return SessionFiles.of(self.context.settings.work_dir, session)

    # -- following -------------------------------------------------------------

    async def _follow(self) -> None:
        """Until the worker stops: look at every followed job once per interval."""
        stopping = self.context.stopping
        while not stopping.is_set():
            if self.watches:
                try:
                    await self.poll_once()
                except SlurmError as error:
                    log.warning("slurm.poll_failed", reason=error.reason)
                except CallbackFailed as error:
                    # Nothing was marked seen: the next look reports it again.
                    log.warning("slurm.report_failed", reason=str(error))
            await sleep_until(stopping, self.settings.poll_interval)

    async def poll_once(self) -> None:
        """One look at every followed job: one squeue, and one sacct if some ended."""
        asked = dict(self.watches)
        seen = await self.cli.jobs(list(asked))
        # Only the jobs asked about: one submitted during the look is not missing.
        for job_id, watch in asked.items():
            await self.observe(watch, seen.get(job_id))

    async def observe(self, watch: Watch, job: Job | None) -> None:
        """Report what changed for ``watch`` now that Slurm says ``job`` (None: unknown)."""
        async with self._lock:
            if self.watches.get(watch.job_id) is not watch:
                return  # released (or ended) meanwhile
            if job is not None and (job.state in RUNNING or job.ended) and watch.started is None:
                await self._started(watch, job)
            if job is None or job.ended:
                await self._ended(watch, job)
                return
            if job.state != watch.state:
                watch.state = job.state
                await self.watch(watch)

    async def _started(self, watch: Watch, job: Job) -> None:
        """The job runs (or ran): RUNNING, with Slurm's start and its lateness."""
        launch = watch.launch
        assert launch.component is not None
        begin = parse_instant(watch.begin)
        # Slurm prints whole seconds: never before the --begin it was given.
        started = max(job.start, begin) if job.start else datetime.now(UTC)
        message = f"Slurm job {watch.job_id} started at {format_instant(started)}"
        late = (started - begin).total_seconds()
        if late > LATE_AFTER:
            message += f", {int(late)} s after the booked start {watch.begin}"
        await self.context.reporter.report(
            launch,
            launch.component,
            "RUNNING",
            message=message,
            backend="slurm",
            handle=watch.job_id,
            outputs={"started": format_instant(started)},
            # The session's actual times are Slurm's, not when we looked.
            at=format_instant(started),
        )
        watch.started = format_instant(started)
        watch.state = "RUNNING"
        await self.watch(watch)

    async def _ended(self, watch: Watch, job: Job | None) -> None:
        """A job that ended by itself: report how, with its output; stop following."""
        launch = watch.launch
        assert launch.component is not None
        files = self.files(launch.session)
        if job is not None and job.state == "CANCELLED" and files.released.exists():
            await self.unwatch(watch.job_id)
            return  # cancelled by our release, which reports it
        output = {"stdout": tail(files.output / "stdout"), "stderr": tail(files.output / "stderr")}
        phase, details = _outcome(watch, job, output)
        if job is not None and job.end is not None:
            # Whole seconds again: never before the start we reported.
            ended = max(job.end, parse_instant(watch.started)) if watch.started else job.end
            details["outputs"] = {"ended": format_instant(ended)}
            details["at"] = format_instant(ended)
        await self.context.reporter.report(
            launch, launch.component, phase, backend="slurm", handle=watch.job_id, **details
        )
        await self.unwatch(watch.job_id)
        log.info("slurm.ended", session=launch.session, job=watch.job_id, phase=phase)


def _outcome(
    watch: Watch, job: Job | None, output: dict[str, str]
) -> tuple[ComponentPhase, dict[str, Any]]:
    """The phase an ended job reports, and its details."""
    name = f"Slurm job {watch.job_id}"
    if job is None:
        return "FAILED", {"message": f"{name} is known neither to squeue nor to sacct"}
    if job.state == "COMPLETED" and not job.exit_code:
        if not isinstance(watch.launch.body.executable, TestTask):
            return "COMPLETED", {"output": output}  # a container's output is its own
        try:
            digests = parse_result(output["stdout"].encode())
        except ValueError as error:
            return "FAILED", {"message": str(error), "output": output}
        return "COMPLETED", {"output": output, "digests": _shown(digests, watch.paths) or None}
    if job.state == "TIMEOUT":
        message = f"{name} was stopped by Slurm at its time limit (TIMEOUT)"
    elif job.state == "CANCELLED":
        message = f"{name} was cancelled outside the broker"
    else:
        last = output["stderr"].strip().splitlines()[-1:]
        status = f"exit status {job.exit_code}" if job.exit_code is not None else job.state
        message = f"{name} ended {job.state} ({status})" + (f": {last[0]}" if last else "")
    if job.reason and job.reason not in message:
        message += f" [{job.reason}]"
    return "FAILED", {"message": message, "output": output}


def _shown(digests: dict[str, str], paths: dict[str, str]) -> dict[str, str]:
    """Digests by the paths the executable sees (its mounts), not the local ones."""
    shown = {}
    for path, digest in digests.items():
        for local, mounted in paths.items():
            if path.startswith(local):
                path = mounted.rstrip("/") + "/" + path[len(local) :].lstrip("/")
                break
        shown[path] = digest
    return shown
