"""MQTT access (must show 4): credentials, the documented ACL, and no retained message left.

The test starts its own Mosquitto on a free loopback port with a password
file and the ACL of docs/examples/mosquitto.acl (the shared one on 1883 is
never reconfigured), and runs a session through the broker with its workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from talicada.broker.mqtt import topic_for
from tests.conftest import BrokerFactory
from tests.lifecycle_support import Client, accept_first, task, wait_for_phase

ACL = Path(__file__).resolve().parents[1] / "docs" / "examples" / "mosquitto.acl"
USERS = {"talicada": "broker-secret-1", "alice": "alice-secret-1", "bob": "bob-secret-1"}
ALICE, BOB = "a" * 24, "b" * 24


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto of this test's own with passwords and the documented ACL; its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwords = tmp_path / "passwd"
    for number, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwords), user, password], check=True
        )
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
        f"acl_file {ACL}\n"
        "persistence false\n"
        "user root\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert process.poll() is None, "mosquitto exited at start-up"
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(port: int, user: str | None = None) -> aiomqtt.Client:
    password = USERS.get(user or "")
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    )


async def collect(port: int, user: str, topic: str, seconds: float) -> list[str]:
    """The topics of the messages ``user`` receives on ``topic`` within ``seconds``."""
    received: list[str] = []
    async with client(port, user) as mqtt:
        await mqtt.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in mqtt.messages:
                    received.append(str(message.topic))
    return received


async def test_mosquitto_refuses_clients_without_the_credentials(mosquitto: int) -> None:
    for user, password in ((None, None), ("alice", "wrong"), ("mallory", "x")):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto, username=user, password=password, timeout=5
            ):
                pass


async def alices_broker(
    start_broker: BrokerFactory, mosquitto: int, tmp_path: Path, **settings: Any
) -> Client:
    """A broker publishing to this test's Mosquitto with its credentials, called as alice
    (bob has a token too)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n")
    broker = await start_broker(
        auth_tokens_file=str(tokens),
        mqtt_url=f"mqtt://talicada:{USERS['talicada']}@127.0.0.1:{mosquitto}",
        **settings,
    )
    broker.session.headers["Authorization"] = f"Bearer {ALICE}"
    return broker


async def test_each_user_reads_only_their_sessions_and_a_forgotten_one_leaves_nothing(
    start_broker: BrokerFactory, mosquitto: int, tmp_path: Path
) -> None:
    broker = await alices_broker(start_broker, mosquitto, tmp_path, mqtt_final_retain=3)
    everything = asyncio.create_task(collect(mosquitto, "bob", "talicada/#", 5))
    own = asyncio.create_task(collect(mosquitto, "alice", "talicada/sessions/alice/#", 5))
    await asyncio.sleep(0.5)  # both subscribed
    uuid = await accept_first(broker, task("ping"))
    assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    topic = topic_for("talicada", "alice", uuid)
    # The final phase is retained, with a 3 s expiry (the broker's forgetting,
    # shortened): a late subscriber gets it at once…
    assert set(await collect(mosquitto, "alice", topic, 0.5)) == {topic}
    assert topic in await own  # alice saw her session's phases…
    assert await everything == []  # …bob, subscribed to everything, saw nothing
    # …and once the session is forgotten a new subscriber finds nothing retained.
    await asyncio.sleep(3.5)
    assert await collect(mosquitto, "alice", topic, 1.0) == []


async def test_deleting_a_finished_session_clears_its_retained_message_at_once(
    start_broker: BrokerFactory, mosquitto: int, tmp_path: Path
) -> None:
    broker = await alices_broker(start_broker, mosquitto, tmp_path)
    uuid = await accept_first(broker, task("ping"))
    assert await wait_for_phase(broker, uuid, {"COMPLETED", "FAILED"}) == "COMPLETED"
    topic = topic_for("talicada", "alice", uuid)
    # Retained for as long as the broker keeps the session (the default)…
    deadline = time.monotonic() + 5
    while await collect(mosquitto, "alice", topic, 0.3) != [topic]:
        assert time.monotonic() < deadline, "the final phase was never retained"
    # …until the owner deletes it: then nothing is retained any more.
    response = await broker.delete(f"/sessions/{uuid}", allow_redirects=False)
    assert response.status == 303
    gone = await broker.get(f"/sessions/{uuid}")
    assert gone.status == 404
    deadline = time.monotonic() + 5
    while await collect(mosquitto, "alice", topic, 0.3) != []:
        assert time.monotonic() < deadline, "the retained message was not cleared"
