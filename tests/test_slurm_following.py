"""Following 100 Slurm jobs costs one squeue per interval (and one sacct when some ended).

The launcher's handler is driven directly with 100 launch events; every job
is a real job on the one-node Slurm that scripts/test.sh starts (submitted to
begin in an hour, so they wait in Slurm's queue without holding the node), and
every squeue, sacct and sbatch is really run, counted by the ``slurm`` fixture.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from talicada.events.bus import Delivery
from talicada.events.envelope import Launch, LaunchBody
from talicada.events.report import Report
from talicada.schema.iso8601 import format_instant
from talicada.schema.model import Delay, Metadata, SimpleComputeResource
from talicada.settings import load
from talicada.workers.backends import slurm as slurm_backend
from talicada.workers.backends._shared import MemoryLedger
from talicada.workers.backends._slurm_cluster import Cluster
from talicada.workers.runtime import Reporter, WorkerContext
from tests.slurm_support import SlurmUnderTest, slurm_answers, slurm_fixture

__all__ = ["slurm_answers", "slurm_fixture"]  # the fixtures these tests use

SESSIONS = 100
INTERVAL = 0.3


class Recorder(Reporter):
    """A reporter that keeps reports instead of sending them."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def send(self, session: str, report: Report) -> None:
        self.reports.append(report)

    def phases(self, phase: str) -> list[Report]:
        return [r for r in self.reports if r.phase == phase]


def launch(session: str, starts: datetime) -> Delivery:
    body = LaunchBody(
        executable=Delay(meta=Metadata(uuid=f"exe-{session}"), duration="PT5M"),
        compute=SimpleComputeResource(meta=Metadata(uuid=f"cpu-{session}")),
        starts=format_instant(starts),
        ends=format_instant(starts + timedelta(minutes=10)),
        owner="alice",
    )
    event = Launch.new(session, component=f"exe-{session}", platform="slurm", body=body)
    return Delivery(stream="launch:slurm", message_id="1-0", event=event, deliveries=1)


async def test_a_hundred_slurm_sessions_cost_one_squeue_per_interval(
    slurm: SlurmUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = slurm.platform(slurm={"poll_interval": INTERVAL, "account": "astro-{principal}"})
    settings = msgspec.structs.replace(
        load(environ={}), platforms=[platform], work_dir=str(tmp_path / "work")
    )
    recorder = Recorder()
    context = WorkerContext(settings, recorder, set(), MemoryLedger())
    looks: list[float] = []
    real_poll = Cluster.poll_once

    async def counted_poll(cluster: Cluster) -> None:
        looks.append(asyncio.get_running_loop().time())
        await real_poll(cluster)

    monkeypatch.setattr(Cluster, "poll_once", counted_poll)
    handle = slurm_backend.launcher(context)
    try:
        # Given 100 sessions launched on Slurm, to begin in an hour
        later = datetime.now(UTC) + timedelta(hours=1)
        sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
        # (several at once, as the worker runtime delivers them)
        limit = asyncio.Semaphore(8)

        async def one(session: str) -> None:
            async with limit:
                await handle(launch(session, later))

        await asyncio.gather(*(one(session) for session in sessions))
        jobs = {r.handle or "" for r in recorder.phases("AVAILABLE")}
        assert len(jobs) == SESSIONS
        assert slurm.calls["sbatch"] == SESSIONS
        assert set(slurm.submitted) == jobs
        # (real jobs, waiting in Slurm's queue for their --begin, in the rule's account)
        queued = await slurm.cli.queue()
        assert {queued[job].state for job in jobs} == {"PENDING"}
        assert await asyncio.to_thread(slurm.accounts, sorted(jobs)) == {"astro-alice"}
        # When the launcher follows them for a while
        slurm.calls.clear()
        first = len(looks)
        await asyncio.sleep(8 * INTERVAL)
        # Then each look at all 100 cost one squeue, and no sacct (none ended)
        polls = len(looks) - first
        assert polls >= 4, looks
        assert slurm.calls["squeue"] in (polls, polls + 1), (slurm.calls, polls)
        assert slurm.calls["sacct"] == 0
        assert not recorder.phases("RUNNING")
        assert not recorder.phases("FAILED")
        # When 20 of them are cancelled outside the broker
        gone = sorted(jobs)[:20]
        await asyncio.to_thread(slurm.scancel, gone)
        slurm.calls.clear()
        first = len(looks)
        async with asyncio.timeout(10):
            while len(recorder.phases("FAILED")) < len(gone):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(3 * INTERVAL)
        polls = len(looks) - first
        # Then the looks that saw them ended asked sacct once for all of them
        assert 1 <= slurm.calls["sacct"] <= polls, (slurm.calls, polls)
        assert slurm.calls["squeue"] <= polls + 1, (slurm.calls, polls)
        failed = recorder.phases("FAILED")
        assert sorted(r.handle or "" for r in failed) == gone
        assert all("cancelled outside the broker" in (r.message or "") for r in failed)
        assert slurm.calls["sbatch"] == 0
        assert slurm.calls["scancel"] == 0
    finally:
        context.stopping.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*list(context.background), return_exceptions=True)
