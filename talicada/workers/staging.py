"""Fetch one data item into a storage directory: streamed, verified, atomic.

The local prepare-data worker calls :func:`stage` for every ``simple-data-resource``
of a session. Sources are ``http(s)://`` (downloaded with aiohttp) and ``file://``
(copied, but only from configured roots). Bytes go to a hidden temporary file
next to the target while SHA-256 (and the expected checksum's algorithm) is
computed on the way, and only a complete, verified file is renamed into place,
so a reader never sees a partial item and a failure leaves nothing behind.
The temporary file lives in a ``scratch`` directory outside the data directory
(on the same file system, for the atomic rename), so even the partial of a
worker killed mid-download is never among the files a task is shown; such
leftovers are removed by :func:`clear_stale` before the item is staged again.
Staging the same item again replaces the file, as a redelivered event must.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import stat
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from talicada.security.fence import Fence, FencedResolver, FenceRefused, check_url, listed

__all__ = ["StagedFile", "StagingError", "StagingLimits", "clear_stale", "stage"]

MiB = 1024 * 1024
GiB = 1024 * MiB
_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 10
_HEX = {"sha256": 64, "md5": 32, "adler32": 8}

Progress = Callable[[int, int | None], Awaitable[None]]
#: Suffix of the temporary file a download is written to until it is verified.
PARTIAL = ".partial"


class StagingError(Exception):
    """A data item could not be staged; the message says why in one sentence."""


@dataclass(frozen=True)
class StagingLimits:
    """What staging may fetch, from where, and how.

    ``timeout_s`` bounds connecting, waiting for the response and every silence
    between body chunks, not the whole transfer, whose length grows with the size.
    """

    max_bytes: int = 10 * GiB
    allowed_schemes: frozenset[str] = frozenset({"http", "https", "file"})
    #: ``data_hosts`` entries: ``host:port``, or ``host`` for the scheme's default port.
    allowed_hosts: frozenset[str] | None = None
    file_roots: tuple[Path, ...] = ()
    #: Internal addresses refused at fetch time (None: no fence; tests of staging alone).
    fence: Fence | None = None
    timeout_s: float = 300.0
    chunk: int = MiB
    progress_every: int = 8 * MiB

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.chunk <= 0 or self.progress_every <= 0:
            raise ValueError("max_bytes must be >= 0, chunk and progress_every > 0")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if self.allowed_hosts is not None:
            # Host names compare case-insensitively; URLs are lower-cased before the check.
            hosts = frozenset(host.lower() for host in self.allowed_hosts)
            object.__setattr__(self, "allowed_hosts", hosts)


@dataclass(frozen=True)
class StagedFile:
    """A staged, verified file."""

    path: Path
    size: int
    sha256: str


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


class _Adler32:
    """zlib.adler32 behind the hashlib interface."""

    def __init__(self) -> None:
        self.value = 1  # adler32's defined starting value

    def update(self, data: bytes, /) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


def _parse_checksum(text: str | None) -> tuple[str, str] | None:
    """``(algorithm, lower-case hex)`` from ``sha256:<hex>``, bare hex, ``md5:``, ``adler32:``."""
    if text is None or not text.strip():
        return None
    algorithm, sep, value = text.strip().rpartition(":")
    algorithm = algorithm.lower().replace("-", "") if sep else "sha256"
    value = value.lower()
    if algorithm not in _HEX:
        raise StagingError(
            f"Checksum algorithm {algorithm!r} is not supported; use sha256, md5 or adler32."
        )
    if algorithm == "adler32" and 0 < len(value) < 8:
        value = value.zfill(8)  # some catalogues drop adler32's leading zeros
    if not re.fullmatch(f"[0-9a-f]{{{_HEX[algorithm]}}}", value):
        raise StagingError(f"Checksum {text!r} is not {_HEX[algorithm]} hex digits of {algorithm}.")
    return algorithm, value


def _safe_name(segment: str) -> str | None:
    """A plain file name from ``segment``, or None when nothing usable is left."""
    cleaned = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch).startswith("C") else ch for ch in segment
    ).strip()
    if cleaned in {"", ".", ".."}:
        return None
    encoded = cleaned.encode("utf-8")
    if len(encoded) > 200:  # room for the temporary name's additions within NAME_MAX
        cleaned = encoded[:200].decode("utf-8", "ignore")
    return cleaned


def _display(url: str) -> str:
    """The URL without credentials, for messages that reach clients and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _Sink:
    """The temporary file being written, with its running hashes and size checks."""

    def __init__(
        self, partial: Path, size_cap: int, cap_reason: str, algorithm: str | None
    ) -> None:
        self.partial = partial
        self.size_cap = size_cap
        self.cap_reason = cap_reason
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.extra: _Hash | None = None
        if algorithm == "md5":
            self.extra = hashlib.md5(usedforsecurity=False)
        elif algorithm == "adler32":
            self.extra = _Adler32()
        self.stream: IO[bytes] | None = None

    def open(self) -> None:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.stream = self.partial.open("xb")

    def write(self, data: bytes) -> None:
        # Runs in a worker thread: file writes and hashing must not stall the event loop.
        self.size += len(data)
        if self.size > self.size_cap:
            raise StagingError(self.cap_reason)
        assert self.stream is not None
        self.stream.write(data)
        self.sha256.update(data)
        if self.extra is not None:
            self.extra.update(data)

    def commit(self, final: Path) -> None:
        assert self.stream is not None
        self.stream.flush()
        os.fsync(self.stream.fileno())  # durable before anyone is told it is staged
        self.stream.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.partial, final)  # atomic, and overwrites an earlier staging
        fsync_directory(final.parent)  # the new name, too, survives a power cut

    def discard(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.partial.unlink(missing_ok=True)


async def stage(
    location: str,
    target_dir: Path,
    *,
    name: str,
    expected_size: int | None,
    expected_checksum: str | None,
    limits: StagingLimits,
    progress: Progress | None = None,
    session: aiohttp.ClientSession | None = None,
    scratch: Path | None = None,
) -> StagedFile:
    """Fetch ``location`` into ``target_dir`` and verify it; raises :class:`StagingError`.

    The file is named after the URL's last path segment, or ``name`` when that is
    unusable. ``progress(done, total)`` is awaited at most every
    ``limits.progress_every`` bytes and once at the end. A given ``session`` is
    used as is and left open. The bytes are written in ``scratch`` (default:
    ``target_dir`` itself, as a hidden file) until verified; pass a directory
    outside what readers list so that not even a crash can show them a partial.
    """
    shown = _display(location)
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme not in limits.allowed_schemes:
        allowed = ", ".join(sorted(limits.allowed_schemes)) or "none"
        raise StagingError(f"Scheme {scheme or '(none)'!r} of {shown} is not allowed ({allowed}).")
    checksum = _parse_checksum(expected_checksum)
    filename = _safe_name(unquote(parts.path.rpartition("/")[2])) or _safe_name(name) or "data"
    final = target_dir / filename
    cap, reason = limits.max_bytes, f"{shown} is larger than the limit of {limits.max_bytes} bytes."
    if expected_size is not None and expected_size < cap:
        cap, reason = expected_size, f"{shown} has more than the expected {expected_size} bytes."
    sink = _Sink(
        (scratch or target_dir) / f".{filename}.{secrets.token_hex(4)}{PARTIAL}",
        cap,
        reason,
        None if checksum is None else checksum[0],
    )
    try:
        if scheme == "file":
            await _copy(location, sink, expected_size, limits, progress)
        else:
            await _download(location, sink, expected_size, limits, progress, session)
        if expected_size is not None and sink.size != expected_size:
            raise StagingError(f"{shown} has {sink.size} bytes, not the expected {expected_size}.")
        if checksum is not None:
            algorithm, wanted = checksum
            digest = sink.sha256 if algorithm == "sha256" else sink.extra
            assert digest is not None
            if digest.hexdigest() != wanted:
                raise StagingError(
                    f"{shown} has {algorithm} {digest.hexdigest()}, not the expected {wanted}."
                )
        await asyncio.to_thread(sink.commit, final)
    except OSError as exc:
        sink.discard()
        raise StagingError(f"Cannot write {final}: {exc.strerror or exc}.") from exc
    except BaseException:
        # Also on cancellation: blocking but brief, and it must not be skipped.
        sink.discard()
        raise
    return StagedFile(path=final, size=sink.size, sha256=sink.sha256.hexdigest())


def fsync_directory(directory: Path) -> None:
    """Make the names just created or renamed in ``directory`` durable (blocking)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def clear_stale(scratch: Path, older_than: float) -> list[Path]:
    """Remove the partials in ``scratch`` nobody wrote to for ``older_than`` seconds.

    A live download writes at least once per stall timeout, so an older partial
    belongs to a worker that died mid-transfer (blocking: call it in a thread).
    Returns what was removed.
    """
    removed = []
    horizon = time.time() - older_than
    for path in scratch.glob(f"*{PARTIAL}") if scratch.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < horizon:
                path.unlink()
                removed.append(path)
    return removed


async def _pump(
    chunks: Callable[[], Awaitable[bytes]],
    sink: _Sink,
    total: int | None,
    limits: StagingLimits,
    progress: Progress | None,
) -> None:
    """Move chunks into ``sink`` until an empty one, reporting progress on the way."""
    await asyncio.to_thread(sink.open)
    reported = 0
    while data := await chunks():
        await asyncio.to_thread(sink.write, data)
        if progress is not None and sink.size - reported >= limits.progress_every:
            reported = sink.size
            await progress(sink.size, total)
    if progress is not None:
        await progress(sink.size, total)


def _check_total(shown: str, total: int, expected: int | None, limits: StagingLimits) -> None:
    """Refuse before transferring anything when the announced size is already wrong."""
    if total > limits.max_bytes:
        raise StagingError(f"{shown} has {total} bytes, over the limit of {limits.max_bytes}.")
    if expected is not None and total != expected:
        raise StagingError(f"{shown} has {total} bytes, not the expected {expected}.")


async def _download(
    url: str,
    sink: _Sink,
    expected_size: int | None,
    limits: StagingLimits,
    progress: Progress | None,
    session: aiohttp.ClientSession | None,
) -> None:
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=limits.timeout_s, sock_read=limits.timeout_s
    )
    own = session is None or limits.fence is not None
    if own:
        # With a fence, connect only through a resolver that checked the addresses.
        connector = (
            aiohttp.TCPConnector(resolver=FencedResolver(limits.fence))
            if limits.fence is not None
            else None
        )
        client = aiohttp.ClientSession(timeout=timeout, connector=connector)
    else:
        assert session is not None
        client = session
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            _check_host(url, limits)
            if limits.fence is not None:
                check_url(limits.fence, url)
            # Redirects are followed by hand so every hop passes the scheme and host checks;
            # identity encoding keeps Content-Length and the bytes those of the file itself.
            async with client.get(
                url,
                allow_redirects=False,
                timeout=timeout,
                headers={"Accept-Encoding": "identity"},
            ) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    if urlsplit(url).scheme.lower() not in {"http", "https"} & set(
                        limits.allowed_schemes
                    ):
                        raise StagingError(f"Redirect to {_display(url)} is not allowed.")
                    continue
                if not 200 <= response.status < 300:
                    status = f"{response.status} {response.reason or ''}".rstrip()
                    raise StagingError(
                        f"Download of {_display(url)} failed: the server answered {status}."
                    )
                total = response.content_length
                if total is not None:
                    _check_total(_display(url), total, expected_size, limits)
                total = expected_size if expected_size is not None else total
                await _pump(
                    lambda: response.content.read(limits.chunk), sink, total, limits, progress
                )
                return
        raise StagingError(
            f"Download of {_display(url)} redirected more than {_MAX_REDIRECTS} times."
        )
    except FenceRefused as exc:
        raise StagingError(f"Download of {_display(url)} refused: {exc}.") from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, FenceRefused):
            raise StagingError(f"Download of {_display(url)} refused: {exc.os_error}.") from exc
        raise StagingError(
            f"Download of {_display(url)} failed: {exc or type(exc).__name__}."
        ) from exc
    except TimeoutError as exc:
        raise StagingError(
            f"Download of {_display(url)} stalled for more than {limits.timeout_s} s."
        ) from exc
    except aiohttp.ClientError as exc:
        raise StagingError(
            f"Download of {_display(url)} failed: {exc or type(exc).__name__}."
        ) from exc
    finally:
        if own:
            await client.close()


def _check_host(url: str, limits: StagingLimits) -> None:
    host = (urlsplit(url).hostname or "").lower()
    if limits.allowed_hosts is not None and not listed(limits.allowed_hosts, url):
        allowed = ", ".join(sorted(limits.allowed_hosts)) or "none"
        raise StagingError(f"Host {host!r} of {_display(url)} is not allowed ({allowed}).")


def _open_source(url: str, limits: StagingLimits) -> IO[bytes]:
    """Open a ``file://`` source after the root and file-type checks (blocking)."""
    parts = urlsplit(url)
    if parts.netloc not in {"", "localhost"}:
        raise StagingError(f"{url} names another host; file:// must be local.")
    try:
        # Resolve first: a link inside a root must not lead outside it.
        real = Path(unquote(parts.path)).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise StagingError(f"{url} cannot be read: {getattr(exc, 'strerror', exc)}.") from exc
    roots = [root.resolve() for root in limits.file_roots]
    if not any(real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "none configured"
        raise StagingError(f"{url} is outside the allowed file roots ({allowed}).")
    try:
        # O_NONBLOCK so a FIFO cannot hang the open; O_NOFOLLOW against a late swap.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StagingError(f"{url} cannot be read: {exc.strerror}.") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StagingError(f"{url} is not a regular file.")
    return open(fd, "rb")  # the caller closes it


async def _copy(
    url: str,
    sink: _Sink,
    expected_size: int | None,
    limits: StagingLimits,
    progress: Progress | None,
) -> None:
    source = await asyncio.to_thread(_open_source, url, limits)

    async def chunk() -> bytes:
        try:
            return await asyncio.to_thread(source.read, limits.chunk)
        except OSError as exc:
            raise StagingError(f"{url} cannot be read: {exc.strerror or exc}.") from exc

    try:
        total = os.fstat(source.fileno()).st_size
        _check_total(url, total, expected_size, limits)
        await _pump(chunk, sink, total, limits, progress)
    finally:
        source.close()
