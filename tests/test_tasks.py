"""The local test tasks, run as the real subprocesses the launch worker starts."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
import time
from pathlib import Path

import msgspec
import pytest

from talicada.schema.model import Checksum, Delay, FailBlock, Ping
from talicada.workers.tasks import (
    EXIT_INJECTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    FailSpec,
    TaskSpec,
    command,
    parse_result,
)

TIMEOUT = 10.0  # seconds; generous for a slow CI, yet no test can hang


async def run(spec: TaskSpec, *, stdin: bytes | None = None) -> tuple[int, bytes, bytes, float]:
    """Run a task to its end: (exit status, stdout, stderr, seconds taken)."""
    argv = command(spec)
    if stdin is not None:
        argv = [*argv[:-1], "-"]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out, err, time.monotonic() - started


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_ping_exits_at_once() -> None:
    status, out, err, took = await run(TaskSpec(kind="ping"))
    assert (status, err) == (0, b"")
    assert parse_result(out) == {}
    assert took < 5


async def test_delay_takes_its_duration() -> None:
    status, out, _, took = await run(TaskSpec(kind="delay", duration_s=0.3))
    assert status == 0
    assert parse_result(out) == {}
    assert took >= 0.3


async def test_checksum_reports_sha256_of_every_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 5000)  # > one 1 MiB chunk
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    (root / "escape").symlink_to(outside)  # leads out of the tree: ignored
    single = tmp_path / "single.dat"
    single.write_bytes(b"")

    spec = TaskSpec(kind="checksum", paths=[str(root), str(single)])
    status, out, err, _ = await run(spec)

    assert status == 0, err
    assert out.count(b"\n") == 1
    assert parse_result(out) == {
        f"{root}/a.txt": sha256(b"alpha\n"),
        f"{root}/sub/b.bin": sha256(bytes(range(256)) * 5000),
        str(single): sha256(b""),
    }


async def test_checksum_of_missing_path_fails(tmp_path: Path) -> None:
    status, _, err, _ = await run(TaskSpec(kind="checksum", paths=[str(tmp_path / "gone")]))
    assert status == 1
    assert b"gone" in err


@pytest.mark.parametrize("kind", ["ping", "delay", "checksum"])
async def test_fail_exits_3_with_message_after_delay(kind: str, tmp_path: Path) -> None:
    spec = msgspec.convert(
        {"kind": kind, "duration_s": 30, "paths": [str(tmp_path)]}, type=TaskSpec
    )
    spec.fail = FailSpec(after_s=0.3, message="injected: disk on fire")
    status, out, err, took = await run(spec)
    assert status == EXIT_INJECTED
    assert err.decode().strip() == "injected: disk on fire"
    assert out == b""
    assert 0.3 <= took < 5


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its SIGTERM handler (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


async def test_sigterm_ends_a_long_delay_with_143() -> None:
    process = await asyncio.create_subprocess_exec(
        *command(TaskSpec(kind="delay", duration_s=60)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # Signal only once the handler is in place; earlier, Python's default kills (-15).
        for _ in range(int(TIMEOUT / 0.01)):
            if _handles_sigterm(process.pid):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the task never installed its SIGTERM handler")
        await asyncio.sleep(0.05)  # let it reach the sleep
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), TIMEOUT)
        assert status == EXIT_TERMINATED == 143
        assert time.monotonic() - sent < 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_spec_from_stdin() -> None:
    status, _, _, _ = await run(TaskSpec(kind="delay", duration_s=0.01), stdin=b'{"kind":"ping"}')
    assert status == 0


@pytest.mark.parametrize(
    "raw",
    [b'{"kind": "sleep"}', b'{"kind": "delay", "duration_s": -1}', b'{"kind": "checksum"}', b"{"],
)
async def test_bad_spec_is_a_usage_error(raw: bytes) -> None:
    status, _, err, _ = await run(TaskSpec(kind="ping"), stdin=raw)
    assert status == EXIT_USAGE
    assert b"invalid task spec" in err


def test_command_uses_this_interpreter() -> None:
    argv = command(TaskSpec(kind="delay", duration_s=1.5))
    assert argv[:3] == [sys.executable, "-m", "talicada.workers.tasks"]
    assert msgspec.json.decode(argv[3]) == {"kind": "delay", "duration_s": 1.5}


@pytest.mark.parametrize(
    "garbage",
    [b"hello", b'{"digests": {"a": "xyz"}}', b'{"digest": {}}', b"[1, 2]", b'{"digests": 1}'],
)
def test_parse_result_refuses_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a digests line"):
        parse_result(garbage)


def test_spec_from_model_executables() -> None:
    running = FailBlock(phase="RUNNING", after="PT1.5S", message="boom")
    assert TaskSpec.from_executable(Ping(fail=running), []) == TaskSpec(
        kind="ping", fail=FailSpec(after_s=1.5, message="boom")
    )
    preparing = FailBlock(phase="PREPARING")
    assert TaskSpec.from_executable(Delay(duration="PT2M", fail=preparing), []) == TaskSpec(
        kind="delay", duration_s=120.0
    )
    assert TaskSpec.from_executable(Checksum(paths=["/in"]), ["/tmp/s/in"]) == TaskSpec(
        kind="checksum", paths=["/tmp/s/in"]
    )
