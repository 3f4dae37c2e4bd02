"""Our Harbor client: is an image there, and if not, pull it through a proxy-cache project.

Facts this rests on (Harbor v2.0 API and the registry API it fronts):

* ``GET /api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}``
  answers the artifact (``digest``, ``size``, ``tags: [{"name"}]`` or null,
  ``media_type``), 404 when absent. A repository name holding slashes is
  URL-encoded *twice* (``a/b`` → ``a%252Fb``): Harbor decodes the path once
  before routing, so a single encoding would split the name into segments.
* In a proxy-cache project, a registry manifest GET
  ``/v2/{proxy_project}/{upstream repository}/manifests/{reference}`` (what
  ``docker pull`` sends) makes Harbor fetch the image from upstream, answer it,
  and cache it; the artifact is listed a little later, once Harbor has stored
  it, which is why :meth:`HarborClient.ensure` polls. The digest is in the
  ``Docker-Content-Digest`` header (else it is the SHA-256 of the body).
* Docker Hub single-level names live under ``library/`` upstream.
* The API takes basic auth (a robot account ``robot$name`` and its secret);
  the registry may instead challenge with ``WWW-Authenticate: Bearer realm=...``,
  where we fetch a pull token from the realm with the same basic credentials.

Why not ``harborapi`` (the async client on PyPI): it covers the REST API only,
not the registry manifest GET that triggers a proxy-cache pull, which is half
of what we need; it brings httpx, pydantic, backoff and loguru next to our
aiohttp/msgspec stack and its own retry policy beside :class:`Retrying`; and
the version we read encoded the repository name once, not twice. Three calls
did not justify it.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from talicada.services._http import Retrying, ServiceError, Sleep, TokenFile

SERVICE = "harbor"

#: What we accept for a manifest, multi-platform indexes first (what a pull asks for).
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image location taken apart: ``registry/project/repository`` and a tag or digest."""

    registry: str
    project: str
    repository: str
    reference: str

    @property
    def is_digest(self) -> bool:
        """True when the reference is a digest rather than a tag."""
        return ":" in self.reference

    @property
    def path(self) -> str:
        """``project/repository``: the name the registry knows the image by."""
        return f"{self.project}/{self.repository}"


def parse_image(location: str) -> ImageRef:
    """``images.canfar.net/skaha/base-notebook:latest`` (or ``...@sha256:<hex>``) taken apart.

    The first component must be a registry host (it holds a dot or a port, or
    is ``localhost``): Harbor is asked by name, never a default registry. The
    tag defaults to ``latest``; a digest wins over a tag given beside it.
    Repositories may be nested (``project/a/b``). Raises ValueError otherwise.
    """
    rest, _, digest = location.strip().partition("@")
    host, _, path = rest.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"{location!r}: an image location starts with a registry host")
    last = path.rsplit("/", 1)[-1]
    tag = "latest"
    if ":" in last:
        path, _, tag = path.rpartition(":")
    parts = path.split("/")
    if host in DOCKER_HUB and len(parts) == 1:
        parts.insert(0, "library")  # Docker Hub's official images
    if len(parts) < 2 or not all(_COMPONENT.match(p) for p in parts):
        raise ValueError(f"{location!r}: expected registry/project/repository[:tag|@digest]")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"{location!r}: {digest!r} is not a digest")
    if not digest and not _TAG.match(tag):
        raise ValueError(f"{location!r}: {tag!r} is not a tag")
    return ImageRef(host, parts[0], "/".join(parts[1:]), digest or tag)


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    """An artifact Harbor lists: where, its digest and size, its tags."""

    project: str
    repository: str
    digest: str
    size: int = 0
    tags: tuple[str, ...] = ()
    media_type: str | None = None
    #: True when :meth:`HarborClient.ensure` had to pull it through the proxy
    #: (it was not cached at the site): the history tells the two apart.
    pulled: bool = False


class HarborError(Exception):
    """An image cannot be had from Harbor as asked."""


class ImageNotFound(HarborError):
    """Neither Harbor nor (through the proxy cache) upstream has the image."""

    def __init__(self, image: str, reason: str) -> None:
        self.image = image
        self.reason = reason
        super().__init__(f"image {image} not found: {reason}")


class DigestMismatch(HarborError):
    """The image has another digest than the one asked for."""

    def __init__(self, image: str, expected: str, actual: str) -> None:
        self.image = image
        self.expected = expected
        self.actual = actual
        super().__init__(f"image {image} has digest {actual}, expected {expected}")


class _Tag(msgspec.Struct):
    name: str


class _WireArtifact(msgspec.Struct, kw_only=True):
    digest: str
    size: int = 0
    tags: list[_Tag] | None = None
    media_type: str | None = None


class HarborClient:
    """Harbor's artifact API and the registry manifest endpoint of a proxy-cache project.

    ``url`` is Harbor's root (``https://harbor.example``). With ``username``,
    ``secret`` is the file holding its password (a robot account's secret):
    basic auth. Without one, ``secret`` holds a bearer token. ``attempts``,
    ``base`` and ``sleep`` tune the retries; ``sleep`` also paces :meth:`ensure`.
    """

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        username: str | None = None,
        secret: TokenFile | None = None,
        attempts: int = 4,
        base: float = 0.5,
        sleep: Sleep | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.secret = secret
        self._http = Retrying(SERVICE, http, attempts=attempts, base=base)
        if sleep is not None:
            self._http.sleep = sleep

    def _auth(self) -> dict[str, str]:
        if self.secret is None:
            return {}
        if self.username is None:
            return self.secret.headers()
        pair = f"{self.username}:{self.secret.token()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    async def artifact(self, project: str, repository: str, reference: str) -> Artifact | None:
        """The artifact ``project/repository@reference`` as Harbor lists it; None when absent."""
        name = quote(quote(repository, safe=""), safe="")  # twice: see the module docstring
        url = (
            f"{self.url}/api/v2.0/projects/{quote(project, safe='')}"
            f"/repositories/{name}/artifacts/{quote(reference, safe=':')}"
        )
        headers = {**self._auth(), "Accept": "application/json"}
        status, body, _ = await self._http.request(
            "GET", url, headers=headers, ok=frozenset({200, 404})
        )
        if status == 404:
            return None
        try:
            wire = msgspec.json.decode(body, type=_WireArtifact)
        except msgspec.DecodeError as error:
            raise ServiceError(SERVICE, status, f"unexpected artifact: {error}") from error
        return Artifact(
            project=project,
            repository=repository,
            digest=wire.digest,
            size=wire.size,
            tags=tuple(tag.name for tag in wire.tags or ()),
            media_type=wire.media_type,
        )

    async def pull_through(self, proxy_project: str, repository: str, reference: str) -> str:
        """Make the proxy-cache project fetch ``repository:reference``; the manifest digest.

        ``repository`` is the upstream name (``skaha/base-notebook``). Raises
        :class:`ImageNotFound` when upstream has no such manifest.
        """
        url = f"{self.url}/v2/{proxy_project}/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES), **self._auth()}
        ok = frozenset({200, 401, 404})
        status, body, answer = await self._http.request("GET", url, headers=headers, ok=ok)
        if status == 401:
            scope = f"repository:{proxy_project}/{repository}:pull"
            token = await self._registry_token(answer.get("WWW-Authenticate", ""), scope)
            headers["Authorization"] = f"Bearer {token}"
            status, body, answer = await self._http.request("GET", url, headers=headers, ok=ok)
        image = f"{proxy_project}/{repository}:{reference}"
        if status == 404:
            raise ImageNotFound(image, f"upstream has no manifest ({_reason(body)})")
        if status == 401:
            raise ServiceError(SERVICE, 401, f"registry refused the pull token: {_reason(body)}")
        return answer.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    async def _registry_token(self, challenge: str, scope: str) -> str:
        """A pull token from the realm of a ``Bearer`` challenge, asked with our credentials."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not challenge.startswith("Bearer ") or "realm" not in fields:
            raise ServiceError(SERVICE, 401, f"registry refused us: {challenge or 'no challenge'}")
        params = {"scope": scope, **({"service": fields["service"]} if "service" in fields else {})}
        _, body, _ = await self._http.request(
            "GET", fields["realm"], headers=self._auth(), params=params
        )
        try:
            granted: dict[str, Any] = msgspec.json.decode(body)
            return str(granted.get("token") or granted["access_token"])
        except (msgspec.DecodeError, KeyError, TypeError) as error:
            raise ServiceError(SERVICE, 200, f"unexpected token answer: {error!r}") from error

    async def ensure(
        self,
        image_location: str,
        *,
        proxy_project: str | None,
        expected_digest: str | None = None,
        wait: float = 120.0,
        poll: float = 2.0,
    ) -> Artifact:
        """The image as Harbor lists it, pulled through ``proxy_project`` when absent.

        With a proxy project, the image location names the upstream image and
        its cached copy is ``proxy_project/<project>/<repository>``; without
        one, the location names a project of this Harbor and nothing is
        pulled. Waits up to ``wait`` seconds (polling every ``poll``) for a
        pulled image to be listed. The digest must be ``expected_digest``, or
        the location's own digest when it names one.

        Raises :class:`ImageNotFound` or :class:`DigestMismatch` (naming both).
        """
        ref = parse_image(image_location)
        if proxy_project is None:
            project, repository = ref.project, ref.repository
        else:
            project, repository = proxy_project, ref.path
        expected = expected_digest or (ref.reference if ref.is_digest else None)
        found = await self.artifact(project, repository, ref.reference)
        if found is None:
            if proxy_project is None:
                raise ImageNotFound(image_location, f"{project}/{repository} is not in Harbor")
            pulled = await self.pull_through(proxy_project, ref.path, ref.reference)
            if expected is not None and pulled != expected:
                raise DigestMismatch(image_location, expected, pulled)
            found = await self._listed(project, repository, pulled, wait, poll)
            if found is None:
                reason = f"pulled through {proxy_project} but not listed after {wait:g} s"
                raise ImageNotFound(image_location, reason)
            found = msgspec.structs.replace(found, pulled=True)
        if expected is not None and found.digest != expected:
            raise DigestMismatch(image_location, expected, found.digest)
        return found

    async def _listed(
        self, project: str, repository: str, digest: str, wait: float, poll: float
    ) -> Artifact | None:
        # Counted polls rather than a clock, so a test's instant sleep still ends.
        for _ in range(max(1, math.ceil(wait / poll))):
            await self._http.sleep(poll)
            found = await self.artifact(project, repository, digest)
            if found is not None:
                return found
        return None


def _reason(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()[:300]
