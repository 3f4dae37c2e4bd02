"""``talicada demo``: the whole lifecycle on one machine, in seconds.

It starts an embedded broker (in memory, every worker in process, auth off) on
a free loopback port and a loopback file server with two generated files,
runs the checksum example to its end with ``watch``'s display, and stops
both. Nothing is left behind: state, staged data and logs live in a
temporary directory (logs are printed when the session did not complete).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import structlog

from talicada.client.aio import AsyncClient
from talicada.client.commands import submit_and_follow
from talicada.client.display import console
from talicada.client.localfiles import PLACEHOLDER, port_of, serving

#: The request the demo runs (the project's example of the local platform).
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "v1-local-checksum-request.yaml"


def main(*, json_lines: bool, request: Path | None = None) -> int:
    """Run the demo; the exit status of the session (0: COMPLETED)."""
    path = request or EXAMPLE
    try:
        text = path.read_text()
    except OSError as error:
        raise SystemExit(f"talicada demo: cannot read {path}: {error.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="talicada-demo-") as scratch:
        root = Path(scratch)
        files = root / "files"
        files.mkdir()
        # Two inputs for the checksum task: 2 MiB of noise and a FITS-like header.
        (files / "a.fits").write_bytes(os.urandom(2 * 1024 * 1024))
        (files / "b.fits").write_bytes(b"SIMPLE  =                    T" * 2000)
        log_file = root / "broker.log"
        status = asyncio.run(_demo(text, root, files, log_file, json_lines))
        if status != 0:
            console(stderr=True).print(f"[dim]broker log:[/]\n{log_file.read_text()[-4000:]}")
        return status


async def _demo(text: str, root: Path, files: Path, log_file: Path, json_lines: bool) -> int:
    from aiohttp import web

    from talicada.broker.app import create_app, run_embedded_workers
    from talicada.settings import load

    with log_file.open("w") as sink:
        # The broker's logs would tear the live view apart: they go to a file.
        structlog.configure(
            processors=[
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            logger_factory=structlog.PrintLoggerFactory(sink),
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )
        settings = load(environ={}, work_dir=str(root / "work"))
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{port_of(runner)}"
        stop = asyncio.Event()
        workers = asyncio.create_task(run_embedded_workers(app, url, stop))
        try:
            async with serving(files) as port, AsyncClient(url) as client:
                if not json_lines:
                    console().print(
                        f"[bold]Talicada demo[/]: embedded broker at {url}, files on port {port}"
                    )
                request = text.replace(PLACEHOLDER, f"127.0.0.1:{port}")
                return await submit_and_follow(client, request, json_lines=json_lines)
        finally:
            stop.set()
            await asyncio.wait_for(workers, timeout=15)
            await runner.cleanup()
