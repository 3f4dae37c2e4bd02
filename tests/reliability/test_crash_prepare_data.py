"""SIGKILL of a prepare-data worker mid-download: the item is staged once more by
the next worker, the task sees only the verified file, and every digest is right."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.lifecycle_support import checksum_request
from tests.reliability.conftest import recorded
from tests.reliability.support import (
    Deployment,
    Figures,
    duplicated_moves,
    session_log,
    submit_many,
    wait_terminal,
)

SESSIONS = 3
BIG = os.urandom(4 * 1024 * 1024)
CHUNK = 128 * 1024


def digests_of(log: dict[str, Any]) -> dict[str, str]:
    messages = log["session"]["executable"]["meta"]["messages"]
    return {m["values"]["path"]: m["values"]["digest"] for m in messages if "digest" in m["values"]}


def partials(root: Path, under: str) -> list[Path]:
    """Partial files in the sessions' ``under`` directories (storage or scratch)."""
    return [path for path in root.glob(f"*/{under}/**/*") if path.name.endswith(".partial")]


async def test_a_stager_killed_mid_download_stages_once_and_no_task_sees_a_partial(
    deployment: Deployment,
) -> None:
    began = time.monotonic()
    # Given a data server that sends 4 MiB slowly (about 3 s a download)
    bytes_sent = 0
    enough = asyncio.Event()  # a megabyte per session has gone out

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal bytes_sent
        response = web.StreamResponse(headers={"Content-Length": str(len(BIG))})
        await response.prepare(request)
        for offset in range(0, len(BIG), CHUNK):
            await response.write(BIG[offset : offset + CHUNK])
            bytes_sent += CHUNK
            if bytes_sent >= SESSIONS * 1024 * 1024:
                enough.set()
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/big.fits", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    await deployment.start_all()
    try:
        request = checksum_request(str(server.make_url("")).rstrip("/"))
        request["data"] = request["data"][:1]
        request["data"][0]["location"] = str(server.make_url("/big.fits"))
        request["compute"]["volumes"][0]["resources"] = [request["data"][0]["meta"]["name"]]
        async with deployment.client() as http:
            uuids = await submit_many(http, deployment.url, [request] * SESSIONS)
            # When the stager is killed with a megabyte or more of each download written
            await asyncio.wait_for(enough.wait(), timeout=60)
            deployment.kill("prepare-data")
            await asyncio.sleep(0.5)
            # (its partials are left behind, outside every data directory)
            left = partials(deployment.work_dir, "scratch")
            assert left, "no partial download was left behind by the killed worker"
            assert partials(deployment.work_dir, "storage") == []
            restarted = time.monotonic()
            await deployment.start("prepare-data-2", "worker", "prepare-data")
            # Then every session completes with the digest of the whole file only
            final = await wait_terminal(http, deployment.url, uuids, limit=90)
            recovered = time.monotonic() - restarted
            logs = {uuid: await session_log(http, deployment.url, uuid) for uuid in uuids}
    finally:
        await server.close()
    assert final == dict.fromkeys(uuids, "COMPLETED"), {u: logs[u]["history"][-4:] for u in uuids}
    expected = {"/inputs/big.fits": hashlib.sha256(BIG).hexdigest()}
    assert {uuid: digests_of(log) for uuid, log in logs.items()} == dict.fromkeys(uuids, expected)
    # and each step completed once: one AVAILABLE per data item, one task start each
    duplicated = sum(duplicated_moves(log) for log in logs.values())
    assert duplicated == 0
    starts = [
        line for line in deployment.log_events("launch") if line.get("event") == "task.started"
    ]
    assert sorted(line["session"] for line in starts) == sorted(uuids)
    recorded(
        Figures(
            scenario="prepare-data SIGKILL mid-download",
            submitted=SESSIONS,
            completed=sum(phase == "COMPLETED" for phase in final.values()),
            lost=sum(phase != "COMPLETED" for phase in final.values()),
            duplicated=duplicated + len(starts) - len(uuids),
            recover_s=recovered,
            seconds=time.monotonic() - began,
            notes="4 MiB downloads; digests checked; partials only in scratch/",
        )
    )
