"""The user commands of ``talicada``: demo, run, submit/accept/watch/cancel, sessions,
refusals and their exit statuses, and what the terminal display shows."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.client import display, wire
from talicada.client.wire import Transition
from tests.conftest import EXAMPLES, BrokerFactory
from tests.lifecycle_support import FILES, task

NEW_COMMANDS = [
    "submit",
    "run",
    "accept",
    "reject",
    "cancel",
    "delete",
    "extend",
    "watch",
    "sessions",
]


@pytest.fixture
def store() -> Store:
    """The memory store only: these tests are about the commands, not the stores."""
    return MemoryStore()


async def talicada(*args: str, limit: float = 30) -> tuple[int, str, str]:
    """Run the command in a child process (stdout is a pipe: JSON lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALICADA_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "talicada",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=limit)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def broker_url(start_broker: BrokerFactory) -> str:
    return str((await start_broker()).make_url("")).rstrip("/")


@pytest.mark.parametrize("command", [*NEW_COMMANDS, "demo", "log"])
async def test_every_user_command_explains_itself(command: str) -> None:
    code, out, _ = await talicada(command, "--help")
    assert code == 0
    assert f"usage: talicada {command}" in out
    if command in ("watch", "run"):
        assert "0 the session COMPLETED" in out


async def test_demo_runs_the_checksum_example_to_completed() -> None:
    code, out, err = await talicada("demo", "--json")
    assert code == 0, err
    events = lines(out)
    assert events[-1]["event"] == "end"
    assert events[-1]["phase"] == "COMPLETED"
    phases = [e["to"] for e in events if e["event"] == "transition"]
    assert phases == ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]


async def test_run_serves_the_example_s_files_and_follows_it_to_the_end(
    start_broker: BrokerFactory, tmp_path: Path
) -> None:
    url = await broker_url(start_broker)
    for name, body in FILES.items():
        (tmp_path / name).write_bytes(body)
    example = str(EXAMPLES / "v1-local-checksum-request.yaml")
    code, out, err = await talicada("run", example, "--url", url, "--files", str(tmp_path))
    assert code == 0, err
    events = lines(out)
    assert [e["event"] for e in events[:2]] == ["offers", "accepted"]
    assert {"platform", "start", "duration", "cores", "memory", "preparation", "expiry"} <= set(
        events[0]["offers"][0]
    )
    assert events[-1] == {"event": "end", "session": events[1]["session"], "phase": "COMPLETED"}
    # without --files the placeholder port cannot work: said before anything is sent
    code, _, err = await talicada("run", example, "--url", url)
    assert code != 0
    assert "--files" in err


async def test_submit_accept_extend_cancel_and_watch_exit_with_how_it_ended(
    start_broker: BrokerFactory, tmp_path: Path
) -> None:
    url = await broker_url(start_broker)
    request = tmp_path / "delay.json"
    request.write_text(json.dumps(task("delay", duration="PT30S")))
    code, out, _ = await talicada("submit", str(request), "--url", url)
    assert code == 0
    offers = json.loads(out)["offers"]
    first, second = offers[0]["meta"]["uuid"], offers[1]["meta"]["uuid"]
    code, out, _ = await talicada("accept", first, "--url", url)
    assert (code, json.loads(out)["phase"]) == (0, "ACCEPTED")
    code, out, _ = await talicada("extend", first, "--by", "PT1M", "--url", url)
    assert json.loads(out)["schedule"]["available"]["duration"] == "PT3M"
    code, out, _ = await talicada("sessions", "--phase", "rejected", "--url", url)
    assert second in {s["meta"]["uuid"] for s in lines(out)}
    assert first not in {s["meta"]["uuid"] for s in lines(out)}
    # a refusal: the sibling was rejected when the first was accepted
    code, _, err = await talicada("accept", second, "--url", url)
    assert code == 5
    assert "REJECTED" in err
    code, _, _ = await talicada("cancel", first, "--url", url)
    assert code == 0
    code, out, _ = await talicada("watch", first, "--url", url)
    assert code == 3
    assert lines(out)[-1]["phase"] == "CANCELLED"
    # delete forgets the finished session; reading it then fails naming the 404
    code, out, _ = await talicada("delete", first, "--url", url)
    assert (code, json.loads(out)) == (
        0,
        {"event": "forgotten", "session": first, "phase": "CANCELLED"},
    )
    code, _, err = await talicada("log", first, "--url", url)
    assert code != 0
    assert "404" in err or "not found" in err.lower()


async def test_a_request_no_platform_can_run_exits_6_with_the_reasons(
    start_broker: BrokerFactory,
) -> None:
    url = await broker_url(start_broker)
    notebook = str(EXAMPLES / "seed-notebook-request.yaml")
    code, out, _ = await talicada("submit", notebook, "--url", url)
    assert code == 6
    assert json.loads(out)["result"] == "NO"
    code, _, err = await talicada("run", notebook, "--url", url)
    assert code == 6
    assert "cannot run executable kind 'https://" in err
    assert "/executable/docker-container-1.0'" in err


async def test_an_unreachable_broker_exits_5_naming_it() -> None:
    code, _, err = await talicada("sessions", "--url", "http://127.0.0.1:9")
    assert code == 5
    assert "127.0.0.1:9" in err


DATA_KIND = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/simple-data-resource-1.0"


def test_the_terminal_view_shows_phases_components_and_staging() -> None:
    progress = {
        "kind": "urn:talicada:info:progress",
        "values": {"done": "1048576", "total": "2097152"},
    }
    session = wire.session(
        {
            "meta": {"uuid": "s-1", "name": "demo"},
            "phase": "PREPARING",
            "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0", "phase": "WAITING"},
            "compute": {"meta": {"uuid": "c-1"}, "phase": "WAITING"},
            "data": [
                {
                    "kind": DATA_KIND,
                    "meta": {"uuid": "d-1", "name": "file-[a]", "messages": [progress]},
                    "location": "http://x/a",
                    "phase": "PREPARING",
                }
            ],
        }
    )
    view = display.SessionView(session)
    view.add(Transition(index=0, source="ACCEPTED", target="PREPARING", cause="start", time=""))
    view.add(
        Transition(
            index=1, source="WAITING", target="PREPARING", cause="staging", time="", component="d-1"
        )
    )
    sink = io.StringIO()
    Console(file=sink, width=120, color_system=None).print(view.render())
    text = sink.getvalue()
    assert "PREPARING" in text
    assert "file-[a]" in text  # names are text, never markup
    assert "1.0 MiB of 2.0 MiB" in text
    assert "staging" in text
