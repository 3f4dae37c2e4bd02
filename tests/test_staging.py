"""Staging data items from a real HTTP server on loopback and from local files."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from talicada.workers.staging import StagedFile, StagingError, StagingLimits, stage

BODY = bytes(range(256)) * 1200  # 300 KiB: several chunks at the small test chunk size
SHA = hashlib.sha256(BODY).hexdigest()
LIMITS = StagingLimits(timeout_s=0.5, chunk=64 * 1024, progress_every=100 * 1024)
SMALL = b"hello\n"
SMALL_ADLER = f"{zlib.adler32(SMALL):x}"  # 7 hex digits: a leading zero dropped


class Files:
    """The test server: what it serves and how."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {"cube.fits": BODY, "small.txt": SMALL}
        self.release = asyncio.Event()  # lets the stalling handler finish at teardown

    async def plain(self, request: web.Request) -> web.Response:
        body = self.bodies.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound
        return web.Response(body=body)

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        """The body without Content-Length, so only the bytes themselves tell the size."""
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(self.bodies[request.match_info["name"]])
        await response.write_eof()
        return response

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(BODY)
        await response.prepare(request)
        await response.write(BODY[:1000])
        await asyncio.wait_for(self.release.wait(), 10)
        return response

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=SMALL)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])


@pytest.fixture
def files() -> Files:
    return Files()


@pytest_asyncio.fixture
async def server(files: Files) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/data/{name}", files.plain)
    app.router.add_get("/chunked/{name}", files.chunked)
    app.router.add_get("/stall/{name}", files.stall)
    app.router.add_get("/redirect", files.redirect)
    app.router.add_get("/", files.index)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    yield test_server
    files.release.set()
    await test_server.close()


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def fetch(location: str, target: Path, **kwargs: Any) -> StagedFile:
    """``stage`` with test defaults; keyword arguments override them."""
    options: dict[str, Any] = {
        "name": "item",
        "expected_size": None,
        "expected_checksum": None,
        "limits": LIMITS,
    }
    options.update(kwargs)
    return await asyncio.wait_for(stage(location, target, **options), 5)


def left_in(target: Path) -> list[str]:
    return sorted(path.name for path in target.iterdir()) if target.exists() else []


async def test_http_download_verified_with_progress(server: TestServer, tmp_path: Path) -> None:
    reports: list[tuple[int, int | None]] = []

    async def progress(done: int, total: int | None) -> None:
        reports.append((done, total))

    staged = await fetch(
        url(server, "/data/cube.fits"),
        tmp_path / "store",
        expected_size=len(BODY),
        expected_checksum=f"sha256:{SHA}",
        progress=progress,
    )
    assert staged == StagedFile(path=tmp_path / "store" / "cube.fits", size=len(BODY), sha256=SHA)
    assert staged.path.read_bytes() == BODY
    assert left_in(tmp_path / "store") == ["cube.fits"]
    assert reports[-1] == (len(BODY), len(BODY))
    assert len(reports) >= 3
    steps = [b[0] - a[0] for a, b in itertools.pairwise(reports[:-1])]
    assert all(step >= LIMITS.progress_every for step in steps)


async def test_not_found_names_the_status(server: TestServer, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="404"):
        await fetch(url(server, "/data/nothing.fits"), tmp_path)
    assert left_in(tmp_path) == []


async def test_wrong_checksum_leaves_nothing(server: TestServer, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(StagingError) as caught:
        await fetch(url(server, "/data/cube.fits"), tmp_path, expected_checksum=wrong)
    assert wrong in str(caught.value)
    assert SHA in str(caught.value)
    assert left_in(tmp_path) == []  # neither the file nor a .partial


@pytest.mark.parametrize("route", ["/data/cube.fits", "/chunked/cube.fits"])
async def test_over_max_bytes_is_refused(server: TestServer, tmp_path: Path, route: str) -> None:
    limits = StagingLimits(timeout_s=0.5, chunk=64 * 1024, max_bytes=100_000)
    with pytest.raises(StagingError, match="limit of 100000"):
        await fetch(url(server, route), tmp_path, limits=limits)
    assert left_in(tmp_path) == []


@pytest.mark.parametrize("route", ["/data/cube.fits", "/chunked/cube.fits"])
@pytest.mark.parametrize("delta", [-1, +1])
async def test_size_mismatch(server: TestServer, tmp_path: Path, route: str, delta: int) -> None:
    with pytest.raises(StagingError, match="expected"):
        await fetch(url(server, route), tmp_path, expected_size=len(BODY) + delta)
    assert left_in(tmp_path) == []


@pytest.mark.parametrize(
    "checksum",
    [
        SHA,
        SHA.upper(),
        f"SHA256:{SHA}",
        f"md5:{hashlib.md5(BODY, usedforsecurity=False).hexdigest()}",
        f"adler32:{zlib.adler32(BODY):08x}",
        f"adler32:{SMALL_ADLER}",  # catalogues may drop leading zeros
    ],
)
async def test_checksum_algorithms(server: TestServer, tmp_path: Path, checksum: str) -> None:
    name = "small.txt" if checksum.endswith(SMALL_ADLER) else "cube.fits"
    staged = await fetch(url(server, f"/data/{name}"), tmp_path, expected_checksum=checksum)
    assert staged.path.name == name


@pytest.mark.parametrize(
    ("checksum", "match"),
    [
        (f"md5:{'0' * 32}", "md5"),
        (f"adler32:{'0' * 8}", "adler32"),
        ("crc32:deadbeef", "not supported"),
        ("sha256:xyz", "hex digits"),
    ],
)
async def test_bad_checksums(server: TestServer, tmp_path: Path, checksum: str, match: str) -> None:
    with pytest.raises(StagingError, match=match):
        await fetch(url(server, "/data/cube.fits"), tmp_path, expected_checksum=checksum)
    assert left_in(tmp_path) == []


async def test_restaging_overwrites(server: TestServer, files: Files, tmp_path: Path) -> None:
    first = await fetch(url(server, "/data/small.txt"), tmp_path)
    files.bodies["small.txt"] = b"changed\n"
    second = await fetch(url(server, "/data/small.txt"), tmp_path)
    assert first.path == second.path
    assert second.path.read_bytes() == b"changed\n"
    assert left_in(tmp_path) == ["small.txt"]


async def test_stalled_body_times_out(server: TestServer, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StagingError, match="stalled"):
        await fetch(url(server, "/stall/cube.fits"), tmp_path)
    assert time.monotonic() - started < 3
    assert left_in(tmp_path) == []


async def test_cancelling_removes_the_partial(server: TestServer, tmp_path: Path) -> None:
    limits = StagingLimits(timeout_s=5)
    task = asyncio.create_task(
        stage(
            url(server, "/stall/cube.fits"),
            tmp_path,
            name="x",
            expected_size=None,
            expected_checksum=None,
            limits=limits,
        )
    )
    for _ in range(200):
        if any(name.endswith(".partial") for name in left_in(tmp_path)):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("no partial file appeared")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert left_in(tmp_path) == []


async def test_given_session_is_used_and_left_open(server: TestServer, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        staged = await fetch(url(server, "/data/small.txt"), tmp_path, session=session)
        assert staged.size == len(SMALL)
        assert not session.closed


async def test_redirects_are_followed_and_checked(server: TestServer, tmp_path: Path) -> None:
    target = url(server, "/data/small.txt")
    staged = await fetch(url(server, f"/redirect?to={target}"), tmp_path)
    assert staged.path.read_bytes() == SMALL

    port = urlsplit(target).port
    only_loopback = StagingLimits(timeout_s=0.5, allowed_hosts=frozenset({f"127.0.0.1:{port}"}))
    assert (await fetch(target, tmp_path, limits=only_loopback)).size == len(SMALL)
    elsewhere = target.replace("127.0.0.1", "localhost")
    with pytest.raises(StagingError, match=r"'localhost'.*not allowed"):
        await fetch(url(server, f"/redirect?to={elsewhere}"), tmp_path, limits=only_loopback)


async def test_unusable_url_name_falls_back_to_item_name(
    server: TestServer, tmp_path: Path
) -> None:
    staged = await fetch(url(server, "/redirect?to=/data/small.txt"), tmp_path, name="my/item")
    assert staged.path == tmp_path / "redirect"  # the URL's own last segment wins
    staged = await fetch(url(server, "/"), tmp_path, name="my/item")
    assert staged.path == tmp_path / "my_item"
    staged = await fetch(url(server, "/"), tmp_path, name="..")
    assert staged.path == tmp_path / "data"


async def test_scheme_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match=r"'ftp'.*not allowed \(file, http, https\)"):
        await fetch("ftp://example.org/data.fits", tmp_path)


async def test_host_not_allowed(tmp_path: Path) -> None:
    limits = StagingLimits(allowed_hosts=frozenset({"Data.Example.org"}))
    with pytest.raises(StagingError, match=r"'evil.example.com'.*\(data.example.org\)"):
        await fetch("https://evil.example.com/x.fits", tmp_path, limits=limits)


# -- file:// -------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    allowed = tmp_path / "archive"
    allowed.mkdir()
    (allowed / "cube.fits").write_bytes(BODY)
    return allowed


def file_limits(root: Path) -> StagingLimits:
    return StagingLimits(chunk=64 * 1024, progress_every=100 * 1024, file_roots=(root,))


async def test_file_copy_inside_root(root: Path, tmp_path: Path) -> None:
    reports: list[tuple[int, int | None]] = []

    async def progress(done: int, total: int | None) -> None:
        reports.append((done, total))

    staged = await fetch(
        (root / "cube.fits").as_uri(),
        tmp_path / "store",
        expected_size=len(BODY),
        expected_checksum=SHA,
        limits=file_limits(root),
        progress=progress,
    )
    assert staged.sha256 == SHA
    assert staged.path.read_bytes() == BODY
    assert reports[-1] == (len(BODY), len(BODY))


async def test_file_outside_roots_refused(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.fits"
    other.write_bytes(b"x")
    with pytest.raises(StagingError, match="outside the allowed file roots"):
        await fetch(other.as_uri(), tmp_path / "store", limits=file_limits(root))
    with pytest.raises(StagingError, match="outside"):
        await fetch(f"file://{root}/../other.fits", tmp_path / "store", limits=file_limits(root))


async def test_file_refused_without_roots(root: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="none configured"):
        await fetch((root / "cube.fits").as_uri(), tmp_path / "store")


async def test_symlink_escaping_root_refused(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    (root / "innocent.fits").symlink_to(secret)
    with pytest.raises(StagingError, match="outside"):
        await fetch((root / "innocent.fits").as_uri(), tmp_path / "store", limits=file_limits(root))
    assert left_in(tmp_path / "store") == []


async def test_file_not_regular_refused(root: Path, tmp_path: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(StagingError, match="not a regular file"):
        await fetch((root / "dir").as_uri(), tmp_path / "store", limits=file_limits(root))
    with pytest.raises(StagingError, match="cannot be read"):
        await fetch((root / "gone").as_uri(), tmp_path / "store", limits=file_limits(root))


async def test_file_size_limit(root: Path, tmp_path: Path) -> None:
    limits = StagingLimits(max_bytes=10, file_roots=(root,))
    with pytest.raises(StagingError, match="over the limit of 10"):
        await fetch((root / "cube.fits").as_uri(), tmp_path / "store", limits=limits)
    assert left_in(tmp_path / "store") == []


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        StagingLimits(timeout_s=0)
    with pytest.raises(ValueError, match="chunk"):
        StagingLimits(chunk=0)
