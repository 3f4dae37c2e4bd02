"""The web dashboard at ``/ui/``: sessions, one session's timeline, offer sets, submit.

Pages are rendered on the server (Jinja2 through aiohttp-jinja2) from the
same broker calls the API routes make; a small script (``static/app.js``)
keeps them live and sends accepts, cancels and requests to the public API,
so the dashboard can do nothing a client cannot. Every asset is served from
this package: no CDN at run time. The routes sit behind the broker's auth
middleware like every other (off in embedded mode).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from talicada.broker.ui import views

HERE = Path(__file__).resolve().parent


def setup_ui(app: web.Application) -> None:
    """Mount the dashboard on ``app`` and send ``/`` there."""
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters.update(views.FILTERS)
    app.add_routes(views.routes)
    app.router.add_static("/ui/static/", HERE / "static", name="ui-static")
