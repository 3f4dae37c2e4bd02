"""SIGKILL of the launcher while its tasks run: every task runs once and every
session ends with the task's real exit status, reported by the next launcher."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.reliability.conftest import recorded
from tests.reliability.support import (
    Deployment,
    Figures,
    delay,
    duplicated_moves,
    phases,
    session_log,
    submit_many,
    wait_terminal,
)

SESSIONS = 12
#: Tasks fail with this message (exit 3): a real status that "unknown" cannot fake.
FAILING = {"phase": "RUNNING", "after": "PT3S", "message": "injected: the telescope fell over"}


async def test_a_launcher_killed_mid_task_loses_no_outcome_and_runs_no_task_twice(
    deployment: Deployment,
) -> None:
    began = time.monotonic()
    await deployment.start_all()
    async with deployment.client() as http:
        # Given 12 tasks running: 9 that succeed after 4 s, 3 that fail after 3 s
        requests = [delay(4) for _ in range(SESSIONS)]
        for request in requests[:3]:
            request["executable"]["fail"] = FAILING
        uuids = await submit_many(http, deployment.url, requests)
        failing = set(uuids[:3])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = await phases(http, deployment.url, uuids)
            if all(phase == "RUNNING" for phase in now.values()):
                break
            await asyncio.sleep(0.2)
        assert set(now.values()) == {"RUNNING"}, now
        # When the launcher is killed while they run, and another starts 2 s later
        deployment.kill("launch")
        await asyncio.sleep(2)
        restarted = time.monotonic()
        await deployment.start("launch-2", "worker", "launch")
        # Then every session ends with what its task really did
        final = await wait_terminal(http, deployment.url, uuids, limit=90)
        recovered = time.monotonic() - restarted
        logs = {uuid: await session_log(http, deployment.url, uuid) for uuid in uuids}
    expected = {uuid: "FAILED" if uuid in failing else "COMPLETED" for uuid in uuids}
    assert final == expected, {u: logs[u]["history"][-3:] for u in uuids if final[u] != expected[u]}
    for uuid in failing:
        causes = [item["cause"] for item in logs[uuid]["history"] if item["to"] == "FAILED"]
        assert any("the telescope fell over" in cause for cause in causes), causes
    assert not any("unknown" in str(log["history"]) for log in logs.values())
    # and no task started twice: one start per session across both launchers
    starts = Counter(
        line["session"]
        for line in deployment.log_events("launch")
        if line.get("event") == "task.started"
    )
    assert starts == dict.fromkeys(uuids, 1)
    duplicated = sum(duplicated_moves(log) for log in logs.values())
    assert duplicated == 0
    recorded(
        Figures(
            scenario="launcher SIGKILL mid-task",
            submitted=SESSIONS,
            completed=sum(phase in ("COMPLETED", "FAILED") for phase in final.values()),
            lost=sum(final[uuid] != expected[uuid] for uuid in uuids),
            duplicated=duplicated + sum(count - 1 for count in starts.values()),
            recover_s=recovered,
            seconds=time.monotonic() - began,
            notes="3 of 12 tasks fail by design; each ends with its real status",
        )
    )
