"""SIGKILL of the broker with 200 sessions in flight: after its restart every
accepted session reaches a terminal phase, and no step took effect twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.reliability.conftest import recorded
from tests.reliability.support import (
    TERMINAL,
    Deployment,
    Figures,
    accept,
    bounded,
    delay,
    duplicated_moves,
    offer,
    phases,
    session_log,
    wait_terminal,
)

SESSIONS = 200


async def test_a_broker_killed_with_200_sessions_in_flight_loses_none(
    deployment: Deployment,
) -> None:
    began = time.monotonic()
    await deployment.start_all()
    async with deployment.client() as http:
        # Given 200 sessions of 5 s tasks, offered first and then accepted together
        requests = [delay(5) for _ in range(SESSIONS)]
        uuids = await bounded(8, (offer(http, deployment.url, request) for request in requests))
        accepting = time.monotonic()
        await bounded(16, (accept(http, deployment.url, uuid) for uuid in uuids))
        accepted = time.monotonic() - accepting
        before = await phases(http, deployment.url, uuids)
        in_flight = sum(phase not in TERMINAL for phase in before.values())
        # When the broker is killed while they are in flight, and restarted a second later
        deployment.kill("serve")
        await asyncio.sleep(1)
        restarted = time.monotonic()
        await deployment.start("serve-2", "serve")
        await deployment.wait_ready()
        # Then every accepted session reaches a terminal phase: COMPLETED
        final = await wait_terminal(http, deployment.url, uuids, limit=150)
        recovered = time.monotonic() - restarted
        logs = [await session_log(http, deployment.url, uuid) for uuid in uuids]
    assert in_flight >= SESSIONS // 2, f"only {in_flight} sessions were in flight at the kill"
    assert Counter(final.values()) == {"COMPLETED": SESSIONS}
    duplicated = sum(duplicated_moves(log) for log in logs)
    assert duplicated == 0
    starts = Counter(
        line["session"]
        for line in deployment.log_events("launch")
        if line.get("event") == "task.started"
    )
    assert starts == dict.fromkeys(uuids, 1)
    recorded(
        Figures(
            scenario="broker SIGKILL, 200 sessions in flight",
            submitted=SESSIONS,
            completed=sum(phase == "COMPLETED" for phase in final.values()),
            lost=sum(phase != "COMPLETED" for phase in final.values()),
            duplicated=duplicated,
            recover_s=recovered,
            seconds=time.monotonic() - began,
            notes=f"{in_flight} in flight at the kill; 200 accepts took {accepted:.1f} s",
        )
    )
