"""Our Skaha client against the Skaha stand-in, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from talicada.services._http import ServiceError, TokenFile
from talicada.services.callbacks import (
    CallbackError,
    decode_callback,
    verify_callback,
)
from talicada.services.skaha import SkahaClient, legal, session_type
from tests.standins.skaha import DEFAULT_TOKEN, PENDING_REASON, SkahaState, create_app

TERMINAL = "images.canfar.net/skaha/terminal:1.1.1"
NOTEBOOK = "images.canfar.net/skaha/base-notebook:latest"


class Clock:
    """A clock the test moves by hand, so the simulated sessions need no waiting."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """A stand-in, its server, and a client of it whose retries do not wait."""

    state: SkahaState
    clock: Clock
    server: TestServer
    client: SkahaClient
    token: Path
    http: aiohttp.ClientSession
    sleeps: list[float]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/skaha"))

    def routes(self) -> list[str]:
        return [call.route for call in self.state.calls]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = Clock()
    state = SkahaState(clock=clock, start_delay=5, run_seconds=30, terminate_delay=2)
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    token = tmp_path / "token"
    token.write_text(DEFAULT_TOKEN + "\n")
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with aiohttp.ClientSession() as http:
        url = str(server.make_url("/skaha"))
        client = SkahaClient(url, TokenFile(token), http, sleep=no_sleep)
        yield Rig(state, clock, server, client, token, http, sleeps)
    await server.close()


async def launch(rig: Rig, name: str = "job-1", **extra: object) -> str:
    options: dict[str, object] = {"image": TERMINAL, "type": "headless", "cores": 2, "ram": 4}
    options.update(extra)
    return await rig.client.create(name=name, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------ pure helpers


def test_legal_takes_the_smallest_option_in_range() -> None:
    options = [1, 2, 4, 8, 16]
    assert legal(3, options) == 4
    assert legal((3, 8), options) == 4
    assert legal((1, None), options) == 1
    assert legal((5, 7), options) is None
    assert legal(32, options) is None


def test_session_type_follows_image_labels_and_container_needs() -> None:
    assert session_type(["notebook"], notebook=False) == "notebook"
    assert session_type(["notebook", "headless"], notebook=False) == "headless"
    assert session_type(["headless"], notebook=True) == "notebook"
    assert session_type(["headless"], notebook=False) == "headless"
    assert session_type([], notebook=False) == "headless"


def test_callback_details_come_from_either_services_key() -> None:
    common = b'"service": "x", "id": "1", "status": "done", "time": "2024-01-01T00:00:00Z"'
    skaha = decode_callback(b"{" + common + b', "session": {"a": 1}}')
    srcnet = decode_callback(b"{" + common + b', "details": {"b": 2}, "previous": "run"}')
    assert (skaha.details, skaha.previous) == ({"a": 1}, None)
    assert (srcnet.details, srcnet.previous) == ({"b": 2}, "run")
    with pytest.raises(CallbackError, match="malformed"):
        decode_callback(b'{"service": "x"}')
    with pytest.raises(CallbackError, match="not JSON"):
        decode_callback(b"{")


# ------------------------------------------------------------------ catalogue


async def test_context_lists_legal_values_and_defaults(rig: Rig) -> None:
    context = await rig.client.context()
    assert context.cores == [1, 2, 4, 8, 16]
    assert context.ram == [1, 2, 4, 8, 16, 32, 64]
    assert (context.default_cores, context.default_ram) == (1, 4)
    assert context.max_interactive == 5
    assert legal((3, None), context.cores) == 4


async def test_images_carry_their_session_types(rig: Rig) -> None:
    images = {image.id: image for image in await rig.client.images()}
    assert images[NOTEBOOK].types == ["notebook"]
    assert images[TERMINAL].types == ["headless"]
    assert images[TERMINAL].digest.startswith("sha256:")
    assert session_type(images[NOTEBOOK].types, notebook=False) == "notebook"


# ------------------------------------------------------------------ lifecycle


async def test_headless_session_runs_to_succeeded_with_logs(rig: Rig) -> None:
    env = {"STANDIN_RUN_SECONDS": "10", "MODE": "fast"}
    sid = await launch(rig, "Job-One", cmd="python", args=["run.py", "--fast"], env=env)
    first = await rig.client.session(sid)
    assert (first.status, first.name, first.type) == ("Pending", "job-one", "headless")
    assert (first.requested_cores, first.requested_ram) == ("2", "4G")
    assert await rig.client.logs(sid) == ""
    rig.clock.now += 5
    assert (await rig.client.session(sid)).status == "Running"
    rig.clock.now += 10
    assert (await rig.client.session(sid)).status == "Succeeded"
    logs = await rig.client.logs(sid)
    assert "python run.py --fast" in logs
    assert "MODE=fast" in logs
    assert "exit code 0" in logs
    assert (await rig.client.find("job-one")) is not None


async def test_failing_run_ends_in_error(rig: Rig) -> None:
    sid = await launch(rig, env={"STANDIN_EXIT_CODE": "1", "STANDIN_RUN_SECONDS": "1"})
    rig.clock.now += 6
    assert (await rig.client.session(sid)).status == "Error"
    assert "exit code 1" in await rig.client.logs(sid)


async def test_notebook_runs_with_a_connect_url(rig: Rig) -> None:
    sid = await launch(rig, "nb", image=NOTEBOOK, type="notebook")
    rig.clock.now += 3600
    session = await rig.client.session(sid)
    assert session.status == "Running"
    assert session.connect_url.startswith(rig.state.public_url)
    assert sid in session.connect_url


async def test_stuck_session_stays_pending_and_events_say_why(rig: Rig) -> None:
    rig.state.stuck_pending = True
    sid = await launch(rig)
    rig.clock.now += 1000
    assert (await rig.client.session(sid)).status == "Pending"
    assert PENDING_REASON in await rig.client.events(sid)


async def test_delete_terminates_then_the_session_is_gone(rig: Rig) -> None:
    sid = await launch(rig)
    await rig.client.delete(sid)
    assert (await rig.client.session(sid)).status == "Terminating"
    rig.clock.now += 2
    with pytest.raises(ServiceError) as gone:
        await rig.client.session(sid)
    assert gone.value.status == 404
    await rig.client.delete(sid)  # already gone: not an error
    assert rig.state.count("delete") == 2
    assert await rig.client.sessions() == []


async def test_renew_moves_the_expiry_time(rig: Rig) -> None:
    sid = await launch(rig, "nb", image=NOTEBOOK, type="notebook")
    before = (await rig.client.session(sid)).expiry_time
    rig.clock.now += 7200
    await rig.client.renew(sid)
    after = (await rig.client.session(sid)).expiry_time
    assert after > before
    assert rig.state.calls[-2].query == {"action": ["renew"]}


# ------------------------------------------------------------------ idempotent create


async def test_create_after_two_503s_makes_exactly_one_session(rig: Rig) -> None:
    rig.state.add_fault("create", 503, times=2)
    sid = await launch(rig)
    assert list(rig.state.sessions) == [sid]
    assert rig.routes() == ["create", "list", "create", "list", "create"]
    assert len(rig.sleeps) == 2


async def test_lost_answer_after_create_adopts_the_session(rig: Rig) -> None:
    rig.state.add_fault("create", 0, after=True)  # Skaha creates, then the line drops
    sid = await launch(rig)
    assert list(rig.state.sessions) == [sid]
    assert rig.routes() == ["create", "list"]


async def test_create_sends_parameters_in_the_query_string(rig: Rig) -> None:
    await launch(rig, cmd="echo", args="a b", env={"K": "v"})
    call = rig.state.calls[-1]
    assert call.body == b""
    assert call.query["args"] == ["a b"]
    assert call.query["env"] == ["K=v"]
    assert call.query["type"] == ["headless"]


async def test_standin_also_reads_a_form_body(rig: Rig) -> None:
    form = {"name": "formed", "image": TERMINAL, "cores": "1", "ram": "1"}
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    async with rig.http.post(f"{rig.url}/v1/session", data=form, headers=headers) as answer:
        assert answer.status == 200
        sid = (await answer.text()).strip()
    assert (await rig.client.session(sid)).name == "formed"


# ------------------------------------------------------------------ errors


async def test_refusals_carry_skahas_message_and_are_not_retried(rig: Rig) -> None:
    with pytest.raises(ServiceError) as bad:
        await launch(rig, cores=3)
    assert (bad.value.status, bad.value.transient) == (400, False)
    assert "Invalid value for 'cores': 3" in bad.value.reason
    with pytest.raises(ServiceError) as unknown:
        await launch(rig, image="images.canfar.net/skaha/nope:1")
    assert "image not found" in unknown.value.reason
    assert rig.state.count("create") == 2


async def test_interactive_quota_is_refused_with_a_message(rig: Rig) -> None:
    rig.state.max_interactive = 1
    await launch(rig, "nb1", image=NOTEBOOK, type="notebook")
    with pytest.raises(ServiceError) as refused:
        await launch(rig, "nb2", image=NOTEBOOK, type="notebook")
    assert "reached the maximum of 1 active sessions" in refused.value.reason


async def test_persistent_503_gives_a_transient_error(rig: Rig) -> None:
    rig.state.add_fault("context", 503, times=4)
    with pytest.raises(ServiceError) as failed:
        await rig.client.context()
    assert (failed.value.status, failed.value.transient) == (503, True)
    assert rig.state.count("context") == 4


async def test_without_a_token_skaha_answers_401(rig: Rig) -> None:
    anonymous = SkahaClient(rig.url, None, rig.http)
    with pytest.raises(ServiceError) as refused:
        await anonymous.sessions()
    assert refused.value.status == 401


async def test_token_file_is_reread_when_it_changes(rig: Rig) -> None:
    rig.state.tokens = {"first-token": "standin"}
    rig.token.write_text("first-token")
    assert await rig.client.sessions() == []
    rig.state.tokens = {"second-longer-token": "standin"}
    with pytest.raises(ServiceError):
        await rig.client.sessions()
    rig.token.write_text("second-longer-token")
    assert await rig.client.sessions() == []


# ------------------------------------------------------------------ callbacks


@dataclass
class Receiver:
    """A webhook on loopback that records deliveries (and can fail the first few)."""

    deliveries: list[tuple[dict[str, str], bytes]]
    fail: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail:
            self.fail -= 1
            return web.Response(status=500)
        self.deliveries.append((dict(request.headers), body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver([])
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield hook, str(server.make_url("/hook"))
    await server.close()


async def test_callbacks_are_advertised_only_when_on(rig: Rig) -> None:
    assert await rig.client.callbacks_supported() is False
    with pytest.raises(ServiceError) as missing:
        await rig.client.register_callback("http://127.0.0.1:9/hook", "s3cret")
    assert missing.value.status == 404
    rig.state.callbacks_enabled = True
    assert await rig.client.callbacks_supported() is True


async def test_signed_status_changes_are_delivered_and_verify(
    rig: Rig, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.fail = 1  # the first delivery is retried
    rig.state.callbacks_enabled = True
    await rig.client.register_callback(url, "s3cret")
    assert rig.state.callbacks["standin"] == (url, "s3cret")
    sid = await launch(rig)
    rig.clock.now += 35
    await rig.client.session(sid)
    await rig.state.drain()
    events = []
    for headers, body in hook.deliveries:
        verify_callback(b"s3cret", headers, body, time.time())
        events.append(decode_callback(body))
    assert [(e.previous, e.status) for e in events] == [
        (None, "Pending"),
        ("Pending", "Running"),
        ("Running", "Succeeded"),
    ]
    assert {e.id for e in events} == {sid}
    assert {e.service for e in events} == {"skaha"}
    assert events[-1].details["status"] == "Succeeded"
    assert [d.status for d in rig.state.deliveries][:2] == [500, 204]
    headers, body = hook.deliveries[0]
    with pytest.raises(CallbackError, match="does not match"):
        verify_callback(b"s3cret", headers, body + b" ", time.time())
    with pytest.raises(CallbackError, match="does not match"):
        verify_callback(b"other", headers, body, time.time())
    with pytest.raises(CallbackError, match="stale"):
        verify_callback(b"s3cret", headers, body, time.time() + 3600)
    with pytest.raises(CallbackError, match="not signed"):
        verify_callback(b"s3cret", {}, body, time.time())


async def test_status_changes_are_called_back_unasked(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    """With the real clock, the stand-in's own ticker notices the run ending."""
    hook, url = receiver
    state = SkahaState(start_delay=0.05, run_seconds=0.1, callbacks_enabled=True)
    state.callbacks["standin"] = (url, "k")
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    try:
        token = tmp_path / "t"
        token.write_text(DEFAULT_TOKEN)
        async with aiohttp.ClientSession() as http:
            client = SkahaClient(str(server.make_url("/skaha")), TokenFile(token), http)
            sid = await client.create(name="tick", image=TERMINAL, type="headless", cores=1, ram=1)
        for _ in range(100):
            if len(hook.deliveries) >= 3:
                break
            await asyncio.sleep(0.02)
        statuses = [decode_callback(body).status for _, body in hook.deliveries]
        assert statuses == ["Pending", "Running", "Succeeded"]
        assert state.sessions[sid].status == "Succeeded"
    finally:
        await server.close()
