"""Redis (AOF ``everysec``, the test's own server) restarted mid-run: broker and
workers reconnect by themselves and every accepted session completes once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from tests.reliability.conftest import recorded
from tests.reliability.support import (
    TERMINAL,
    Deployment,
    Figures,
    OwnRedis,
    delay,
    duplicated_moves,
    phases,
    session_log,
    submit_many,
    wait_terminal,
)

SESSIONS = 20
#: Seconds Redis stays down (the load scenarios hold it down longer, for the 503s).
DOWN = 3.0


async def test_a_redis_restart_mid_run_loses_no_session(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    began = time.monotonic()
    deployment = Deployment(tmp_path / "deployment", own_redis.url)
    try:
        await deployment.start_all()
        async with deployment.client() as http:
            # Given 20 sessions of 3 s tasks in flight
            uuids = await submit_many(http, deployment.url, [delay(3) for _ in range(SESSIONS)])
            before = await phases(http, deployment.url, uuids)
            in_flight = sum(phase not in TERMINAL for phase in before.values())
            # When Redis stops (flushing its AOF) and comes back 3 s later
            await own_redis.stop()
            await asyncio.sleep(DOWN)
            await own_redis.start()
            restarted = time.monotonic()
            # Then every session completes, each step once
            final = await wait_terminal(http, deployment.url, uuids, limit=120)
            recovered = time.monotonic() - restarted
            logs = [await session_log(http, deployment.url, uuid) for uuid in uuids]
        starts = Counter(
            line["session"]
            for line in deployment.log_events("launch")
            if line.get("event") == "task.started"
        )
    finally:
        codes = await deployment.stop()
    assert in_flight >= SESSIONS // 2, f"only {in_flight} sessions were in flight"
    assert Counter(final.values()) == {"COMPLETED": SESSIONS}, final
    duplicated = sum(duplicated_moves(log) for log in logs)
    assert duplicated == 0
    assert starts == dict.fromkeys(uuids, 1)
    # and every process rode the outage out (none exited on its own)
    assert codes == dict.fromkeys(codes, 0), codes
    recorded(
        Figures(
            scenario="Redis restart (AOF everysec)",
            submitted=SESSIONS,
            completed=sum(phase == "COMPLETED" for phase in final.values()),
            lost=sum(phase != "COMPLETED" for phase in final.values()),
            duplicated=duplicated,
            recover_s=recovered,
            seconds=time.monotonic() - began,
            notes=f"Redis down {DOWN:.0f} s with {in_flight} sessions in flight",
        )
    )
