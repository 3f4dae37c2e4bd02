"""A client generated from schema/openapi.json by openapi-python-client drives a whole session.

The generator is the judge of whether the contract is usable: every call goes
through the generated code with ``raise_on_unexpected_status``, so an answer
whose status or shape the document does not describe fails the test. The client
is generated once per test session into a temporary directory (no network).
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from talicada.schema.kinds import Dialect, Family, uri_for
from tests.conftest import BrokerFactory

SCHEMA = Path(__file__).resolve().parents[1] / "schema" / "openapi.json"
PACKAGE = "talicada_generated_client"
PING = uri_for(Family.EXECUTABLE, "ping", Dialect.V1_0)
STORAGE = uri_for(Family.STORAGE, "simple-storage-resource", Dialect.V1_0)


def _generator() -> str:
    """The openapi-python-client of this interpreter's venv (installed by the test extra)."""
    found = Path(sys.executable).with_name("openapi-python-client")
    if found.exists():
        return str(found)
    on_path = shutil.which("openapi-python-client")
    assert on_path, "openapi-python-client is missing: run scripts/_venv.sh (test extra)"
    return on_path


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """The generated package's modules, generated once for the whole test session."""
    root = tmp_path_factory.mktemp("generated-client")
    config = root / "config.yaml"
    # No post hooks: formatting the output costs seconds and changes nothing it does.
    config.write_text("post_hooks: []\n")
    result = subprocess.run(
        [
            _generator(),
            "generate",
            "--path",
            str(SCHEMA),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        names = {
            "client": "client",
            "models": "models",
            "create_offer_set": "api.offers.create_offer_set",
            "get_offer_set": "api.offers.get_offer_set",
            "execute_direct": "api.sessions.execute_direct",
            "get_session": "api.sessions.get_session",
            "update_session": "api.sessions.update_session",
            "get_session_log": "api.sessions.get_session_log",
            "list_sessions": "api.sessions.list_sessions",
        }
        yield {key: importlib.import_module(f"{PACKAGE}.{name}") for key, name in names.items()}
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
            del sys.modules[name]


def _request(name: str) -> dict[str, Any]:
    """A v1.0 request: a ping that mounts a scratch storage read-write."""
    return {
        "meta": {"name": name},
        "executable": {"kind": PING, "meta": {"name": "pinger"}},
        "storage": [{"kind": STORAGE, "meta": {"name": "scratch"}}],
        "compute": {"volumes": [{"path": "/scratch", "mode": "READWRITE", "resource": "scratch"}]},
    }


async def test_a_generated_client_drives_offers_accept_direct_get_log_and_list(
    start_broker: BrokerFactory, generated: dict[str, ModuleType]
) -> None:
    """Offers, accept, get (long poll), log, direct (run and refused) and list, all parsed."""
    broker = await start_broker()
    models = generated["models"]
    client = generated["client"].Client(
        base_url=str(broker.make_url("")).rstrip("/"), raise_on_unexpected_status=True
    )
    v1 = models.Dialect.V1_0  # one enum for every operation's ?dialect=
    async with client as api:
        # Given an offer set asked for through the generated model
        body = models.ExecutionRequest.from_dict(_request("generated"))
        offerset = await generated["create_offer_set"].asyncio(client=api, body=body)
        assert isinstance(offerset, models.OfferSet), offerset
        assert offerset.result == models.OfferSetResult.YES
        assert offerset.offers
        again = await generated["get_offer_set"].asyncio(offerset.meta.uuid, client=api)
        assert isinstance(again, models.OfferSet)
        assert [o.meta.uuid for o in again.offers] == [o.meta.uuid for o in offerset.offers]
        offer = offerset.offers[0]
        options = {option.path: option for option in offer.meta.options}
        assert set(options["phase"].values) == {"ACCEPTED", "REJECTED"}

        # When the client accepts the first offer
        accept = models.EnumValueUpdate.from_dict(
            {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
        )
        accepted = await generated["update_session"].asyncio(
            offer.meta.uuid, client=api, body=accept
        )
        assert isinstance(accepted, models.ExecutionSession)
        assert accepted.phase in {
            models.ExecutionSessionPhase.ACCEPTED,
            models.ExecutionSessionPhase.WAITING,
            models.ExecutionSessionPhase.PREPARING,
        }

        # Then long polls reach COMPLETED and the log parses
        session = accepted
        for _ in range(20):
            if session.phase.value in {"COMPLETED", "FAILED", "CANCELLED"}:
                break
            session = await generated["get_session"].asyncio(
                offer.meta.uuid,
                client=api,
                wait=10,
                phase=models.GetSessionPhase(session.phase.value),
            )
            assert isinstance(session, models.ExecutionSession)
        assert session.phase == models.ExecutionSessionPhase.COMPLETED
        assert session.start_time
        assert session.end_time
        assert session.exit_code == 0
        (mount,) = session.compute.volumes
        assert mount.mode.value == "READWRITE"
        assert mount.resource == "scratch"
        record = await generated["get_session_log"].asyncio(offer.meta.uuid, client=api)
        assert isinstance(record, models.SessionLog)
        assert record.session.meta.uuid == offer.meta.uuid
        session_steps = [step.to for step in record.history if not isinstance(step.component, str)]
        assert session_steps[-1] == "COMPLETED"

        # And a direct request runs at once, while one that cannot run is refused with reasons
        direct = await generated["execute_direct"].asyncio(
            client=api, body=models.ExecutionRequest.from_dict(_request("direct"))
        )
        assert isinstance(direct, models.ExecutionSession)
        assert direct.phase != models.ExecutionSessionPhase.OFFERED
        too_big = _request("too-big")
        too_big["compute"]["cores"] = {"min": 100_000}
        refused = await generated["execute_direct"].asyncio(
            client=api, body=models.ExecutionRequest.from_dict(too_big)
        )
        assert isinstance(refused, models.RefusedExecution)
        assert refused.phase == models.RefusedExecutionPhase.REJECTED
        assert any("cores" in item.message for item in refused.messages)

        # And sessions made in the other dialects read as v1.0 through ?dialect=
        seed = {"name": "seed", "executable": {"type": PING}}
        storage_106 = uri_for(Family.STORAGE, "simple-storage-resource", Dialect.V1_0_6)
        v106 = {"executable": {"kind": PING}, "storage": [{"kind": storage_106}]}
        for raw in (seed, v106):
            response = await broker.post("/direct", json=raw)
            assert response.status == 200, await response.text()
        page = await generated["list_sessions"].asyncio(client=api, dialect=v1)
        assert isinstance(page, models.SessionList)
        listed = {item.meta.uuid for item in page.sessions}
        assert {offer.meta.uuid, direct.meta.uuid} <= listed
        assert len(listed) == 4
