"""Platforms backed by the stand-ins, for tests that run sessions on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from talicada.settings import PlatformSettings

#: The credentials the stand-ins expect by default, and the platform's storage area.
SRCNET_TOKEN = "srcnet-token"
HARBOR_USER = "robot$talicada"
HARBOR_SECRET = "robot-secret"
STORAGE_AREA = "sa-canfar"

#: Preparation estimates small enough that sessions start within seconds.
QUICK = {
    "image": {"docker-container": 0.5, "jupyter-notebook": 0.5},
    "data": {"skao-data-resource": 0.5, "simple-data-resource": 0.5},
    "storage": 0.2,
    "launch": 0.5,
    "release": 0.5,
}


def canfar(
    tmp_path: Path,
    *,
    skaha: str,
    token: str,
    srcnet: str | None = None,
    harbor: str | None = None,
    skaha_options: dict[str, Any] | None = None,
    **options: Any,
) -> PlatformSettings:
    """A platform launching on Skaha at ``skaha`` (staging through SRCNet and caching
    through Harbor when their URLs are given, locally and not at all otherwise)."""
    token_file = tmp_path / "skaha.token"
    token_file.write_text(token)
    settings: dict[str, Any] = {
        "name": "canfar",
        "launcher": "skaha",
        "executables": ["docker-container", "jupyter-notebook"],
        "data": ["skao-data-resource", "simple-data-resource"],
        "cores": 32,
        "memory": 128,
        "preparation": QUICK,
        "skaha": {
            "url": skaha,
            "token_file": str(token_file),
            "poll_interval": 0.2,
            "pending_margin": 1.0,
            **(skaha_options or {}),
        },
        **options,
    }
    if srcnet is not None:
        srcnet_token = tmp_path / "srcnet.token"
        srcnet_token.write_text(SRCNET_TOKEN)
        settings["stager"] = "srcnet"
        settings["srcnet"] = {
            "url": srcnet,
            "storage_area": STORAGE_AREA,
            "token_file": str(srcnet_token),
            "poll_interval": 0.2,
        }
    if harbor is not None:
        harbor_secret = tmp_path / "harbor.secret"
        harbor_secret.write_text(HARBOR_SECRET)
        settings["image_cache"] = "harbor"
        settings["harbor"] = {
            "url": harbor,
            "proxy_project": "proxy",
            "username": HARBOR_USER,
            "secret_file": str(harbor_secret),
            "poll": 0.1,
        }
    return msgspec.convert(settings, PlatformSettings)
