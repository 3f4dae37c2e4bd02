"""A real Slurm for tests: the ``slurm`` fixture, a Slurm platform, call counting.

``scripts/test.sh`` (through scripts/services.sh) starts a one-node Slurm when
none answers and exports ``TALICADA_TEST_SLURM=1`` (and ``SLURM_CONF`` for its
own cluster). Tests that need Slurm take the ``slurm`` fixture, which FAILS
(never skips) when Slurm is absent, saying how to start it.

The fixture replaces :func:`talicada.services.slurm.run_command` with one that
counts every command by program and remembers every job submitted, so tests
can count squeue/sacct calls and every job a test made is cancelled after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from talicada.services import slurm as slurm_service
from talicada.services.slurm import Completed, SlurmCLI
from talicada.settings import PlatformSettings
from tests.platform_support import QUICK

HOW_TO_START = (
    "Run the tests with `make test` (scripts/test.sh), which starts a one-node Slurm "
    "(as root it installs Debian's slurm-wlm and munge) and sets TALICADA_TEST_SLURM=1 "
    "and SLURM_CONF; or start Slurm yourself so that `sinfo` answers, and set "
    "TALICADA_TEST_SLURM=1."
)


class SlurmUnderTest:
    """The test's view of the real Slurm: what was called, what was submitted."""

    def __init__(self, completion_log: bool) -> None:
        self.completion_log = completion_log
        self.calls: Counter[str] = Counter()
        self.submitted: list[str] = []
        # Through self.run, so that the test's own commands are counted and its
        # jobs cancelled after it too.
        self.cli = SlurmCLI(self.run, completion_log=completion_log)

    async def run(self, argv: Sequence[str], limit: float) -> Completed:
        """Count, run for real, remember submitted job ids."""
        program = os.path.basename(argv[0])
        self.calls[program] += 1
        result = await _REAL_RUN(argv, limit)
        if program == "sbatch" and "--parsable" in argv and result.code == 0:
            self.submitted.append(result.stdout.strip().split(";")[0])
        return result

    def listed(self) -> set[str]:
        """The ids of our jobs squeue lists as pending or running (not ended)."""
        out = _sync(["squeue", "--me", "-h", "-o", "%i"])
        return set(out.split())

    def field(self, job_ids: list[str], field: str) -> set[str]:
        """What squeue says of jobs ``job_ids`` in format ``field`` (``%a``: account)."""
        argv = ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", field]
        return set(_sync(argv).split())

    def scontrol(self, *args: str) -> None:
        """Run ``scontrol`` as an administrator would (it must succeed)."""
        subprocess.run(["scontrol", *args], capture_output=True, timeout=20, check=True)

    def scancel(self, job_ids: list[str]) -> None:
        """Cancel jobs behind the broker's back, as a user or an admin would."""
        _sync(["scancel", *job_ids])

    async def wait_gone(self, job_id: str, limit: float = 10) -> None:
        """Poll squeue (bounded) until it no longer lists ``job_id`` as live.

        A cancelled job may show COMPLETING for a moment while its processes end.
        """
        for _ in range(int(limit / 0.2)):
            if job_id not in await asyncio.to_thread(self.listed):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"squeue still lists job {job_id} after {limit} s")

    def sacct(self, job_id: str) -> str:
        """What ``sacct`` says of one job (``State|ExitCode``), or ''."""
        args = ["sacct", "-P", "-n", "-X", "-j", job_id, "--format=State,ExitCode"]
        if self.completion_log:
            args.insert(1, "-c")
        return _sync(args).strip()

    async def wait_state(self, job_id: str, states: set[str], limit: float = 20) -> str:
        """Poll squeue until job ``job_id`` is in one of ``states``."""
        state = ""
        for _ in range(int(limit / 0.2)):
            jobs = await self.cli.queue()
            state = jobs[job_id].state if job_id in jobs else ""
            if state in states:
                return state
            await asyncio.sleep(0.2)
        raise AssertionError(f"Slurm job {job_id} is {state or 'gone'}, wanted {states}")

    async def sleeper(self, where: Path, *, cpus: int, minutes: int, hold: bool = False) -> str:
        """Submit a job that sleeps for ``minutes`` on ``cpus`` cores (held: never starts)."""
        script = where / "sleep.sh"
        script.write_text("#!/bin/sh\nexec sleep 3600\n")
        job = await self.cli.submit(
            script,
            job_name="talicada-test-sleeper",
            cpus=cpus,
            mem_gib=1,
            limit=timedelta(minutes=minutes),
            begin=None,
            stdout=Path(os.devnull),
            stderr=Path(os.devnull),
            workdir=where,
        )
        if hold:
            _sync(["scontrol", "hold", job])
        return job

    def platform(self, **options: Any) -> PlatformSettings:
        """A platform launching on this Slurm, staging locally, with quick estimates."""
        settings: dict[str, Any] = {
            "name": "slurm",
            "launcher": "slurm",
            "executables": ["ping", "delay", "checksum", "docker-container"],
            "cores": os.cpu_count() or 1,
            "memory": 4,
            "preparation": QUICK,
            "slurm": {
                "poll_interval": 0.3,
                "quote_ttl": 0,
                "completion_log": self.completion_log,
                **options.pop("slurm", {}),
            },
            **options,
        }
        return msgspec.convert(settings, PlatformSettings)


_REAL_RUN = slurm_service.run_command


def _sync(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout


def _answers() -> str | None:
    """Why Slurm cannot be used here, or None when ``sinfo`` answers."""
    if shutil.which("sinfo") is None:
        return "the Slurm commands are not installed (no sinfo on PATH)"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s"
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_answers() -> bool:
    """That a Slurm answers here; True when ended jobs are read from ``sacct -c``."""
    if os.environ.get("TALICADA_TEST_SLURM") != "1":
        pytest.fail(f"TALICADA_TEST_SLURM is not set: no Slurm to test on. {HOW_TO_START}")
    problem = _answers()
    if problem is not None:
        pytest.fail(f"TALICADA_TEST_SLURM=1 but Slurm does not answer: {problem}. {HOW_TO_START}")
    # Without slurmdbd, ended jobs are only in the job-completion log (sacct -c).
    probe = subprocess.run(
        ["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=10, check=False
    )
    _cancel_leftovers()
    return "storage is disabled" in probe.stderr + probe.stdout


#: The cluster scripts/services.sh starts; only on it are leftovers cancelled.
TEST_CLUSTER = "talicada-test"


def _cancel_leftovers() -> None:
    """Cancel jobs an interrupted earlier run left on the test cluster (never elsewhere).

    The tests assume the one node free: a ``delay`` job of a killed test run
    would otherwise hold it for minutes.
    """
    config = _sync(["scontrol", "show", "config"])
    if f"ClusterName             = {TEST_CLUSTER}" not in config:
        return
    names = _sync(["squeue", "--me", "-h", "-o", "%i %j"]).splitlines()
    stale = [
        i
        for i, _, n in (line.partition(" ") for line in names)
        if n.startswith(("tc-", "talicada-test-"))
    ]
    if stale:
        _sync(["scancel", *stale])


@pytest_asyncio.fixture(name="slurm")
async def slurm_fixture(
    slurm_answers: bool, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SlurmUnderTest]:
    """The real Slurm, with every command counted; jobs submitted are cancelled after."""
    under_test = SlurmUnderTest(completion_log=slurm_answers)
    monkeypatch.setattr(slurm_service, "run_command", under_test.run)
    try:
        yield under_test
    finally:
        if under_test.submitted:
            await asyncio.to_thread(_sync, ["scancel", *under_test.submitted])
