"""``launch`` and ``release`` / slurm: the executable as a Slurm batch job.

Offers: the :class:`Advisor` asks ``sbatch --test-only`` when Slurm would start
a job of the request's size and duration, and the broker offers no window
before that (``Advice.earliest``); a request whose start interval ends before
Slurm's quote, or that Slurm would not run at all, is answered NO in Slurm's
words.

Launch writes a batch script under the session's files (the same task program
the local launcher runs, or the container through the platform's
``container_runtime``) and submits it with ``--begin`` at the booked start and
a time limit reaching to the booked end. Submission is idempotent: the job is
named after the broker session (``tc-`` and 12 hex digits of its uuid), its id
is kept in the session's files and looked for with ``squeue --name`` before
any retry. The job id is the executable's handle.

Following is :class:`~talicada.workers.backends._slurm_cluster.Cluster`'s job:
one squeue (and one sacct) per interval for all jobs. ``executable.extend``
moves the time limit (``scontrol update``); release marks the session
released, stops following, then cancels the job (``scancel``).
"""

from __future__ import annotations

import os
import shlex
import time
from datetime import UTC, datetime, timedelta

import structlog

from talicada import constants
from talicada.broker.advice import Advice
from talicada.events.bus import Delivery
from talicada.events.envelope import Event, ExtendExecutable, Launch, Release
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.schema.model import ComponentPhase, DockerContainer, TestTask, kind_of
from talicada.schema.validation import ValidRequest
from talicada.services.slurm import SlurmCLI, SlurmError
from talicada.settings import PlatformSettings, SlurmSettings
from talicada.workers.backends._slurm_cluster import Cluster, Watch
from talicada.workers.files import SessionFiles
from talicada.workers.launch import link_mounts
from talicada.workers.outcome import tail
from talicada.workers.runtime import Handler, WorkerContext
from talicada.workers.tasks import TaskSpec, command

log = structlog.get_logger("talicada.worker.slurm")

#: Names of the jobs this broker submits start with this.
NAME_PREFIX = "tc-"


def job_name(session: str) -> str:
    """The Slurm job name for broker session ``session``: the same on every attempt."""
    return NAME_PREFIX + session.replace("-", "")[:12]


def cli_for(settings: SlurmSettings) -> SlurmCLI:
    """The Slurm command line as the platform's settings configure it."""
    return SlurmCLI(
        bin_dir=settings.bin_dir,
        completion_log=settings.completion_log,
        timeout=settings.command_timeout,
    )


def principal_of(event: Event) -> str | None:
    """The principal the session belongs to (the launch event names it)."""
    owner = getattr(getattr(event, "body", None), "owner", None)
    return owner if isinstance(owner, str) else None


class Clusters:
    """One followed cluster per platform, made on first use."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._clusters: dict[str, Cluster] = {}

    async def of(self, platform: PlatformSettings, *, follow: bool) -> Cluster:
        """The cluster of ``platform``; ``follow``: its jobs are followed from now on.

        Only the launcher follows: a release worker (its own process, or its own
        context when embedded) would otherwise ask Slurm a second time.
        """
        cluster = self._clusters.get(platform.name)
        if cluster is None:
            if platform.slurm is None:
                raise ValueError(f"platform {platform.name} has no [platforms.slurm] settings")
            cluster = Cluster(self.context, platform, cli_for(platform.slurm))
            self._clusters[platform.name] = cluster
            await cluster.resume()
        if follow:
            cluster.follow()
        return cluster

    async def resume_all(self) -> None:
        """Resume following on every platform this launcher serves (at start)."""
        for platform in self.context.settings.platforms:
            if platform.launcher == "slurm":
                await self.of(platform, follow=True)


#: One set of clusters per worker context: launch and release share what they follow.
_CLUSTERS: dict[int, Clusters] = {}


def clusters_of(context: WorkerContext) -> Clusters:
    """The clusters this worker context follows."""
    return _CLUSTERS.setdefault(id(context.ledger), Clusters(context))


def launcher(context: WorkerContext) -> Handler:
    """The launch handler of the slurm back end."""
    clusters = clusters_of(context)
    context.spawn(clusters.resume_all())

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        cluster = await clusters.of(context.platform(event), follow=True)
        match event:
            case Launch(component=str(component)):
                await _launch(context, cluster, event, component)
            case ExtendExecutable(body=body):
                if body.handle is not None and body.handle.id:
                    await _extend(cluster, body.handle.id, parse_instant(body.ends))
            case _:
                raise ValueError(f"launch/slurm does not handle {event.type!r} events")

    return handle


async def _launch(context: WorkerContext, cluster: Cluster, event: Launch, component: str) -> None:
    reporter = context.reporter
    files = cluster.files(event.session)
    files.root.mkdir(parents=True, exist_ok=True)
    if files.released.exists():
        await reporter.report(
            event, component, "CANCELLED", message="released before it was launched"
        )
        return
    known = event.body.handles.get(component)
    if (known and known.id and known.backend == "slurm") or cluster.followed(event.session):
        return  # launched before (a redelivery): the cluster follows it already
    plan = _program(cluster.settings, files, event)
    if isinstance(plan, str):
        await reporter.report(event, component, "FAILED", message=plan)
        return
    argv, environment, paths = plan
    now = datetime.now(UTC)
    begin = max(parse_instant(event.body.starts), now) if event.body.starts else now
    try:
        job_id = await _submit(cluster, event, files, argv, environment, begin)
    except SlurmError as error:
        if error.transient:
            raise  # Slurm is busy: the event is retried later, still one job
        await reporter.report(event, component, "FAILED", message=f"Slurm refused: {error.reason}")
        return
    await cluster.watch(
        Watch(job_id=job_id, launch=event, begin=format_instant(begin), paths=paths)
    )
    await reporter.report(
        event,
        component,
        "AVAILABLE",
        suffix=":launched",
        backend="slurm",
        handle=job_id,
        message=f"Slurm job {job_id} submitted to begin at {format_instant(begin)}",
    )
    if files.released.exists():
        # Release began while we submitted: it may have looked too early.
        await cluster.unwatch(job_id)
        await cluster.cli.cancel(job_id)


def _program(
    settings: SlurmSettings, files: SessionFiles, event: Launch
) -> tuple[list[str], dict[str, str], dict[str, str]] | str:
    """(argv, environment, local mount → seen path) the job runs, or why it cannot."""
    executable = event.body.executable
    if isinstance(executable, TestTask):
        body = event.body
        link_mounts(files, body.compute, body.data, body.storage, body.handles)
        paths = {str(files.mount(path)): path for path in getattr(executable, "paths", [])}
        return command(TaskSpec.from_executable(executable, list(paths))), {}, paths
    if isinstance(executable, DockerContainer):
        if not settings.container_runtime:
            return "this Slurm platform has no container runtime (slurm.container_runtime)"
        image = executable.image.locations[0]
        argv = shlex.split(settings.container_runtime.format(image=image))
        if executable.entrypoint:
            argv.append(executable.entrypoint)
        argv.extend(executable.command or [])
        return argv, dict(executable.environment or {}), {}
    return f"Slurm runs test tasks and containers, not {kind_of(executable)}"


def batch_script(argv: list[str], environment: dict[str, str], session: str) -> str:
    """The batch script that runs ``argv`` (quoted: nothing in it is shell text)."""
    lines = ["#!/bin/sh", f"# Talicada session {session}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(environment.items())]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


async def _submit(
    cluster: Cluster,
    event: Launch,
    files: SessionFiles,
    argv: list[str],
    environment: dict[str, str],
    begin: datetime,
) -> str:
    """The job of this session: found (a predecessor submitted it) or submitted now."""
    record = files.root / "slurm-job"
    if record.exists():
        return record.read_text().strip()
    name = job_name(event.session)
    found = await cluster.cli.find(name)
    if found is not None:
        record.write_text(found)
        return found
    for key in environment:
        if not key.isidentifier():
            raise SlurmError(f"environment variable name {key!r} is not valid")
    script = files.root / "job.sh"
    script.write_text(batch_script(argv, environment, event.session))
    files.output.mkdir(parents=True, exist_ok=True)
    compute = event.body.compute
    settings = cluster.settings
    job_id = await cluster.cli.submit(
        script,
        job_name=name,
        cpus=(compute.cores.min if compute.cores else None) or 1,
        mem_gib=(compute.memory.min if compute.memory else None) or 1,
        # Slurm counts the limit from the job's real start: reach the booked end.
        limit=parse_instant(event.body.ends) - begin,
        begin=begin,
        stdout=files.output / "stdout",
        stderr=files.output / "stderr",
        workdir=files.root,
        account=settings.account_for(principal_of(event), cluster.platform.name),
        partition=settings.partition,
    )
    # Before anything else can fail: a retry must find this job, not submit another.
    temporary = record.with_suffix(".tmp")
    temporary.write_text(job_id)
    os.replace(temporary, record)
    log.info("slurm.submitted", session=event.session, job=job_id, begin=format_instant(begin))
    return job_id


async def _extend(cluster: Cluster, job_id: str, ends: datetime) -> None:
    """Move the job's time limit so that it may run until ``ends``."""
    watch = cluster.watches.get(job_id)
    start = parse_instant(watch.started or watch.begin) if watch else datetime.now(UTC)
    try:
        await cluster.cli.set_time_limit(job_id, ends - start)
    except SlurmError as error:
        if error.transient:
            raise
        # The job ended meanwhile: nothing is left to extend.
        log.warning("slurm.extend_refused", job=job_id, reason=error.reason)
        return
    log.info("slurm.extended", job=job_id, ends=format_instant(ends))


def releaser(context: WorkerContext) -> Handler:
    """The release handler of the slurm back end: cancel the job, report the components."""
    clusters = clusters_of(context)

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, Release):
            raise ValueError(f"release/slurm does not handle {event.type!r} events")
        cluster = await clusters.of(context.platform(event), follow=False)
        files = cluster.files(event.session)
        # The marker first: a launch racing with us sees it and cancels its own job.
        files.root.mkdir(parents=True, exist_ok=True)
        files.released.touch()
        job_id = _job_of(event, cluster, files)
        if job_id is None:
            job_id = await cluster.cli.find(job_name(event.session))
        if job_id is not None:
            await cluster.unwatch(job_id)
            await cluster.cli.cancel(job_id)
            log.info("slurm.cancelled", session=event.session, job=job_id)
        output = {"stdout": tail(files.output / "stdout"), "stderr": tail(files.output / "stderr")}
        outcome: ComponentPhase = "COMPLETED" if event.body.normal else "CANCELLED"
        for component in event.body.components:
            if any(output.values()):
                await context.reporter.report(event, component, outcome, output=output)
            else:
                await context.reporter.report(event, component, outcome)

    return handle


def _job_of(event: Release, cluster: Cluster, files: SessionFiles) -> str | None:
    for handle in event.body.handles.values():
        if handle.backend == "slurm" and handle.id:
            return handle.id
    watch = cluster.followed(event.session)
    if watch is not None:
        return watch.job_id
    record = files.root / "slurm-job"
    return record.read_text().strip() if record.exists() else None


class Advisor:
    """Offer-time facts from Slurm: when it would start the work, or why it would not.

    A quote (``sbatch --test-only``) is reused for ``quote_ttl`` seconds for
    the same size, duration and start, so a burst of requests costs Slurm a
    few quotes, not one per request.
    """

    def __init__(self, platform: PlatformSettings) -> None:
        assert platform.slurm is not None
        self.settings = platform.slurm
        self.platform = platform.name
        self.cli = cli_for(platform.slurm)
        self._quotes: dict[tuple[object, ...], tuple[float, datetime | SlurmError]] = {}

    async def close(self) -> None:
        """Nothing is held between quotes."""

    async def advise(
        self, platform: PlatformSettings, valid: ValidRequest, owner: str | None = None
    ) -> Advice:
        """When Slurm would start ``valid`` for ``owner`` (``earliest``: quoted in the
        account the rule maps ``owner`` to), or why it cannot (reasons)."""

        def refuse(reason: str) -> Advice:
            return Advice([msg.make(msg.PLATFORM_REFUSES, platform=platform.name, reason=reason)])

        executable = valid.request.executable
        if isinstance(executable, DockerContainer) and not self.settings.container_runtime:
            return refuse("it has no container runtime configured (slurm.container_runtime)")
        if not isinstance(executable, TestTask | DockerContainer):
            return refuse(f"Slurm runs test tasks and containers, not {kind_of(executable)}")
        duration = valid.duration or constants.DEFAULT_DURATION
        begin = valid.start.start if valid.start else None
        # The largest size an offer may hold: a smaller job never starts later.
        cores = min(valid.cores[1], platform.session_cores)
        memory = min(valid.memory[1], platform.session_memory)
        account = self.settings.account_for(owner, self.platform)
        sizes: Advice | None = None
        quote = await self._quote(cores, memory, duration, begin, account)
        if isinstance(quote, SlurmError) and (cores, memory) != (valid.cores[0], valid.memory[0]):
            # Too big for Slurm, perhaps; the smallest size asked for may still run.
            cores, memory = valid.cores[0], valid.memory[0]
            quote = await self._quote(cores, memory, duration, begin, account)
            sizes = Advice(cores=(cores,), memory=(memory,))
        if isinstance(quote, SlurmError):
            if quote.transient:
                return Advice(
                    [
                        msg.make(
                            msg.PLATFORM_UNAVAILABLE, platform=platform.name, reason=quote.reason
                        )
                    ]
                )
            return refuse(f"Slurm says: {quote.reason}")
        if valid.start is not None and quote > valid.start.end:
            return refuse(
                f"Slurm would start it at {format_instant(quote)} at the earliest "
                f"(sbatch --test-only), after the requested start interval ends "
                f"({format_instant(valid.start.end)})"
            )
        if sizes is not None:
            return Advice(cores=sizes.cores, memory=sizes.memory, earliest=quote)
        return Advice(earliest=quote)

    async def _quote(
        self,
        cores: int,
        memory: int,
        duration: timedelta,
        begin: datetime | None,
        account: str | None,
    ) -> datetime | SlurmError:
        now = time.monotonic()
        key = (cores, memory, duration, begin.replace(microsecond=0) if begin else None, account)
        cached = self._quotes.get(key)
        if cached is not None and now - cached[0] <= self.settings.quote_ttl:
            return cached[1]
        result: datetime | SlurmError
        try:
            result = await self.cli.test_only(
                cpus=cores,
                mem_gib=memory,
                limit=duration,
                begin=begin if begin and begin > datetime.now(UTC) else None,
                account=account,
                partition=self.settings.partition,
            )
        except SlurmError as error:
            result = error
        self._quotes = {k: v for k, v in self._quotes.items() if now - v[0] <= 60}
        self._quotes[key] = (now, result)
        return result
