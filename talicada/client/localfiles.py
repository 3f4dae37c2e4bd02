"""A loopback file server for requests whose data live on this machine.

The checksum example names its data ``http://127.0.0.1:PORT/a.fits``: the
port is only known once something serves the files. ``run --files DIR`` and
``demo`` serve a directory on a free loopback port and put it there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

#: What a request says where the port of the loopback file server belongs.
PLACEHOLDER = "127.0.0.1:PORT"


@asynccontextmanager
async def serving(directory: Path | None) -> AsyncIterator[int | None]:
    """Serve ``directory`` over HTTP on 127.0.0.1 while inside; its port (None: nothing)."""
    if directory is None:
        yield None
        return
    root = _directory(directory)
    app = web.Application()
    app.router.add_static("/", root, show_index=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield port_of(runner)
    finally:
        await runner.cleanup()


def port_of(runner: web.AppRunner) -> int:
    """The port a started runner listens on (it was asked for port 0)."""
    address = runner.addresses[0]
    return int(address[1])


def _directory(path: Path) -> Path:
    if not path.is_dir():
        raise SystemExit(f"talicada: --files {path}: not a directory")
    return path.resolve()
