"""Slurm through its command line: quote, submit, look, extend, cancel.

Every call runs one Slurm command with :func:`asyncio.create_subprocess_exec`
(never a shell: job names and paths are arguments, not text to parse), bounded
by a timeout, through a replaceable *runner* so that tests can count the
calls. Nothing here knows about events or sessions.

Times: Slurm reads and prints instants without a zone, in the local time of
the command's own process, so instants go out as local wall-clock time and
come back read as local time; within one process the two agree.

Finished jobs: ``squeue -t all`` lists a job until ``MinJobAge`` after it
ended; beyond that only accounting knows it. ``sacct`` reads slurmdbd, or with
``completion_log`` the job-completion log (``sacct -c``), for a Slurm without
slurmdbd (like the one-node cluster the tests start).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: squeue's fields, in order: id, name, state, start, end, time limit, reason (last:
#: free text). Our job names never hold the separator.
_SQUEUE_FORMAT = "%i|%j|%T|%S|%e|%l|%r"
_SACCT_FIELDS = "JobID,JobName,State,Start,End,ExitCode"
_QUOTE = re.compile(r"Job \d+ to start at (\S+)")
#: What Slurm says when its controller is away: worth asking again later.
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused")
#: Job states after which a job does nothing more.
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


class SlurmError(Exception):
    """A Slurm command failed; ``reason`` is Slurm's own words."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Completed:
    """How one command ended."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


#: Runs one command (argv, seconds it may take): the seam tests count calls through.
Runner = Callable[[Sequence[str], float], Awaitable[Completed]]


async def run_command(argv: Sequence[str], limit: float) -> Completed:
    """Run ``argv`` (no shell) and collect its output; killed after ``limit`` s."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        raise SlurmError(f"cannot run {argv[0]}: {error.strerror}") from error
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SlurmError(f"{argv[0]} did not answer within {limit:g} s", transient=True) from None
    return Completed(
        tuple(argv),
        process.returncode or 0,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


@dataclass(frozen=True, slots=True)
class Job:
    """What Slurm says of one job."""

    id: str
    name: str
    state: str
    start: datetime | None = None
    end: datetime | None = None
    #: Why it waits, or why it ended (``TimeLimit``), as squeue says it.
    reason: str = ""
    #: The batch script's exit status and the signal that ended it (sacct only).
    exit_code: int | None = None
    signal: int | None = None

    @property
    def ended(self) -> bool:
        """Whether the job will do nothing more."""
        return self.state in ENDED


def slurm_time(instant: datetime) -> str:
    """``instant`` as Slurm reads it: local wall-clock time, to the second."""
    return instant.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def parse_slurm_time(text: str) -> datetime | None:
    """A time Slurm printed (local, no zone) in UTC; None for N/A, Unknown, None."""
    try:
        return datetime.fromisoformat(text.strip()).astimezone(UTC)
    except ValueError:
        return None


def minutes(limit: timedelta) -> int:
    """A time limit in Slurm's unit, whole minutes, rounded up (at least one)."""
    return max(1, math.ceil(limit.total_seconds() / 60))


def _reason(result: Completed) -> str:
    """Slurm's error lines without their program prefix, joined."""
    lines = []
    for line in (result.stderr + "\n" + result.stdout).splitlines():
        line = re.sub(r"^\w+: error: ", "", line.strip())
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or f"{result.argv[0]} exited with status {result.code}"


class SlurmCLI:
    """The Slurm commands the slurm back end needs, through one runner."""

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        bin_dir: str | None = None,
        completion_log: bool = False,
        timeout: float = 30.0,
    ) -> None:
        # Looked up now, not at import: a test may have put a counting runner there.
        self.runner = runner or run_command
        self.bin_dir = bin_dir
        self.completion_log = completion_log
        self.timeout = timeout

    async def _run(self, program: str, *args: str, check: bool = True) -> Completed:
        path = os.path.join(self.bin_dir, program) if self.bin_dir else program
        result = await self.runner([path, *args], self.timeout)
        if check and result.code != 0:
            reason = _reason(result)
            raise SlurmError(reason, transient=any(s in reason for s in _UNREACHABLE))
        return result

    @staticmethod
    def _placement(
        cpus: int, mem_gib: int, limit: timedelta, account: str | None, partition: str | None
    ) -> list[str]:
        args = [
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={cpus}",
            f"--mem={mem_gib}G",
            f"--time={minutes(limit)}",
        ]
        if account:
            args.append(f"--account={account}")
        if partition:
            args.append(f"--partition={partition}")
        return args

    async def test_only(
        self,
        *,
        cpus: int,
        mem_gib: int,
        limit: timedelta,
        begin: datetime | None = None,
        account: str | None = None,
        partition: str | None = None,
    ) -> datetime:
        """When Slurm would start such a job (``sbatch --test-only``); submits nothing.

        Raises :class:`SlurmError` with Slurm's reason when it would not run it
        at all (no node has that much, an unknown partition or account).
        """
        args = ["--test-only", *self._placement(cpus, mem_gib, limit, account, partition)]
        if begin is not None:
            args.append(f"--begin={slurm_time(begin)}")
        result = await self._run("sbatch", *args, "--wrap=true", check=False)
        found = _QUOTE.search(result.stderr + result.stdout)
        if result.code == 0 and found:
            start = parse_slurm_time(found.group(1))
            if start is not None:
                return start
        reason = _reason(result)
        raise SlurmError(reason, transient=any(s in reason for s in _UNREACHABLE))

    async def submit(
        self,
        script: Path,
        *,
        job_name: str,
        cpus: int,
        mem_gib: int,
        limit: timedelta,
        begin: datetime | None,
        stdout: Path,
        stderr: Path,
        workdir: Path,
        account: str | None = None,
        partition: str | None = None,
    ) -> str:
        """Submit ``script``; the job id (``sbatch --parsable``)."""
        args = [
            "--parsable",
            f"--job-name={job_name}",
            f"--output={stdout}",
            f"--error={stderr}",
            f"--chdir={workdir}",
            *self._placement(cpus, mem_gib, limit, account, partition),
        ]
        if begin is not None:
            args.append(f"--begin={slurm_time(begin)}")
        result = await self._run("sbatch", *args, str(script))
        # "1234" or "1234;cluster"
        return result.stdout.strip().split(";")[0]

    async def find(self, job_name: str) -> str | None:
        """The id of a job of ours named ``job_name`` that Slurm still lists, if any."""
        result = await self._run("squeue", "--me", "-h", "-t", "all", "-n", job_name, "-o", "%i")
        ids = result.stdout.split()
        return ids[-1] if ids else None

    async def queue(self) -> dict[str, Job]:
        """Every job of ours squeue still lists, ended ones included: ONE squeue call."""
        result = await self._run("squeue", "--me", "-h", "-t", "all", "-o", _SQUEUE_FORMAT)
        jobs: dict[str, Job] = {}
        for line in result.stdout.splitlines():
            parts = line.split("|", 6)
            if len(parts) != 7:
                continue
            job_id, name, state, start, end, _limit, reason = parts
            jobs[job_id] = Job(
                id=job_id,
                name=name,
                state=state.split()[0],
                start=parse_slurm_time(start),
                end=parse_slurm_time(end),
                reason="" if reason in ("None", "(null)") else reason,
            )
        return jobs

    async def accounting(self, ids: Iterable[str]) -> dict[str, Job]:
        """What accounting says of jobs ``ids``: ONE sacct call (none for no ids)."""
        wanted = sorted(set(ids), key=lambda i: (len(i), i))
        if not wanted:
            return {}
        args = ["-P", "-n", "-X", "-j", ",".join(wanted), f"--format={_SACCT_FIELDS}"]
        if self.completion_log:
            args.insert(0, "-c")
        result = await self._run("sacct", *args)
        jobs: dict[str, Job] = {}
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) != 6 or parts[0] not in wanted:
                continue  # job steps (1234.batch) and strangers
            job_id, name, state, start, end, exit_code = parts
            code, _, signal = exit_code.partition(":")
            jobs[job_id] = Job(
                id=job_id,
                name=name,
                # "CANCELLED by 0" names who cancelled it.
                state=state.split()[0],
                start=parse_slurm_time(start),
                end=parse_slurm_time(end),
                exit_code=int(code) if code.isdigit() else None,
                signal=int(signal) if signal.isdigit() else None,
            )
        return jobs

    async def jobs(self, ids: Iterable[str]) -> dict[str, Job]:
        """What Slurm says of jobs ``ids``: one squeue call for all of them, and one
        sacct call for those that ended or that squeue no longer lists."""
        wanted = set(ids)
        listed = await self.queue()
        found = {job_id: job for job_id, job in listed.items() if job_id in wanted}
        done = {job_id for job_id in wanted if job_id not in found or found[job_id].ended}
        for job_id, job in (await self.accounting(done)).items():
            queued = found.get(job_id)
            # Accounting has the exit status; squeue the reason (TimeLimit …).
            found[job_id] = Job(
                id=job.id,
                name=job.name,
                state=job.state,
                start=job.start,
                end=job.end,
                reason=queued.reason if queued else "",
                exit_code=job.exit_code,
                signal=job.signal,
            )
        return found

    async def cancel(self, job_id: str) -> None:
        """Cancel a job (``scancel``); a job already gone is no error."""
        result = await self._run("scancel", job_id, check=False)
        if result.code != 0 and "Invalid job id" not in result.stderr:
            reason = _reason(result)
            raise SlurmError(reason, transient=any(s in reason for s in _UNREACHABLE))

    async def set_time_limit(self, job_id: str, limit: timedelta) -> None:
        """Give a job a new time limit (``scontrol update``), counted from its start."""
        await self._run("scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes(limit)}")
