"""The configuration examples the README points at load as they are."""

from __future__ import annotations

from pathlib import Path

from talicada.settings import load

ROOT = Path(__file__).resolve().parents[1]


def test_the_stand_in_platform_example_loads_with_every_back_end_configured() -> None:
    settings = load(ROOT / "examples" / "canfar-standins.toml", environ={})
    (platform,) = settings.platforms
    assert (platform.launcher, platform.stager, platform.image_cache) == (
        "skaha",
        "srcnet",
        "harbor",
    )
    assert platform.skaha is not None
    assert platform.skaha.token_file is not None
    assert (ROOT / platform.skaha.token_file).read_text().strip() == "standin-token"
