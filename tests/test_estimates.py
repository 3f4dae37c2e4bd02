"""Estimates from history, a fitted model, or the defaults (issue 13). Pure code."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from talicada.broker import estimates, history
from talicada.broker.estimates import Summary, fit_rate, quantile, quote
from talicada.broker.history import Sample
from talicada.broker.store.samples import MemorySamples
from talicada.schema.validation import ValidRequest, parse_request
from talicada.settings import EstimateSettings, PlatformSettings, SrcnetSettings

NOW = datetime(2030, 1, 1, tzinfo=UTC)
GB = 10**9
SITE = PlatformSettings(
    name="site",
    stager="srcnet",
    srcnet=SrcnetSettings(url="http://127.0.0.1:9/srcnet", storage_area="area"),
    executables=["ping", "docker-container"],
    data=["skao-data-resource", "simple-data-resource"],
)
SETTINGS = EstimateSettings(min_samples=5, quantile=0.9)


def request(*data: dict[str, Any], image: str | None = None) -> ValidRequest:
    executable: dict[str, Any] = {"kind": "urn:talicada:kinds:executable:ping-1.0"}
    if image:
        executable = {
            "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
            "image": {"locations": [image]},
        }
    return parse_request({"executable": executable, "data": list(data)}, now=NOW)


def skao(name: str, size: int, replica: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"namespace": "ns", "objectname": name, "datasize": size}
    if replica:
        block["replicas"] = [{"rsename": replica}]
    return {
        "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/skao-data-resource-1.0",
        "skao": block,
    }


def staging(seconds: float, size: int, source: str | None, at: int = 0) -> Sample:
    return Sample(
        step="stage",
        platform="site",
        seconds=seconds,
        finished=at,
        kind="skao-data-resource",
        size=size,
        source=source,
    )


async def summaries_after(samples: list[Sample], keys: list[str]) -> dict[str, Summary]:
    store = MemorySamples()
    await store.append(samples, SETTINGS.window)
    windows = await store.windows(keys)
    return {key: Summary.of(window, SETTINGS.quantile) for key, window in windows.items()}


# -- statistics ---------------------------------------------------------------------


def test_quantiles_interpolate_between_order_statistics() -> None:
    assert quantile([3, 1, 2], 0.5) == 2
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10, 20], 0.9) == pytest.approx(19)
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_the_size_rate_fit_recovers_a_line_and_ignores_stragglers() -> None:
    rng = random.Random(7)
    points = [(size, 20 + size / 50e6) for size in (rng.randint(1, 40) * 10**8 for _ in range(30))]
    points += [(2 * GB, 5000.0), (3 * GB, 9000.0)]  # two stuck transfers
    fit = fit_rate(points, 0.9)
    assert fit is not None
    assert fit.per_byte == pytest.approx(1 / 50e6, rel=0.02)
    assert fit.overhead == pytest.approx(20, abs=2)
    assert fit.spread >= 1.0


def test_no_rate_can_be_fitted_from_one_size() -> None:
    assert fit_rate([(GB, 10.0), (GB, 12.0)], 0.9) is None


# -- the ladder: history, model, default -----------------------------------------------


async def test_without_history_the_configured_defaults_are_quoted() -> None:
    valid = request(skao("x", GB))
    quoted = quote(SITE, valid, {}, SETTINGS)
    defaults = SITE.preparation
    (data,) = quoted.data
    assert data.basis == "default"
    assert data.samples == 0
    assert data.expected == data.pessimistic
    assert data.expected == pytest.approx(
        defaults.data["skao-data-resource"] + GB / defaults.staging_rate
    )
    assert quoted.planned == timedelta(seconds=defaults.storage + data.expected + defaults.launch)


async def test_history_of_similar_sizes_gives_median_and_high_quantile() -> None:
    durations = [100.0, 110.0, 90.0, 105.0, 95.0, 300.0]  # one straggler
    samples = [staging(s, GB, "SLOW") for s in durations]
    valid = request(skao("new", GB, replica="SLOW"))
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert data.basis == "history"
    assert data.samples == 6
    assert data.expected == pytest.approx(102.5)  # the median shrugs off the straggler
    assert data.pessimistic == pytest.approx(quantile(durations, 0.9))


async def test_history_is_moved_to_the_size_asked_for_along_the_fitted_rate() -> None:
    # 1.0-1.9 GB stagings at 10 s + 1 s per 10 MB, and a request for 1.9 GB
    samples = [staging(10 + size / 1e7, size, "SITE") for size in range(GB, 2 * GB, GB // 10)]
    valid = request(skao("new", int(1.9 * GB), replica="SITE"))
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert data.basis == "history"
    assert data.expected == pytest.approx(10 + 1.9 * GB / 1e7, rel=0.01)


async def test_an_unseen_size_falls_back_to_the_sites_size_rate_model() -> None:
    samples = [staging(10 + size / 1e7, size, "SITE") for size in (GB, 2 * GB, 3 * GB) * 3]
    valid = request(skao("huge", 50 * GB, replica="SITE"))
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert data.basis == "model"
    assert data.samples == 9
    assert data.expected == pytest.approx(10 + 50 * GB / 1e7, rel=0.01)


async def test_an_unknown_source_uses_the_history_of_every_source() -> None:
    samples = [staging(50.0, GB, f"SITE-{n % 2}") for n in range(6)]
    valid = request(skao("anywhere", GB))  # no replica named
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert (data.basis, data.samples, data.expected) == ("history", 6, 50.0)


async def test_data_of_unknown_size_gets_the_median_of_every_size_from_its_source() -> None:
    samples = [staging(float(n), n * GB, "SITE") for n in range(1, 8)]
    item = skao("unsized", GB, replica="SITE")
    del item["skao"]["datasize"]
    valid = request(item)
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert (data.basis, data.samples, data.expected) == ("history", 7, 4.0)


async def test_too_few_samples_are_not_trusted() -> None:
    samples = [staging(500.0, GB, "SITE") for _ in range(SETTINGS.min_samples - 1)]
    valid = request(skao("x", GB, replica="SITE"))
    summaries = await summaries_after(samples, estimates.keys_needed(SITE, valid))
    (data,) = quote(SITE, valid, summaries, SETTINGS).data
    assert data.basis == "default"


async def test_image_history_is_per_image_then_per_kind() -> None:
    kind = "docker-container"
    pulled = [
        Sample(step="image", platform="site", seconds=s, finished=0, kind=kind, image="big:1")
        for s in (200.0, 210.0, 190.0, 205.0, 195.0)
    ]
    other = [
        Sample(step="image", platform="site", seconds=s, finished=0, kind=kind, image="small:1")
        for s in (5.0,) * 10
    ]
    big, unseen = request(image="big:1"), request(image="never:1")
    keys = estimates.keys_needed(SITE, big) + estimates.keys_needed(SITE, unseen)
    summaries = await summaries_after(pulled + other, keys)
    assert quote(SITE, big, summaries, SETTINGS).image.expected == 200.0
    # An image never seen here gets the median of every image of its kind.
    fallback = quote(SITE, unseen, summaries, SETTINGS).image
    assert (fallback.basis, fallback.samples) == ("history", 15)


def test_the_critical_path_runs_image_beside_storage_and_staging() -> None:
    image = estimates.Estimate("image", 50, 60, "history", 9)
    storage = estimates.Estimate("storage", 5, 6, "history", 9)
    data = estimates.Estimate("stage", 20, 100, "model", 7)
    launch = estimates.Estimate("launch", 10, 12, "default", 0)
    quoted = estimates.Quote(image=image, storage=storage, data=(data,), launch=launch)
    assert quoted.planned == timedelta(seconds=max(60, 6 + 100) + 12)
    assert quoted.expected == timedelta(seconds=max(50, 5 + 20) + 10)
    assert quoted.weakest() is launch


async def test_windows_keep_only_the_newest_samples() -> None:
    store = MemorySamples()
    await store.append([staging(float(n), GB, "S") for n in range(10)], 4)
    key = history.stage_key("site", "skao-data-resource", "S", GB)
    window = (await store.windows([key]))[key]
    assert [s.seconds for s in window] == [9.0, 8.0, 7.0, 6.0]


def test_long_image_names_make_bounded_keys() -> None:
    key = history.image_key("site", "docker-container", "registry.example/" + "x" * 2000)
    assert len(key) < 100
