"""``/metrics`` on a port of its own (``metrics_port``), open, for Prometheus.

With it, the main port's ``/metrics`` needs the operator role, so the
metrics port can be kept inside the site's network while clients see none.
"""

from __future__ import annotations

from aiohttp import web

from talicada.broker.keys import BROKER, METRICS
from talicada.broker.metrics import exposition


def metrics_app(main: web.Application) -> web.Application:
    """An application serving only ``main``'s ``/metrics``."""
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return await exposition(main[METRICS], main[BROKER].store.bus)

    app.router.add_get("/metrics", metrics)
    return app


async def start(main: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``main``'s metrics on ``host:port``; the caller cleans the runner up."""
    runner = web.AppRunner(metrics_app(main))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
