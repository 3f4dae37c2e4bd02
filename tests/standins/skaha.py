"""A stand-in for CANFAR's Skaha sessions API (``/skaha/v1/...``), from its published API.

Sessions live on a simulated timeline read from ``SkahaState.clock``: Pending,
Running after ``start_delay``; headless sessions then Succeeded (or Error) after
their run time (``STANDIN_RUN_SECONDS`` in the request's env, else
``run_seconds``); other types stay Running, with a ``connectURL``, until they
expire or are deleted (Terminating for ``terminate_delay``, then gone). Create
parameters are read from the query string (as ``canfar`` sends them) or a form
body. Switches: ``stuck_pending`` (never scheduled; the events say why),
``fail_sessions`` (runs end in Error; also ``STANDIN_EXIT_CODE`` in the env).

It also serves our proposed callback protocol (see
:mod:`talicada.services.callbacks`) when ``callbacks_enabled`` is set.

Run it by hand: ``python -m tests.standins.skaha --port 8080 --token standin-token``,
then ``curl -H 'Authorization: Bearer standin-token' localhost:8080/skaha/v1/session``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import string
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict

from tests.standins._common import serve_main
from tests.standins._skaha_state import (
    ACTIVE,
    BASE,
    DEFAULT_IMAGES,
    DEFAULT_TOKEN,
    INTERACTIVE,
    PENDING_REASON,
    Delivery,
    Session,
    SkahaState,
    deliver,
)

__all__ = [
    "BASE",
    "DEFAULT_IMAGES",
    "DEFAULT_TOKEN",
    "PENDING_REASON",
    "Delivery",
    "Session",
    "SkahaState",
    "create_app",
]


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def _user(state: SkahaState, request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    user = state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise web.HTTPUnauthorized(text="not authenticated: a valid bearer token is required\n")
    return user


def _owned(state: SkahaState, request: web.Request) -> Session:
    user = _user(state, request)
    state.advance()
    session = state.sessions.get(request.match_info["id"])
    if session is None or session.userid != user:
        raise web.HTTPNotFound(text=f"session not found: {request.match_info['id']}\n")
    return session


def _number(params: MultiDict[str], key: str, options: list[int], default: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) not in options:
        raise web.HTTPBadRequest(text=f"Invalid value for '{key}': {raw}\n")
    return int(raw)


def create_app(state: SkahaState) -> web.Application:
    """The stand-in's application, serving under ``/skaha``."""

    async def create(request: web.Request) -> web.StreamResponse:
        user = _user(state, request)
        # canfar sends the parameters in the query string, browsers and curl -d
        # in a form body: Skaha reads both, so does the stand-in.
        params: MultiDict[str] = MultiDict(request.query)
        if request.content_type == "application/x-www-form-urlencoded":
            for key, value in (await request.post()).items():
                if isinstance(value, str):
                    params.add(key, value)
        image, name = params.get("image"), params.get("name")
        if not image:
            return _text(400, "Missing parameter 'image'")
        if name is None:
            return _text(400, "Missing parameter 'name'")
        if not name or not all(c in string.ascii_letters + string.digits + "-" for c in name):
            return _text(400, "name can only contain alpha-numeric chars and '-'")
        types = state.images.get(image)
        if types is None:
            return _text(400, f"image not found or not labelled: {image}")
        kind = params.get("type") or types[0]
        if kind not in types:
            return _text(400, f"image/type mismatch: {image}/{kind}")
        cores = _number(params, "cores", state.cores, state.default_cores)
        ram = _number(params, "ram", state.ram, state.default_ram)
        state.advance()
        mine = [s for s in state.sessions.values() if s.userid == user and s.status in ACTIVE]
        interactive = [s for s in mine if s.type in INTERACTIVE]
        limit = state.max_interactive
        if kind in INTERACTIVE and limit is not None and len(interactive) >= limit:
            return _text(400, f"User {user} has reached the maximum of {limit} active sessions.")
        if state.max_active is not None and len(mine) >= state.max_active:
            quota = state.max_active
            return _text(403, f"User {user} has reached the quota of {quota} active sessions.")
        env = params.getall("env", [])
        settings = dict(item.partition("=")[::2] for item in env)
        now = state.clock()
        session = Session(
            id="".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)),
            userid=user,
            name=name.lower(),  # Skaha keeps names lower-cased (they become host names)
            image=image,
            type=kind,
            cores=cores,
            ram=ram,
            created=now,
            expiry=now + state.expiry_seconds,
            run_seconds=float(settings.get("STANDIN_RUN_SECONDS", state.run_seconds)),
            stuck=state.stuck_pending,
            fails=state.fail_sessions or settings.get("STANDIN_EXIT_CODE", "0") != "0",
            cmd=params.get("cmd"),
            args=params.get("args"),
            env=env,
        )
        state.sessions[session.id] = session
        state.notify(session, None, now)
        return _text(200, session.id)

    async def listing(request: web.Request) -> web.StreamResponse:
        user = _user(state, request)
        state.advance()
        kind, status = request.query.get("type"), request.query.get("status")
        found = [
            state.view(s)
            for s in state.sessions.values()
            if s.userid == user and kind in (None, s.type) and status in (None, s.status)
        ]
        return web.json_response(found)

    async def get(request: web.Request) -> web.StreamResponse:
        return web.json_response(state.view(_owned(state, request)))

    async def logs(request: web.Request) -> web.StreamResponse:
        return web.Response(text=state.logs(_owned(state, request)), content_type="text/plain")

    async def events(request: web.Request) -> web.StreamResponse:
        return web.Response(text=state.events(_owned(state, request)), content_type="text/plain")

    views = {"logs": state.route("logs", logs), "events": state.route("events", events)}
    plain = state.route("get", get)

    async def one(request: web.Request) -> web.StreamResponse:
        return await views.get(request.query.get("view", ""), plain)(request)

    async def renew(request: web.Request) -> web.StreamResponse:
        session = _owned(state, request)
        if request.query.get("action", "").lower() != "renew":
            return _text(400, "unrecognized action")
        if session.status not in ACTIVE:
            return _text(400, f"No active job for user {session.userid} with session {session.id}")
        session.expiry = max(session.expiry, state.clock() + state.expiry_seconds)
        return _text(200, "")

    async def delete(request: web.Request) -> web.StreamResponse:
        session = _owned(state, request)
        if session.deleted is None:
            session.deleted = state.clock()
            state.advance()
        return _text(200, "")

    async def context(request: web.Request) -> web.StreamResponse:
        _user(state, request)

        def options(values: list[int], default: int) -> dict[str, Any]:
            limit = max(values)
            return {
                "default": default,
                "defaultRequest": default,
                "defaultLimit": limit,
                "options": values,
            }

        return web.json_response(
            {
                "cores": options(state.cores, state.default_cores),
                "memoryGB": options(state.ram, state.default_ram),
                "gpus": {"options": []},
                "maxInteractiveSessions": state.max_interactive or 0,
            }
        )

    async def images(request: web.Request) -> web.StreamResponse:
        _user(state, request)
        kind = request.query.get("type")
        listed = [
            {
                "id": image,
                "types": types,
                "digest": f"sha256:{hashlib.sha256(image.encode()).hexdigest()}",
            }
            for image, types in state.images.items()
            if kind in (None, *types)
        ]
        return web.json_response(listed)

    async def callbacks(request: web.Request) -> web.StreamResponse:
        user = _user(state, request)
        if not state.callbacks_enabled:
            return _text(404, "not found: callbacks are not supported")
        if request.method == "PUT":
            try:
                data = await request.json()
                url, secret = data["url"], data["secret"]
                if not isinstance(url, str) or not isinstance(secret, str) or not secret:
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return _text(400, 'expected JSON {"url": string, "secret": non-empty string}')
            state.callbacks[user] = (url, secret)
            return web.json_response({"url": url})
        if request.method == "DELETE":
            state.callbacks.pop(user, None)
            return web.Response(status=204)
        registered = state.callbacks.get(user)
        return web.json_response([{"url": registered[0]}] if registered else [])

    async def run(app: web.Application) -> AsyncIterator[None]:
        async def ticker() -> None:
            while True:  # status changes must be noticed (and called back) unasked
                state.advance()
                await asyncio.sleep(state.tick)

        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        tasks = [asyncio.create_task(ticker()), asyncio.create_task(deliver(state, http))]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.close()

    app = web.Application()
    app.cleanup_ctx.append(run)
    app.router.add_get(f"{BASE}/v1/session", state.route("list", listing))
    app.router.add_post(f"{BASE}/v1/session", state.route("create", create))
    app.router.add_get(f"{BASE}/v1/session/{{id}}", one)
    app.router.add_post(f"{BASE}/v1/session/{{id}}", state.route("renew", renew))
    app.router.add_delete(f"{BASE}/v1/session/{{id}}", state.route("delete", delete))
    app.router.add_get(f"{BASE}/v1/context", state.route("context", context))
    app.router.add_get(f"{BASE}/v1/image", state.route("images", images))
    app.router.add_get(f"{BASE}/v1/callbacks", state.route("callbacks", callbacks))
    app.router.add_put(f"{BASE}/v1/callbacks", state.route("register", callbacks))
    app.router.add_delete(f"{BASE}/v1/callbacks", state.route("unregister", callbacks))
    return app


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", default=DEFAULT_TOKEN, help=f"bearer token (default {DEFAULT_TOKEN})"
    )
    parser.add_argument("--start-delay", type=float, default=2.0, help="seconds Pending")
    parser.add_argument("--run-seconds", type=float, default=10.0, help="headless run time")
    parser.add_argument("--callbacks", action="store_true", help="advertise the callback facility")


def _build(args: argparse.Namespace) -> web.Application:
    state = SkahaState(
        latency=args.latency,
        tokens={args.token: "standin"},
        start_delay=args.start_delay,
        run_seconds=args.run_seconds,
        callbacks_enabled=args.callbacks,
    )
    return create_app(state)


if __name__ == "__main__":
    serve_main("skaha", _build, _options)
