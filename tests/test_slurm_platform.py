"""Sessions on a real Slurm through the broker and the slurm back end.

Needs the one-node Slurm that scripts/test.sh starts (the ``slurm`` fixture
fails, saying how, when there is none). Every job a test submits is cancelled
after it. Every Slurm command is really run, and counted by the fixture.

The last test drives the launcher's handler directly with 100 launch events:
100 real jobs, submitted to begin in an hour so that they wait in Slurm's
queue without holding the node, followed with one squeue per interval.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid as uuids
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from talicada.events.bus import Delivery
from talicada.events.envelope import Launch, LaunchBody
from talicada.events.report import Report
from talicada.schema.iso8601 import format_instant, parse_instant
from talicada.schema.model import Delay, Metadata, SimpleComputeResource
from talicada.settings import load
from talicada.workers.backends import slurm as slurm_backend
from talicada.workers.backends._shared import MemoryLedger
from talicada.workers.backends._slurm_cluster import Cluster
from talicada.workers.backends.slurm import job_name
from talicada.workers.runtime import Reporter, WorkerContext
from tests.conftest import BrokerFactory
from tests.lifecycle_support import (
    ACCEPT,
    CANCEL,
    accept_first,
    checksum_request,
    digests_of,
    expected_digests,
    task,
    wait_for_phase,
)
from tests.slurm_support import SlurmUnderTest, slurm_answers, slurm_fixture

__all__ = ["slurm_answers", "slurm_fixture"]  # the fixtures these tests use

# The broker's own store matters little here: Redis, as in production.
on_redis = pytest.mark.parametrize("store", ["redis"], indirect=True)
SESSIONS = 100
INTERVAL = 0.3


async def _job_of(client: Any, uuid: str) -> str:
    """The Slurm job id the session's record names (the launcher's message)."""
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    messages = [m["message"] for m in log["session"]["executable"]["meta"]["messages"]]
    found = {m.group(1) for m in map(re.compile(r"Slurm job (\d+) ").search, messages) if m}
    assert len(found) == 1, messages
    return found.pop()


@on_redis
async def test_a_checksum_task_runs_as_a_slurm_job_to_completed_with_its_digests(
    start_broker: BrokerFactory, slurm: SlurmUnderTest, file_server: str
) -> None:
    # A platform with a partition and an account rule (the caller is "anonymous" here)
    rules = {"partition": "debug", "account": "astro-{principal}"}
    client = await start_broker(platforms=[slurm.platform(slurm=rules)])
    uuid = await accept_first(client, checksum_request(file_server))
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}, limit=40) == "COMPLETED"
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    # Then the digests the job computed are in the record, by the paths it saw
    assert digests_of(log) == expected_digests()
    # and it was one real Slurm job, which accounting knows as COMPLETED
    job = await _job_of(client, uuid)
    assert slurm.submitted == [job]
    assert slurm.sacct(job).startswith("COMPLETED|0:0"), slurm.sacct(job)
    messages = [m["message"] for m in log["session"]["executable"]["meta"]["messages"]]
    assert any(f"Slurm job {job} started at" in m for m in messages), messages
    # in the partition and the account the platform's rule gives the caller
    assert slurm.field([job], "%P") == {"debug"}
    assert slurm.field([job], "%a") == {"astro-anonymous"}


@on_redis
async def test_extending_then_cancelling_a_running_slurm_session_moves_then_removes_its_job(
    start_broker: BrokerFactory, slurm: SlurmUnderTest
) -> None:
    client = await start_broker(platforms=[slurm.platform()])
    uuid = await accept_first(client, task("delay", duration="PT5M"))
    assert await wait_for_phase(client, uuid, {"RUNNING", "FAILED"}, limit=30) == "RUNNING"
    job = await _job_of(client, uuid)
    assert job in slurm.listed()
    # Extending the window moves the job's time limit with it (from 2 to 20 minutes)
    assert slurm.field([job], "%l") == {"2:00"}
    update = {"kind": "uri:string-value-update", "path": "schedule.available.duration"}
    response = await client.post(f"/sessions/{uuid}", json={**update, "value": "PT20M"})
    assert response.status == 200, await response.text()
    for _ in range(100):
        if slurm.field([job], "%l") != {"2:00"}:
            break
        await asyncio.sleep(0.1)
    assert slurm.field([job], "%l") == {"20:00"}
    # and cancelling the session cancels the job
    response = await client.post(f"/sessions/{uuid}", json=CANCEL)
    assert response.status == 200, await response.text()
    assert await wait_for_phase(client, uuid, {"CANCELLED", "FAILED"}) == "CANCELLED"
    # Then, once the release reported the executable cancelled, squeue no
    # longer lists the job: it was cancelled, not left to run
    assert await _executable_phase(client, uuid, {"CANCELLED", "FAILED"}) == "CANCELLED"
    await slurm.wait_gone(job)
    assert slurm.sacct(job).startswith("CANCELLED"), slurm.sacct(job)


@on_redis
async def test_offers_on_a_full_node_start_no_earlier_than_slurm_says(
    make_client: Any, slurm: SlurmUnderTest, tmp_path: Path
) -> None:
    # Given the one node filled by a long job
    filler = await slurm.sleeper(tmp_path, cpus=os.cpu_count() or 1, minutes=10)
    await slurm.wait_state(filler, {"RUNNING"})
    client = await make_client(platforms=[slurm.platform()])
    # When a request comes for a job of one core
    request = task("ping")
    request["compute"] = {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/simple-compute-resource-1.0",
        "cores": {"min": 1, "max": 1},
        "memory": {"min": 1, "max": 1},
    }
    quote = await slurm.cli.test_only(cpus=1, mem_gib=1, limit=timedelta(minutes=2))
    assert quote > datetime.now(UTC) + timedelta(minutes=5)  # Slurm waits for the filler
    body = await (await client.post("/requests", json=request)).json()
    assert body["result"] == "YES", body
    # Then no offer starts before Slurm's own quote
    for offer in body["offers"]:
        start = parse_instant(offer["schedule"]["available"]["start"].split("/")[0])
        assert start >= quote - timedelta(seconds=1), (offer["schedule"], quote)
    # and a request that must start within two minutes gets NO, in Slurm's words
    soon = dict(request, schedule={"requested": {"duration": "PT2M", "start": _within(120)}})
    body = await (await client.post("/requests", json=soon)).json()
    assert body["result"] == "NO", body
    (message,) = [m["message"] for m in body["meta"]["messages"]]
    assert "sbatch --test-only" in message, message
    assert format_instant(quote)[:16] in message, message


@on_redis
async def test_what_slurm_would_never_run_is_refused_in_its_words(
    make_client: Any, slurm: SlurmUnderTest
) -> None:
    # A platform that claims more cores than the one node has
    client = await make_client(platforms=[slurm.platform(cores=512)])
    request = task("ping")
    request["compute"] = {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/simple-compute-resource-1.0",
        "cores": {"min": 256, "max": 256},
    }
    body = await (await client.post("/requests", json=request)).json()
    assert body["result"] == "NO", body
    messages = [m["message"] for m in body["meta"]["messages"]]
    assert any("Slurm says: " in m and "node configuration" in m for m in messages), messages
    # and a container, with no container runtime configured, is refused saying so
    body = await (await client.post("/requests", json=_container())).json()
    assert body["result"] == "NO", body
    messages = [m["message"] for m in body["meta"]["messages"]]
    assert any("no container runtime" in m for m in messages), messages


async def _executable_phase(client: Any, uuid: str, phases: set[str], limit: float = 15) -> str:
    """Poll the session log until its executable is in one of ``phases``."""
    phase = ""
    for _ in range(int(limit / 0.1)):
        log = await (await client.get(f"/sessions/{uuid}/log")).json()
        phase = log["session"]["executable"]["phase"]
        if phase in phases:
            return str(phase)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the executable of {uuid} is {phase}, wanted {phases}")


def _within(seconds: int) -> str:
    return f"{format_instant(datetime.now(UTC).replace(microsecond=0))}/PT{seconds}S"


@on_redis
async def test_a_late_start_moves_the_actual_times_and_the_time_limit_ends_the_session(
    start_broker: BrokerFactory, slurm: SlurmUnderTest, tmp_path: Path
) -> None:
    client = await start_broker(platforms=[slurm.platform()])
    body = await (await client.post("/requests", json=task("delay", duration="PT5M"))).json()
    assert body["result"] == "YES", body
    offer = body["offers"][0]
    booked = parse_instant(offer["schedule"]["available"]["start"].split("/")[0])
    # Given the node filled by another job after the offer was made
    filler = await slurm.sleeper(tmp_path, cpus=os.cpu_count() or 1, minutes=10)
    await slurm.wait_state(filler, {"RUNNING"})
    uuid = offer["meta"]["uuid"]
    accepted = await client.post(f"/sessions/{uuid}", json=ACCEPT)
    assert accepted.status == 200, await accepted.text()
    # so that the session's job waits in Slurm's queue past the booked start
    job = await _launched(slurm, uuid)
    assert await slurm.wait_state(job, {"PENDING"}) == "PENDING"
    await asyncio.sleep(max(0.0, (booked - datetime.now(UTC)).total_seconds()) + 3)
    slurm.scancel([filler])
    assert await wait_for_phase(client, uuid, {"RUNNING", "FAILED"}) == "RUNNING"
    # Then the session's actual start is the job's real start, as Slurm says it
    (started,) = {j.start for j in (await slurm.cli.queue()).values() if j.id == job}
    assert started is not None
    # (Slurm keeps whole seconds: compare with the booked start plus 3 s, truncated)
    assert started >= (booked + timedelta(seconds=3)).replace(microsecond=0)
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    running = [h for h in log["history"] if h["to"] == "RUNNING"]
    assert {h["time"] for h in running} == {format_instant(started)}, running
    messages = [m["message"] for m in log["session"]["executable"]["meta"]["messages"]]
    assert any("after the booked start" in m for m in messages), messages
    # When Slurm stops the job at its time limit (an administrator cut it to now)
    await asyncio.to_thread(slurm.scontrol, "update", f"JobId={job}", "TimeLimit=0")
    # (slurmctld enforces time limits every 30 s)
    assert await wait_for_phase(client, uuid, {"FAILED", "COMPLETED"}, limit=50) == "FAILED"
    # Then the session ended with that reason, at the time Slurm ended the job
    assert slurm.sacct(job).startswith("TIMEOUT"), slurm.sacct(job)
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    (failed,) = [h for h in log["history"] if h["to"] == "FAILED" and "component" not in h]
    assert "stopped by Slurm at its time limit (TIMEOUT)" in failed["cause"], failed
    ended = (await slurm.cli.accounting([job]))[job].end
    assert ended is not None
    assert failed["time"] == format_instant(ended), (failed, ended)


@on_redis
async def test_a_container_runs_through_the_configured_runtime_command(
    start_broker: BrokerFactory, slurm: SlurmUnderTest
) -> None:
    # The runtime template here prints what it would run: no container engine needed
    runtime = "/bin/echo runtime-would-run docker://{image}"
    client = await start_broker(platforms=[slurm.platform(slurm={"container_runtime": runtime})])
    uuid = await accept_first(client, _container(command=["echo", "hello"]))
    assert await wait_for_phase(client, uuid, {"COMPLETED", "FAILED"}, limit=40) == "COMPLETED"
    log = await (await client.get(f"/sessions/{uuid}/log")).json()
    # Then the job ran the template with the image, then the container's command
    stdout = log["output"]["stdout"]
    assert stdout.strip() == "runtime-would-run docker://docker.io/library/alpine:3 echo hello"
    job = await _job_of(client, uuid)
    assert slurm.sacct(job).startswith("COMPLETED|0:0"), slurm.sacct(job)


async def _launched(slurm: SlurmUnderTest, uuid: str, limit: float = 20) -> str:
    """Poll squeue until the launcher has submitted the session's job (by its name)."""
    for _ in range(int(limit / 0.1)):
        found = await slurm.cli.find(job_name(uuid))
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no Slurm job was submitted for {uuid}")


def _container(**fields: Any) -> dict[str, Any]:
    return {
        "executable": {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
            "image": {"locations": ["docker.io/library/alpine:3"]},
            **fields,
        },
        "schedule": {"requested": {"duration": "PT2M"}},
    }


# -- following many jobs ------------------------------------------------------


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
    contexts = [context]
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
        sessions = [str(uuids.uuid4()) for _ in range(SESSIONS)]
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
        assert await asyncio.to_thread(slurm.field, sorted(jobs), "%a") == {"astro-alice"}
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
        # When a launcher that remembers nothing gets three of the launches again
        # (a redelivery after a crash), it submits nothing: it finds their jobs
        fresh = Recorder()
        contexts.append(WorkerContext(settings, fresh, set(), MemoryLedger()))
        again = slurm_backend.launcher(contexts[-1])
        for session in sessions[-3:]:
            await again(launch(session, later))
        assert slurm.calls["sbatch"] == 0
        by_session = {r.component: r.handle for r in recorder.phases("AVAILABLE")}
        assert {r.component: r.handle for r in fresh.phases("AVAILABLE")} == {
            f"exe-{session}": by_session[f"exe-{session}"] for session in sessions[-3:]
        }
    finally:
        for each in contexts:
            each.stopping.set()
            async with asyncio.timeout(10):
                await asyncio.gather(*list(each.background), return_exceptions=True)
