"""A stand-in of Harbor: its artifact API, and the registry manifests of proxy-cache projects.

Tests configure a :class:`HarborStandIn`:

* ``add_artifact(project, repository, digest, size, tags)`` puts an artifact in
  Harbor now; ``add_upstream(repository, digest, size, tags)`` puts one in the
  upstream registry behind every project of ``proxy_projects``;
* a manifest GET ``/v2/{proxy}/{repository}/manifests/{reference}`` of an
  upstream image answers it and lists it in ``proxy`` ``cache_delay`` seconds
  later, as Harbor does once it has stored the pulled image;
* ``wrong_digest = True`` makes the artifact API serve another digest than the
  artifact's; ``username``/``secret`` are the basic credentials it insists on
  (None: any); ``token_auth = True`` makes the registry challenge with
  ``Bearer realm=.../service/token`` as Harbor's registry does.

They read ``calls`` (routes ``artifact``, ``manifest``, ``token``; ``path`` is
decoded once, as Harbor decodes it, so a double-encoded ``a%252Fb`` reads
``a%2Fb``) and ``accepts`` (the Accept header of each manifest GET). By hand:
``python -m tests.standins.harbor --port 8082`` serves a proxy project
``proxy`` with ``skaha/base-notebook:latest`` upstream, for ``robot$demo`` /
``demo-secret``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.standins._common import StandIn, serve_main

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
REGISTRY_TOKEN = "registry-pull-token"


@dataclass
class Image:
    """An artifact: digest, size, tags."""

    digest: str
    size: int
    tags: list[str] = field(default_factory=lambda: ["latest"])

    def matches(self, reference: str) -> bool:
        """Whether ``reference`` (a tag or a digest) names this artifact."""
        return reference == self.digest or reference in self.tags


@dataclass
class HarborStandIn(StandIn):
    """State and behaviour of the Harbor stand-in."""

    username: str | None = "robot$talicada"
    secret: str | None = "robot-secret"
    token_auth: bool = False
    proxy_projects: set[str] = field(default_factory=lambda: {"proxy"})
    cache_delay: float = 0.0
    wrong_digest: bool = False
    artifacts: dict[tuple[str, str], list[Image]] = field(default_factory=dict)
    upstream: dict[str, list[Image]] = field(default_factory=dict)
    pending: list[tuple[float, str, str, Image]] = field(default_factory=list)
    accepts: list[str] = field(default_factory=list)

    def add_artifact(
        self, project: str, repository: str, digest: str, size: int, tags: list[str] | None = None
    ) -> None:
        """Put an artifact in Harbor's ``project/repository`` now."""
        image = Image(digest, size, ["latest"] if tags is None else tags)
        self.artifacts.setdefault((project, repository), []).append(image)

    def add_upstream(
        self, repository: str, digest: str, size: int, tags: list[str] | None = None
    ) -> None:
        """Put an image in the registry the proxy-cache projects pull from."""
        self.upstream.setdefault(repository, []).append(
            Image(digest, size, ["latest"] if tags is None else tags)
        )

    def _find(self, project: str, repository: str, reference: str) -> Image | None:
        now = time.monotonic()
        for ready, pro, repo, image in [p for p in self.pending if p[0] <= now]:
            self.pending.remove((ready, pro, repo, image))
            self.artifacts.setdefault((pro, repo), []).append(image)
        for image in self.artifacts.get((project, repository), []):
            if image.matches(reference):
                return image
        return None

    def _basic_ok(self, request: web.Request) -> bool:
        if self.username is None:
            return True
        wanted = f"{self.username}:{self.secret}".encode()
        return request.headers.get("Authorization") == "Basic " + base64.b64encode(wanted).decode()

    async def artifact(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}``."""
        if not self._basic_ok(request):
            return _errors(401, "UNAUTHORIZED", "unauthorized")
        project = request.match_info["project"]
        # aiohttp decoded the path once, as Harbor's router does; the name is decoded again.
        repository = unquote(request.match_info["repository"])
        reference = request.match_info["reference"]
        image = self._find(project, repository, reference)
        if image is None:
            what = f"{project}/{repository}@{reference}"
            return _errors(404, "NOT_FOUND", f"artifact {what} not found")
        digest = image.digest
        if self.wrong_digest:
            digest = "sha256:" + hashlib.sha256(b"not " + digest.encode()).hexdigest()
        body: dict[str, Any] = {
            "digest": digest,
            "size": image.size,
            "tags": [{"name": tag} for tag in image.tags] or None,
            "media_type": MANIFEST_TYPE,
            "manifest_media_type": MANIFEST_TYPE,
            "repository_name": f"{project}/{repository}",
            "type": "IMAGE",
        }
        return web.json_response(body)

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/{name}/manifests/{reference}``: a proxy project pulls from upstream."""
        self.accepts.append(request.headers.get("Accept", ""))
        expected = f"Bearer {REGISTRY_TOKEN}" if self.token_auth else None
        given = request.headers.get("Authorization")
        if (expected is not None and given != expected) or (
            expected is None and not self._basic_ok(request)
        ):
            realm = str(request.url.with_path("/service/token").with_query(None))
            challenge = f'Bearer realm="{realm}",service="harbor-registry"'
            return _errors(401, "UNAUTHORIZED", "authentication required", challenge)
        project, _, repository = request.match_info["name"].partition("/")
        reference = request.match_info["reference"]
        image = self._find(project, repository, reference)
        if image is None and project in self.proxy_projects:
            image = next(
                (i for i in self.upstream.get(repository, []) if i.matches(reference)), None
            )
            if image is not None:
                ready = time.monotonic() + self.cache_delay
                self.pending.append((ready, project, repository, image))
        if image is None:
            return _errors(404, "MANIFEST_UNKNOWN", f"manifest unknown: {repository}:{reference}")
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {}, "layers": []}
        return web.json_response(
            manifest,
            content_type=MANIFEST_TYPE,
            headers={"Docker-Content-Digest": image.digest},
        )

    async def token(self, request: web.Request) -> web.StreamResponse:
        """``GET /service/token``: a pull token for the basic credentials."""
        if not self._basic_ok(request):
            return _errors(401, "UNAUTHORIZED", "bad credentials")
        return web.json_response({"token": REGISTRY_TOKEN, "expires_in": 1800})


def _errors(status: int, code: str, message: str, challenge: str | None = None) -> web.Response:
    """An answer shaped as Harbor's: ``{"errors": [{"code", "message"}]}``."""
    headers = {"WWW-Authenticate": challenge} if challenge else None
    body = json.dumps({"errors": [{"code": code, "message": message}]})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def build_app(standin: HarborStandIn) -> web.Application:
    """The aiohttp application serving ``standin``."""
    app = web.Application()
    app.router.add_get(
        "/api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}",
        standin.route("artifact", standin.artifact),
    )
    app.router.add_get(
        "/v2/{name:.+}/manifests/{reference}", standin.route("manifest", standin.manifest)
    )
    app.router.add_get("/service/token", standin.route("token", standin.token))
    return app


def _demo(args: argparse.Namespace) -> web.Application:
    standin = HarborStandIn(
        latency=args.latency, username="robot$demo", secret="demo-secret", cache_delay=3.0
    )
    standin.add_upstream("skaha/base-notebook", "sha256:" + "ab" * 32, 734_003_200)
    standin.add_artifact("skaha", "terminal", "sha256:" + "cd" * 32, 512_000_000, ["1.1"])
    return build_app(standin)


if __name__ == "__main__":
    serve_main("harbor", _demo)
