"""The local platform's test tasks (ping, delay, checksum) as a real program.

The launch worker runs each task as a subprocess so that the local platform
exercises the same things a real platform does: a process that starts, runs for
a while, writes results, fails with an exit status, and dies on SIGTERM::

    python -m talicada.workers.tasks '{"kind": "delay", "duration_s": 2.5}'
    echo '{"kind": "checksum", "paths": ["/data"]}' | python -m talicada.workers.tasks -

Exit statuses: 0 done, 1 the task itself failed (e.g. a path to hash is missing),
2 the spec is unusable, 3 the injected ``fail`` fired, 143 ended by SIGTERM.

With ``--status FILE`` first, the program forks: the child runs the task and
the parent waits for it, makes its stdout and stderr durable and writes the
exit status to FILE (atomically, fsynced), so the outcome survives the death
of the launcher that started it: a launcher started later reads FILE instead
of guessing (``talicada/workers/orphans.py``). A child killed by signal N is
recorded as 128 + N, the shell's convention.

The launcher uses the Python side: :class:`TaskSpec`, :func:`command` and
:func:`parse_result`. This module imports only the standard library and msgspec
at start-up, because its import time is part of every task's start-up time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta

if TYPE_CHECKING:
    from talicada.schema.model import TestTask

__all__ = [
    "EXIT_FAILED",
    "EXIT_INJECTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "FailSpec",
    "TaskSpec",
    "command",
    "main",
    "parse_result",
    "read_status",
    "write_status",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INJECTED = 3
#: The shell convention 128 + SIGTERM. A SIGTERM that arrives before the handler is
#: installed (during interpreter start-up) shows as -15 instead; treat both alike.
EXIT_TERMINATED = 128 + signal.SIGTERM

_CHUNK = 1024 * 1024  # read size when hashing: bounded memory whatever the file size
_MAX_SECONDS = 366 * 86_400.0  # the longest duration the schema's ISO 8601 parser allows

Seconds = Annotated[float, Meta(ge=0, le=_MAX_SECONDS)]


class FailSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The injected failure: sleep ``after_s`` seconds, print ``message``, exit 3."""

    after_s: Seconds = 0.0
    message: str = "injected failure"


class TaskSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """What to run: the one JSON argument of ``python -m talicada.workers.tasks``."""

    kind: Literal["ping", "delay", "checksum"]
    duration_s: Seconds = 0.0
    paths: list[str] = msgspec.field(default_factory=list)
    fail: FailSpec | None = None

    @classmethod
    def from_executable(cls, executable: TestTask, paths: list[str]) -> TaskSpec:
        """Build the spec of a model test task, with ``paths`` its mounts as local paths.

        Only a ``fail`` block for phase RUNNING is carried over: failures in the
        other phases belong to the workers that run those phases.
        """
        # Imported here, not at the top: the task program itself never needs them.
        from talicada.schema import model
        from talicada.schema.iso8601 import parse_duration

        fail = None
        if executable.fail is not None and executable.fail.phase == "RUNNING":
            fail = FailSpec(
                after_s=parse_duration(executable.fail.after).total_seconds(),
                message=executable.fail.message,
            )
        if isinstance(executable, model.Delay):
            duration = parse_duration(executable.duration).total_seconds()
            return cls(kind="delay", duration_s=duration, fail=fail)
        if isinstance(executable, model.Checksum):
            return cls(kind="checksum", paths=list(paths), fail=fail)
        return cls(kind="ping", fail=fail)


class _Result(msgspec.Struct, forbid_unknown_fields=True):
    """What checksum prints: one JSON line."""

    digests: dict[str, Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]]


def command(spec: TaskSpec, status: str | None = None) -> list[str]:
    """The argv that runs ``spec`` with this interpreter (no shell involved); with
    ``status``, its exit status is recorded in that file."""
    recorded = ["--status", status] if status is not None else []
    return [
        sys.executable,
        "-m",
        "talicada.workers.tasks",
        *recorded,
        msgspec.json.encode(spec).decode(),
    ]


def parse_result(stdout: bytes) -> dict[str, str]:
    """The digests a task printed: empty for ping and delay (which print nothing).

    Raises :class:`ValueError` when the output is not the one JSON line expected.
    """
    text = stdout.strip()
    if not text:
        return {}
    try:
        return msgspec.json.decode(text, type=_Result).digests
    except msgspec.DecodeError as exc:
        shown = text[:80].decode("utf-8", "replace")
        raise ValueError(f"task output is not a digests line ({exc}): {shown!r}") from exc


# -- the program --------------------------------------------------------------------


class _TaskError(Exception):
    """The task cannot do what it was asked (exit 1)."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through any sleep or hashing loop at once, closing files.
    raise SystemExit(128 + signum)


def _display(path: str) -> str:
    # JSON output must be valid UTF-8; undecodable file names keep a visible escape.
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    # O_NOFOLLOW: the entry was checked as a regular file; never let a swap redirect us.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _files(root: str) -> Iterator[tuple[str, str]]:
    """(key, real path) of every regular file under ``root``, sorted, no escapes."""
    real_root = os.path.realpath(root)  # the root itself may be a link, e.g. a mount
    try:
        mode = os.stat(real_root).st_mode
    except OSError as exc:
        raise _TaskError(f"cannot read {root}: {exc.strerror}") from exc
    if stat.S_ISREG(mode):
        yield root, real_root
        return
    if not stat.S_ISDIR(mode):
        return

    def fail(exc: OSError) -> None:
        raise _TaskError(f"cannot list {exc.filename}: {exc.strerror}")

    # followlinks=False: linked directories are not descended, so no loops and no
    # duplicates; linked files count only when their target stays inside the tree.
    for directory, dirnames, filenames in os.walk(real_root, onerror=fail):
        dirnames.sort()
        for filename in sorted(filenames):
            found = os.path.join(directory, filename)
            target = os.path.realpath(found)
            if not _inside(target, real_root):
                continue
            try:
                if not stat.S_ISREG(os.stat(target).st_mode):
                    continue
            except FileNotFoundError:  # a dangling link
                continue
            yield os.path.join(root, os.path.relpath(found, real_root)), target


def _checksum(paths: list[str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for root in paths:
        for key, real in _files(root):
            try:
                digests[_display(key)] = _sha256(real)
            except OSError as exc:
                raise _TaskError(f"cannot read {_display(key)}: {exc.strerror}") from exc
    return digests


def _run(spec: TaskSpec) -> int:
    if spec.fail is not None:
        # The injected failure replaces the task's work, so it fires at a predictable time.
        time.sleep(spec.fail.after_s)
        print(spec.fail.message, file=sys.stderr, flush=True)
        return EXIT_INJECTED
    if spec.kind == "delay":
        time.sleep(spec.duration_s)
    elif spec.kind == "checksum":
        line = msgspec.json.encode(_Result(digests=_checksum(spec.paths)))
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()
    return EXIT_OK


def write_status(path: str, code: int) -> None:
    """Write ``code`` to ``path`` so that it survives any crash: temporary file,
    fsync, rename, fsync of the directory."""
    directory = os.path.dirname(path) or "."
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as stream:
        stream.write(f"{code}\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_status(path: str) -> int | None:
    """The exit status :func:`write_status` recorded, or None when there is none."""
    try:
        with open(path) as stream:
            return int(stream.read().strip())
    except (OSError, ValueError):
        return None


def _supervise(status: str, args: list[str]) -> int:
    """Run the task in a child process and record how it ended (see the module doc)."""
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which never returns here
        code = EXIT_USAGE
        try:
            code = main(args)
        except SystemExit as stop:  # the task's own signal handler ends it this way
            code = stop.code if isinstance(stop.code, int) else EXIT_FAILED
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    # The parent outlives the child: a SIGTERM to the process group is for the task.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, wait_status = os.waitpid(child, 0)
    if os.WIFSIGNALED(wait_status):
        code = 128 + os.WTERMSIG(wait_status)
    else:
        code = os.WEXITSTATUS(wait_status)
    for stream in (1, 2):  # the task's output, before its status names it final
        with contextlib.suppress(OSError):  # a pipe or a terminal: nothing to make durable
            os.fsync(stream)
    write_status(status, code)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the task named by the one argument (a JSON spec, or ``-`` for stdin)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--status":
        return _supervise(args[1], args[2:])
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if len(args) != 1:
        print("usage: python -m talicada.workers.tasks <json-spec> | -", file=sys.stderr)
        return EXIT_USAGE
    raw = sys.stdin.buffer.read() if args[0] == "-" else args[0].encode()
    try:
        spec = msgspec.json.decode(raw, type=TaskSpec)
    except msgspec.DecodeError as exc:
        print(f"tasks: invalid task spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if spec.kind == "checksum" and not spec.paths:
        print("tasks: invalid task spec: checksum needs at least one path", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(spec)
    except _TaskError as exc:
        print(f"tasks: {spec.kind} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
