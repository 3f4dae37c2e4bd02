"""``talicada.client``: whole sessions driven sync and async against a broker on loopback."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from talicada.client import AsyncClient, BrokerError, Client, NoOffers, Transition
from talicada.schema.model import (
    Delay,
    ExecutionRequest,
    ExecutionSession,
    Schedule,
    StartDuration,
)
from tests.conftest import BrokerFactory
from tests.lifecycle_support import checksum_request, expected_digests, task

#: The session phases of a checksum run, as the broker records them.
PATH = ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]


def url_of(client: object) -> str:
    return str(client.make_url("")).rstrip("/")  # type: ignore[attr-defined]


def available(session: ExecutionSession) -> str | None:
    """The booked duration of the session's available window."""
    window = session.schedule.available if session.schedule else None
    return window.duration if window else None


def phases(steps: list[Transition]) -> list[str]:
    return [step.target for step in steps if not step.component]


async def test_a_notebook_style_script_drives_the_checksum_example_with_the_sync_client(
    start_broker: BrokerFactory, file_server: str
) -> None:
    url = url_of(await start_broker())

    async def notebook_cell() -> tuple[str, list[str], dict[str, str]]:
        # Inside a running loop, as in Jupyter: the sync client must still work.
        with Client(url) as broker:
            offers = broker.request_offers(checksum_request(file_server))
            assert offers.result == "YES"
            uuid = offers.offers[0].meta.uuid
            assert uuid is not None
            assert broker.accept(uuid).phase == "ACCEPTED"
            steps = list(broker.watch(uuid))
            log = broker.log(uuid)
            digests = {
                m.values["path"]: m.values["digest"]
                for m in log.session.executable.meta.messages  # type: ignore[union-attr]
                if "digest" in m.values
            }
            return broker.get(uuid).phase, phases(steps), digests

    # The broker runs on this test's loop, so the "notebook" gets a thread and loop of its own.
    phase, path, digests = await asyncio.wait_for(
        asyncio.to_thread(asyncio.run, notebook_cell()), timeout=30
    )
    assert phase == "COMPLETED"
    assert path == PATH
    assert digests == expected_digests()


async def test_the_async_client_runs_a_session_and_lists_it(
    start_broker: BrokerFactory, file_server: str
) -> None:
    async with AsyncClient(url_of(await start_broker())) as broker:
        offers, session = await broker.run(checksum_request(file_server))
        uuid = session.meta.uuid
        assert uuid is not None
        final = await asyncio.wait_for(broker.wait(uuid), timeout=30)
        assert final.phase == "COMPLETED"
        log = await broker.log(uuid)
        assert [t.target for t in log.history if not t.component] == PATH
        assert {d.phase for d in log.session.data} == {"COMPLETED"}
        # the siblings of the accepted offer were rejected
        siblings = (await broker.offerset(offers.meta.uuid or "")).offers
        assert sorted(o.phase for o in siblings) == ["COMPLETED"] + ["REJECTED"] * (
            len(siblings) - 1
        )
        page = await broker.list_sessions(phases=["COMPLETED"])
        assert [s.meta.uuid for s in page.sessions] == [uuid]


async def test_watching_by_long_poll_sees_what_sse_sees_and_resumes_after_an_index(
    start_broker: BrokerFactory,
) -> None:
    async with AsyncClient(url_of(await start_broker()), poll_wait=1) as broker:
        _, session = await broker.run(task("delay", duration="PT1S"))
        uuid = session.meta.uuid or ""
        polled = [t async for t in broker.watch(uuid, transport="poll")]
        streamed = [t async for t in broker.watch(uuid, transport="sse")]
        assert polled == streamed
        assert phases(polled)[-1] == "COMPLETED"
        resumed = [t async for t in broker.watch(uuid, after=3)]
        assert resumed == streamed[4:]


async def test_a_model_request_is_sent_in_the_broker_s_dialect(
    start_broker: BrokerFactory,
) -> None:
    request = ExecutionRequest(
        executable=Delay(duration="PT1S"),
        schedule=Schedule(requested=StartDuration(duration="PT2M")),
    )
    async with AsyncClient(url_of(await start_broker())) as broker:
        offers = await broker.request_offers(request)
        assert offers.result == "YES"
        assert isinstance(offers.offers[0].executable, Delay)
        assert offers.offers[0].executable.duration == "PT1S"


async def test_refusals_raise_with_the_broker_s_messages(start_broker: BrokerFactory) -> None:
    async with AsyncClient(url_of(await start_broker())) as broker:
        with pytest.raises(BrokerError) as invalid:
            await broker.request_offers({"executable": {"kind": "urn:nothing"}})
        assert invalid.value.status == 400
        assert any("executable.kind" in m.message for m in invalid.value.messages)

        offers, session = await broker.run(task("delay", duration="PT30S"))
        sibling = offers.offers[1].meta.uuid or ""
        with pytest.raises(BrokerError) as conflict:
            await broker.accept(sibling)
        assert conflict.value.status == 409
        assert "REJECTED" in str(conflict.value)

        with pytest.raises(NoOffers) as refused:
            await broker.run(task("delay", duration="PT1S") | {"compute": {"cores": {"min": 999}}})
        assert any("cores" in m.message for m in refused.value.messages)

        with pytest.raises(BrokerError) as missing:
            await broker.get("00000000-0000-4000-8000-000000000000")
        assert missing.value.status == 404
        # let the running task go now rather than at teardown
        await broker.cancel(session.meta.uuid or "")
        final = await asyncio.wait_for(broker.wait(session.meta.uuid or ""), 15)
        assert final.phase == "CANCELLED"


async def test_extend_and_cancel_change_the_session(start_broker: BrokerFactory) -> None:
    async with AsyncClient(url_of(await start_broker())) as broker:
        _, session = await broker.run(task("delay", duration="PT30S"))
        uuid = session.meta.uuid or ""
        assert available(await broker.extend(uuid, by=timedelta(minutes=3))) == "PT5M"
        assert available(await broker.extend(uuid, to="PT4M")) == "PT4M"
        assert (await broker.cancel(uuid)).phase in ("CANCELLED", "RELEASING")
        assert (await asyncio.wait_for(broker.wait(uuid), timeout=15)).phase == "CANCELLED"


async def test_an_unreachable_broker_is_a_broker_error_saying_where() -> None:
    async with AsyncClient("http://127.0.0.1:9", timeout=2) as broker:
        with pytest.raises(BrokerError) as error:
            await broker.capabilities()
    assert error.value.status == 0
    assert "127.0.0.1:9" in str(error.value)


async def test_delete_ends_a_live_session_then_forgets_it_once_finished(
    start_broker: BrokerFactory,
) -> None:
    async with AsyncClient(url_of(await start_broker())) as broker:
        _, session = await broker.run(task("delay", duration="PT30S"))
        uuid = session.meta.uuid or ""
        await broker.delete(uuid)  # live: cancelled
        assert (await asyncio.wait_for(broker.wait(uuid), timeout=15)).phase == "CANCELLED"
        await broker.delete(uuid)  # final: forgotten
        with pytest.raises(BrokerError) as gone:
            await broker.get(uuid)
        assert gone.value.status == 404
